//! A deadline for a connection's first bytes.
//!
//! hyper-util's auto builder reads up to 24 bytes (the length of the HTTP/2
//! preface) to choose between HTTP/1 and HTTP/2 before either protocol's own
//! timeouts exist, and that read has no deadline: a client that connects and sends
//! nothing, or the first few bytes of the preface, held its connection (and a file
//! descriptor) for ever. This wrapper fails the connection's reads once the
//! deadline passes with fewer than those bytes received; after them, HTTP/1's
//! header read timeout takes over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What the protocol choice reads: the HTTP/2 connection preface.
const SNIFFED_BYTES: usize = 24;

pub struct FirstBytesDeadline<S> {
    inner: S,
    /// Running until [`SNIFFED_BYTES`] have arrived; `None` afterwards.
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl<S> FirstBytesDeadline<S> {
    pub fn new(inner: S, within: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            received: 0,
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
}
