//! The HTTP baseline: an axum server whose only handler answers a fixed body, on
//! the same runtime defaults as `orgd serve`. orgd's GET-by-id rate is compared to
//! this, so the ratio shows what orgd's own work (auth, store, JSON) costs on top of
//! the HTTP stack both share.
//!
//! `cargo run --release --example bench_bare_axum -- 127.0.0.1:PORT`

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let router = Router::new().route("/", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    // The harness waits for this line before driving load.
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await
}
