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

use std::sync::Arc;

use crate::auth::jwt::{JwksSource, JwtSettings, JwtVerifier};
use crate::auth::rate_limit::{self, PrincipalLimiter};
use crate::auth::Authenticator;
use crate::config::{ServeConfig, StoreConfig};
use crate::events;
use crate::http::edge::Edge;
use crate::http::first_bytes::FirstBytesDeadline;
use crate::http::{self, App, AppState};
use crate::keys;
use crate::secrets_key_file;
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

/// A JWT verifier when an HS256 secret or a JWKS source is configured.
async fn jwt_verifier(serve: &ServeConfig) -> Option<JwtVerifier> {
    if serve.jwt_hs256_secret.is_none() && serve.jwt_jwks.is_none() {
        return None;
    }
    Some(
        JwtVerifier::new(JwtSettings {
            hs256_secret: serve
                .jwt_hs256_secret
                .as_ref()
                .map(|s| s.expose().to_owned()),
            jwks: serve.jwt_jwks.as_deref().map(JwksSource::parse),
            issuer: serve.jwt_issuer.clone(),
            audience: serve.jwt_audience.clone(),
            roles_claim: serve.jwt_roles_claim.clone(),
            mfa_acr: serve.jwt_mfa_acr.clone(),
        })
        .await,
    )
}

fn rate_limiter(serve: &ServeConfig) -> anyhow::Result<Option<Arc<PrincipalLimiter>>> {
    let Some(text) = &serve.rate_limit else {
        return Ok(None);
    };
    let (count, window) =
        rate_limit::parse_rate(text).map_err(|e| anyhow::anyhow!("ORGD_RATE_LIMIT {e}"))?;
    Ok(Some(Arc::new(PrincipalLimiter::new(count, window))))
}

/// Opens (and migrates) the configured store with the configured secrets key,
/// creating the data dir if needed.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<SharedStore> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    }
    let loaded = load_secrets_key(config)?;
    let opened = store::open(
        &config.url(),
        config.database_pool_size,
        loaded.key,
        config.org_copies,
    )
    .await;
    match (&loaded.generated, opened) {
        (Some(path), Err(err)) => Err(err.context(format!(
            "no secrets key was configured, so this start made a new one in {}",
            path.display()
        ))),
        (_, opened) => opened,
    }
}

/// The secrets key, with a warning when none existed and one was made.
pub fn load_secrets_key(config: &StoreConfig) -> anyhow::Result<secrets_key_file::LoadedKey> {
    let loaded = secrets_key_file::load(config)?;
    if let Some(path) = &loaded.generated {
        tracing::warn!(
            path = %path.display(),
            secrets_key.id = loaded.key.key_id(),
            "wrote a new secrets key (it seals webhook secrets); back it up with the \
             database, and give every orgd process on this database the same key"
        );
    }
    Ok(loaded)
}

/// A server running in the background: what tests and benchmarks start.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub store: SharedStore,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
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
    let state = AppState::new(App {
        store: store.clone(),
        auth: Arc::new(Authenticator {
            store: store.clone(),
            jwt: jwt_verifier(serve).await,
        }),
        limiter: rate_limiter(serve)?,
        metrics: metrics_handle(),
        outbox,
        webhooks_allow_private: serve.webhooks_allow_private,
        recent_orgs: Arc::default(),
        rendered_orgs: http::rendered_orgs::RenderedOrgs::new(store.org_copies().capacity()),
        org_turns: Default::default(),
    });
    let service = http::service(state, &serve.cors_origins);
    let listener = TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_connections(listener, service, rx));
    tracing::info!(listen = %addr, "orgd is serving");
    Ok(RunningServer {
        addr,
        store,
        shutdown: Some(tx),
        task,
        background,
    })
}

/// A client gets this long to send its request headers (slowloris defence); a new
/// connection gets as long to send the bytes that choose its protocol.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a shutdown waits for in-flight requests before closing what is left.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// How long, once a shutdown begins, a connection that has not yet sent enough to
/// choose its protocol gets to do so. A client that connected just before the
/// shutdown has its request on the way; hyper-util would cancel it unread (Go's
/// `http.Server.Shutdown` gives new connections a grace for the same reason). A
/// connection that stays silent costs the shutdown at most this long.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

type ConnectionBuilder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// Accepts connections until `shutdown` fires, then stops accepting and lets open
/// connections finish their in-flight requests, for at most [`DRAIN_TIMEOUT`].
async fn serve_connections(listener: TcpListener, service: Edge, shutdown: oneshot::Receiver<()>) {
    use hyper_util::rt::{TokioExecutor, TokioTimer};

    let mut builder = ConnectionBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    // Each connection holds a receiver until it ends, so `closed()` is the drain.
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        spawn_connection(stream, &builder, &service, closing.subscribe());
    }
    // Connections the kernel completed but nobody accepted yet would be reset when
    // the listener closes; take them in too. (One arriving between the last accept
    // and the close is still reset: every server has that window.)
    if let Ok(listener) = listener.into_std() {
        while let Ok((stream, _peer)) = listener.accept() {
            let adopted = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream));
            if let Ok(stream) = adopted {
                spawn_connection(stream, &builder, &service, closing.subscribe());
            }
        }
    }
    closing.send_replace(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: in-flight requests did not finish in time; closing them");
    }
}

/// Serves one connection until it ends; once `closing` turns true it finishes the
/// request in progress (or, for a new connection, the first one, see
/// [`FIRST_REQUEST_GRACE`]) and closes.
fn spawn_connection(
    stream: tokio::net::TcpStream,
    builder: &ConnectionBuilder,
    service: &Edge,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let service = TowerToHyperService::new(service.clone());
    let stream = FirstBytesDeadline::new(stream, HEADER_READ_TIMEOUT);
    let mut chosen = stream.protocol_chosen();
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closing.wait_for(|closing| *closing) => {}
        }
        // Ready at once when the protocol is already chosen.
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = chosen.wait_for(|chosen| *chosen) => {}
            _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
        drop(closing);
    });
}

/// `orgd serve`: runs until SIGTERM or Ctrl-C.
pub async fn serve(store_config: &StoreConfig, serve: &ServeConfig) -> anyhow::Result<()> {
    // The handlers go in before the server accepts anything: a SIGTERM that lands
    // just after it became ready must drain it, not kill it with the default action.
    let shutdown = ShutdownSignal::install()?;
    let server = start(store_config, serve).await?;
    shutdown.recv().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C), listened for from the moment it is installed.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
