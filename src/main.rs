//! `orgd`: parse the command line, set up logging, run the command.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use orgd::config::{Cli, Command, KeysCommand};
use orgd::domain::ids::KeyId;
use orgd::{keys, server};

/// Under load glibc malloc cost ~14% of orgd's CPU (bench/README.md, "Profiling");
/// mimalloc keeps per-thread free lists, so the request path stops contending on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every request logs a line: into a buffer that a thread of its own writes out
    // (src/log_writer.rs). Dropping `_flush_on_exit` when `main` returns writes what
    // is left.
    let (log_writer, _flush_on_exit) = orgd::log_writer::LogWriter::start(std::io::stderr())?;
    let log = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(log_writer);
    // Colour only for a person at a terminal: in a log file or journald the escape
    // codes would sit between every field name and its value. Without colour the
    // same text is written by orgd's own format, which costs less (src/log_line.rs).
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        log.with_ansi(true).init();
    } else {
        log.with_ansi(false)
            .event_format(orgd::log_line::PlainLine)
            .fmt_fields(orgd::log_line::PlainFields)
            .init();
    }
    match cli.command {
        Command::Serve(serve) => server::serve(&cli.store, &serve).await,
        Command::Migrate => {
            server::open_store(&cli.store).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Keys(command) => run_keys(&cli.store, command).await,
        Command::ResetWebhookSecrets => {
            let key = server::load_secrets_key(&cli.store)?.key;
            let replaced =
                orgd::store::reset_unreadable_webhook_secrets(&cli.store.url(), key).await?;
            for id in &replaced {
                println!("{id}");
            }
            eprintln!(
                "{} endpoint(s) got a new secret; rotate each one's secret \
                 (POST /v1/webhooks/{{id}}/rotate-secret) and give it to its receiver",
                replaced.len()
            );
            Ok(())
        }
        Command::Backup { file } => {
            if file.exists() {
                anyhow::bail!("{} already exists; choose a new file", file.display());
            }
            let store = server::open_store(&cli.store).await?;
            store.backup(&file).await?;
            eprintln!("backed up to {}", file.display());
            Ok(())
        }
    }
}

async fn run_keys(
    store_config: &orgd::config::StoreConfig,
    command: KeysCommand,
) -> anyhow::Result<()> {
    let store = server::open_store(store_config).await?;
    match command {
        KeysCommand::Create { scopes, org, name } => {
            let (key, secret) = keys::create_key(&store, &scopes, org.as_deref(), name).await?;
            eprintln!("created {} — the secret below is shown only once", key.id);
            println!("{}", secret.expose());
        }
        KeysCommand::List => {
            for key in store.list_api_keys().await? {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.name.as_deref().unwrap_or("-"),
                    scopes.join(","),
                    key.org_id.map_or_else(|| "-".to_owned(), |o| o.to_string()),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id = KeyId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            if !store.revoke_api_key(&id, orgd::domain::time::now()).await? {
                anyhow::bail!("no active key {id}");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
