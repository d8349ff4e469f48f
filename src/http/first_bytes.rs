//! A deadline for a connection's first bytes.
//!
//! hyper-util's auto builder reads up to 24 bytes (the length of the HTTP/2
//! preface) to choose between HTTP/1 and HTTP/2 before either protocol's own
//! timeouts exist, and that read has no deadline: a client that connects and sends
//! nothing, or the first few bytes of the preface, held its connection (and a file
//! descriptor) for ever. This wrapper fails the connection's reads once the
//! deadline passes with fewer than those bytes received; after them, HTTP/1's
//! header read timeout takes over.
//!
//! It also reports when that choice has been made, so a graceful shutdown can
//! tell a connection whose request is on its way from one that is still deciding
//! (hyper-util cancels the latter outright).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

/// What the protocol choice reads: the HTTP/2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SNIFFED_BYTES: usize = H2_PREFACE.len();

pub struct FirstBytesDeadline<S> {
    inner: S,
    /// Running until [`SNIFFED_BYTES`] have arrived; `None` afterwards.
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
    /// Set to `true` once the bytes so far decide the protocol the way hyper-util's
    /// auto builder does: they stop matching the HTTP/2 preface, all of it has
    /// arrived, or the client closed. `None` once sent.
    chosen: Option<watch::Sender<bool>>,
}

impl<S> FirstBytesDeadline<S> {
    pub fn new(inner: S, within: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            received: 0,
            chosen: Some(watch::channel(false).0),
        }
    }

    /// Becomes `true` when the protocol has been chosen (see the field).
    pub fn protocol_chosen(&self) -> watch::Receiver<bool> {
        match &self.chosen {
            Some(sender) => sender.subscribe(),
            None => watch::channel(true).1,
        }
    }

    fn note_read(&mut self, read: &[u8]) {
        let Some(chosen) = &self.chosen else { return };
        let offset = self.received.min(SNIFFED_BYTES);
        let decided = read.is_empty()
            || offset + read.len() >= SNIFFED_BYTES
            || read.iter().zip(&H2_PREFACE[offset..]).any(|(a, b)| a != b);
        if decided {
            chosen.send_replace(true);
            self.chosen = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent too little too slowly to choose a protocol",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.note_read(&buf.filled()[before..]);
        }
        if this.deadline.is_some() {
            this.received += buf.filled().len() - before;
            if this.received >= SNIFFED_BYTES {
                this.deadline = None;
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SHORT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn silence_past_the_deadline_fails_the_read() {
        let (_client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytesDeadline::new(server, SHORT);
        let mut buf = [0u8; 8];
        let err = guarded
            .read(&mut buf)
            .await
            .expect_err("the read times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_few_bytes_do_not_stop_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytesDeadline::new(server, SHORT);
        client.write_all(b"PRI * HTTP/2.0").await.expect("write");
        let mut buf = [0u8; 24];
        let n = guarded
            .read(&mut buf)
            .await
            .expect("the first bytes arrive");
        assert_eq!(n, 14);
        let err = guarded
            .read(&mut buf)
            .await
            .expect_err("the rest never comes");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn after_the_sniffed_bytes_the_connection_may_idle() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytesDeadline::new(server, SHORT);
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: orgd\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = guarded.read(&mut buf).await.expect("the request arrives");
        assert!(n >= SNIFFED_BYTES, "one read takes the whole request: {n}");
        tokio::time::sleep(SHORT * 3).await;
        client.write_all(b"more").await.expect("write");
        let n = guarded.read(&mut buf).await.expect("no deadline any more");
        assert_eq!(&buf[..n], b"more");
    }

    #[tokio::test]
    async fn the_protocol_is_chosen_when_the_bytes_leave_the_preface_or_complete_it() {
        async fn chosen_after(writes: &[&[u8]]) -> bool {
            let (mut client, server) = tokio::io::duplex(64);
            let mut guarded = FirstBytesDeadline::new(server, Duration::from_secs(5));
            let chosen = guarded.protocol_chosen();
            let mut buf = [0u8; 64];
            for bytes in writes {
                client.write_all(bytes).await.expect("write");
                let n = guarded.read(&mut buf).await.expect("read");
                assert_eq!(n, bytes.len(), "one write, one read");
            }
            let seen = *chosen.borrow();
            seen
        }
        assert!(chosen_after(&[b"PATCH /v1/organizations/x HTTP/1.1\r\n"]).await);
        assert!(
            chosen_after(&[b"P", b"U"]).await,
            "PUT leaves the preface at its 2nd byte"
        );
        assert!(chosen_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await);
        assert!(
            !chosen_after(&[b"P"]).await,
            "still a prefix of the preface"
        );
        assert!(!chosen_after(&[b"PRI * HTTP/2.0\r\n"]).await);
    }

    #[tokio::test]
    async fn a_client_that_closes_has_chosen() {
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytesDeadline::new(server, SHORT);
        let chosen = guarded.protocol_chosen();
        drop(client);
        let mut buf = [0u8; 8];
        assert_eq!(guarded.read(&mut buf).await.expect("end of stream"), 0);
        assert!(*chosen.borrow());
    }
}
