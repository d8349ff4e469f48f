//! Wiring for `orgd serve`: open the store, make sure an admin key exists, build
//! the router, serve until SIGTERM or Ctrl-C, then drain in-flight requests.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ServeConfig, StoreConfig};
use crate::events;
use crate::http::{self, AppState};
use crate::keys;
use crate::store::{self, SharedStore};

/// The process-wide metrics recorder (the `metrics` facade allows one).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if the embedding program installed its own recorder first.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
            handle
        })
        .clone()
}

/// Opens (and migrates) the configured store, creating the data dir if needed.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<SharedStore> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    }
    store::open(&config.url(), config.database_pool_size).await
}

/// A server running in the background: what tests and benchmarks start.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub store: SharedStore,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The outbox workers (pump, webhook delivery, NATS).
    background: events::Background,
}

impl RunningServer {
    /// Stops accepting, drains in-flight requests, and waits for the server to end.
    pub async fn stop(mut self) {
        self.background.begin_shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.background.stop();
    }
}

/// Starts orgd on `serve.listen` and returns once it accepts connections.
pub async fn start(
    store_config: &StoreConfig,
    serve: &ServeConfig,
) -> anyhow::Result<RunningServer> {
    let store = open_store(store_config).await?;
    std::fs::create_dir_all(&store_config.data_dir).ok();
    let configured = serve.bootstrap_key.as_ref().map(|s| s.expose());
    if let Some(path) =
        keys::ensure_bootstrap_key(&store, configured, &store_config.data_dir).await?
    {
        tracing::warn!(path = %path.display(), "wrote a bootstrap admin key (all scopes); keep it secret");
    }
    let outbox_config = events::OutboxConfig::from_serve(serve)?;
    let (outbox, background) = events::start(store.clone(), outbox_config)?;
    let state = AppState {
        store: store.clone(),
        metrics: metrics_handle(),
        outbox,
        webhooks_allow_private: serve.webhooks_allow_private,
    };
    let router = http::router(state, &serve.cors_origins);
    let listener = TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(listen = %addr, "orgd is serving");
    Ok(RunningServer {
        addr,
        store,
        shutdown: Some(tx),
        task,
        background,
    })
}

/// `orgd serve`: runs until SIGTERM or Ctrl-C.
pub async fn serve(store_config: &StoreConfig, serve: &ServeConfig) -> anyhow::Result<()> {
    let server = start(store_config, serve).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
