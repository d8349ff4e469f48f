//! The HTTP baseline: an axum server whose only handler answers a fixed body, on
//! the same runtime defaults as `orgd serve`. orgd's GET-by-id rate is compared to
//! this, so the ratio shows what orgd's own work (auth, store, JSON) costs on top of
//! the HTTP stack both share.
//!
//! Given a second argument, a file holding one of orgd's answers (its header lines,
//! a blank line, its body), it answers with those headers and that body instead.
//! The harness measures that as well: the bytes SPEC §6 and §1 make a GET by id
//! send (nine headers, a ~700-byte organization) cost the server and the load
//! generator on the same two cores even when nothing else is done, and the row
//! shows how much of orgd's distance to the bare answer is that.
//!
//! `cargo run --release --example bench_bare_axum -- 127.0.0.1:PORT [ANSWER_FILE]`

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let router = match args.next() {
        None => Router::new().route("/", get(|| async { "ok" })),
        Some(file) => {
            let (headers, body) = read_answer(&std::fs::read(&file)?)?;
            Router::new().route(
                "/",
                get(move || {
                    let answer = (headers.clone(), body.clone());
                    async move { answer.into_response() }
                }),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    // The harness waits for this line before driving load.
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await
}

/// Header lines (`name: value`), a blank line, the body.
fn read_answer(file: &[u8]) -> std::io::Result<(HeaderMap, Bytes)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = file
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| invalid("no blank line after the headers"))?;
    let mut headers = HeaderMap::new();
    for line in std::str::from_utf8(&file[..split])
        .map_err(|_| invalid("headers are not UTF-8"))?
        .lines()
    {
        let (name, value) = line
            .split_once(": ")
            .ok_or_else(|| invalid("a header line without `: `"))?;
        headers.append(
            HeaderName::try_from(name).map_err(|_| invalid("a bad header name"))?,
            HeaderValue::try_from(value).map_err(|_| invalid("a bad header value"))?,
        );
    }
    Ok((headers, Bytes::copy_from_slice(&file[split + 2..])))
}
