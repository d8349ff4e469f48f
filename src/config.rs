//! The command line and its `ORGD_*` environment variables (SPEC §6). A flag beats
//! its variable; secrets are wrapped so they never reach `Debug` output or logs.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "orgd",
    version,
    about = "Organization (tenant) management service"
)]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreConfig,

    /// Log filter, e.g. `info,orgd=debug`.
    #[arg(long, env = "ORGD_LOG", default_value = "info", global = true)]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent copy of the SQLite store to FILE while orgd keeps serving.
    Backup {
        /// Where to write the copy (must not exist yet).
        file: std::path::PathBuf,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// After the secrets key was lost: give each webhook endpoint whose secret the
    /// configured key cannot open a new random secret, so orgd starts again. Then
    /// rotate each listed endpoint's secret through the API for its receiver.
    ResetWebhookSecrets,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown only this once) on stdout.
    Create {
        /// A scope to grant; repeat for several (organizations:read, organizations:write,
        /// members:read, members:write, events:read, webhooks:manage, keys:manage).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Bind the key to this organization's subtree (id or slug).
        #[arg(long)]
        org: Option<String>,
        /// A name to recognize the key by.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

/// Where the data lives; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// Folder for the SQLite file `orgd.db`, the bootstrap key and the secrets key.
    #[arg(long, env = "ORGD_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// `sqlite://…` or `postgres://…`; overrides the data dir's SQLite file.
    #[arg(long, env = "ORGD_DATABASE_URL", global = true)]
    pub database_url: Option<Secret>,

    /// Most connections each orgd process opens to PostgreSQL.
    #[arg(
        long,
        env = "ORGD_DATABASE_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub database_pool_size: u32,

    /// Most organizations each orgd process keeps copies of, to answer GET by id
    /// without the database (~2.5 KB each with their rendered answers); 0 keeps
    /// none, at most 10,000,000.
    #[arg(
        long,
        env = "ORGD_ORG_COPIES",
        default_value_t = crate::store::org_copies::DEFAULT_CAPACITY,
        value_parser = org_copies,
        global = true
    )]
    pub org_copies: usize,

    /// Base64 of 32 bytes: the key that seals webhook signing secrets in the
    /// database. Every orgd process on one database needs the same key.
    #[arg(long, env = "ORGD_SECRETS_KEY", global = true)]
    pub secrets_key: Option<Secret>,

    /// A file holding the secrets key (base64 of 32 bytes); must exist. Without
    /// this or `--secrets-key`, `secrets.key` in the data dir is used, made on first start.
    #[arg(long, env = "ORGD_SECRETS_KEY_FILE", global = true)]
    pub secrets_key_file: Option<PathBuf>,
}

impl StoreConfig {
    /// The URL to open: the configured one, or `orgd.db` in the data dir.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("orgd.db").display()),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to serve on.
    #[arg(long, env = "ORGD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Use this secret (it must start `orgd_`) as the bootstrap admin key.
    #[arg(long, env = "ORGD_BOOTSTRAP_KEY")]
    pub bootstrap_key: Option<Secret>,

    /// Comma-separated allowed CORS origins, or `*`.
    #[arg(long, env = "ORGD_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,

    /// Accept user JWTs signed HS256 with this secret.
    #[arg(long, env = "ORGD_JWT_HS256_SECRET")]
    pub jwt_hs256_secret: Option<Secret>,

    /// Accept user JWTs signed by keys in this JWKS file path or URL.
    #[arg(long, env = "ORGD_JWT_JWKS")]
    pub jwt_jwks: Option<String>,

    /// Required `iss` of user JWTs.
    #[arg(long, env = "ORGD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of user JWTs.
    #[arg(long, env = "ORGD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// An `acr` value that counts as multi-factor (besides `amr` containing `mfa`).
    #[arg(long, env = "ORGD_JWT_MFA_ACR")]
    pub jwt_mfa_acr: Option<String>,

    /// Claim holding global roles (`system_admin`, `support`).
    #[arg(long, env = "ORGD_JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,

    /// Per-principal rate limit such as `100/s`; unset is off.
    #[arg(long, env = "ORGD_RATE_LIMIT")]
    pub rate_limit: Option<String>,

    /// Allow webhook targets on private or loopback addresses.
    #[arg(long, env = "ORGD_WEBHOOKS_ALLOW_PRIVATE", default_value_t = false)]
    pub webhooks_allow_private: bool,

    /// Delays between webhook delivery attempts, e.g. `5s,1m,10m,1h`.
    #[arg(long, env = "ORGD_WEBHOOK_RETRY_SCHEDULE")]
    pub webhook_retry_schedule: Option<String>,

    /// Time one webhook attempt may take (connect, send, answer) before it counts
    /// as a timeout and is retried.
    #[arg(long, env = "ORGD_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub webhook_timeout: Duration,

    /// Most webhook requests in flight per process.
    #[arg(long, env = "ORGD_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: u32,

    /// How often background workers look for new events when nothing woke them
    /// (changes made by this process wake them at once; other processes' are
    /// found by this poll).
    #[arg(long, env = "ORGD_EVENTS_POLL_INTERVAL", default_value = "250ms", value_parser = duration)]
    pub events_poll_interval: Duration,

    /// Also publish events to this NATS JetStream server.
    #[arg(long, env = "ORGD_NATS_URL")]
    pub nats_url: Option<String>,

    /// The JetStream stream orgd publishes to (created when missing).
    #[arg(long, env = "ORGD_NATS_STREAM", default_value = "ORGD_EVENTS")]
    pub nats_stream: String,

    /// Subjects are `<prefix>.<event type>`; the stream covers `<prefix>.>`.
    #[arg(long, env = "ORGD_NATS_SUBJECT_PREFIX", default_value = "orgd.events")]
    pub nats_subject_prefix: String,
}

/// A count of copies up to [`crate::store::org_copies::MAX_CAPACITY`]: a typo of
/// a few digits too many would otherwise ask for memory the host does not have.
fn org_copies(text: &str) -> Result<usize, String> {
    let max = crate::store::org_copies::MAX_CAPACITY;
    match text.trim().parse::<usize>() {
        Ok(count) if count <= max => Ok(count),
        Ok(_) => Err(format!("at most {max}")),
        Err(_) => Err("a whole number of organizations, 0 or more".into()),
    }
}

/// `250ms`, `10s`, `1m`: clap's parser for durations.
fn duration(text: &str) -> Result<Duration, String> {
    crate::domain::webhook::parse_duration(text)
}

impl ServeConfig {
    /// Defaults for embedding (tests, benchmarks): a random local port.
    pub fn local() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bootstrap_key: None,
            cors_origins: "*".into(),
            jwt_hs256_secret: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_mfa_acr: None,
            jwt_roles_claim: "roles".into(),
            rate_limit: None,
            webhooks_allow_private: false,
            webhook_retry_schedule: None,
            webhook_timeout: Duration::from_secs(10),
            webhook_concurrency: 32,
            events_poll_interval: Duration::from_millis(250),
            nats_url: None,
            nats_stream: "ORGD_EVENTS".into(),
            nats_subject_prefix: "orgd.events".into(),
        }
    }
}

/// A configuration value that must not be printed: `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = StoreConfig {
            data_dir: "./data".into(),
            database_url: Some("postgres://u:hunter2@db/orgd".into()),
            database_pool_size: 16,
            org_copies: 10_000,
            secrets_key: Some("c2VhbGluZy1rZXktdGhhdC1tdXN0LW5vdC1sZWFrIQ==".into()),
            secrets_key_file: None,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("c2VhbGluZy1rZXkt"));
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn org_copies_default_to_the_stores_capacity_and_can_be_turned_off() {
        let cli = Cli::try_parse_from(["orgd", "serve"]).expect("parses");
        assert_eq!(
            cli.store.org_copies,
            crate::store::org_copies::DEFAULT_CAPACITY
        );
        let cli = Cli::try_parse_from(["orgd", "serve", "--org-copies", "0"]).expect("parses");
        assert_eq!(cli.store.org_copies, 0);
        assert!(Cli::try_parse_from(["orgd", "serve", "--org-copies", "-1"]).is_err());
        let max = crate::store::org_copies::MAX_CAPACITY;
        let cli = Cli::try_parse_from(["orgd", "serve", "--org-copies", &max.to_string()])
            .expect("parses");
        assert_eq!(cli.store.org_copies, max);
        let over = (max + 1).to_string();
        assert!(Cli::try_parse_from(["orgd", "serve", "--org-copies", &over]).is_err());
    }
}
