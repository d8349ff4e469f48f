//! The benchmark harness behind `bench/run.sh`: starts orgd on SQLite and on
//! PostgreSQL, seeds organizations through the API, drives PATCH and GET with `wrk`,
//! measures the baselines in the same run (a bare durable SQLite UPDATE loop,
//! `pgbench` running the same kind of UPDATE, a bare axum handler), and prints the
//! figures and orgd/baseline ratios, appending them to `bench/RESULTS.md`.
//!
//! Each repetition measures everything back to back, so the baselines and orgd
//! share whatever else the (shared, 2-core) machine is doing at that moment; the
//! table reports the median of the repetitions.

mod open_loop;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Ids the scale check's GET and list loads read, sampled at random.
const SCALE_SAMPLE: usize = 100_000;

/// orgd's `ORGD_ORG_COPIES` default.
const DEFAULT_ORG_COPIES: usize = orgd::store::org_copies::DEFAULT_CAPACITY;

/// The bootstrap key both orgd servers are started with (`ORGD_BOOTSTRAP_KEY`).
const BENCH_KEY: &str = "orgd_bench-bootstrap-admin-key-0123456789abcdef";

#[derive(Debug, Parser)]
#[command(about = "orgd benchmark: orgd against its baselines, on SQLite and PostgreSQL")]
struct Args {
    /// Seconds each load runs.
    #[arg(long, env = "BENCH_DURATION", default_value_t = 20)]
    duration: u64,
    /// Repetitions of the whole round of measurements; the table shows medians.
    #[arg(long, env = "BENCH_REPS", default_value_t = 3)]
    reps: usize,
    /// Concurrent connections (wrk) and clients (pgbench).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads (the load generator shares the machine with the server).
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// Organizations seeded before the loads.
    #[arg(long, default_value_t = 10_000)]
    orgs: usize,
    /// Cold starts measured for the startup-to-ready time.
    #[arg(long, default_value_t = 7)]
    startups: usize,
    /// PostgreSQL server for the PostgreSQL half; `none` skips it.
    #[arg(
        long,
        env = "BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// The orgd binary (release build).
    #[arg(long, default_value = "target/release/orgd")]
    orgd: PathBuf,
    /// The bare axum baseline binary.
    #[arg(long, default_value = "target/release/examples/bench_bare_axum")]
    bare_axum: PathBuf,
    /// The wrk Lua script.
    #[arg(long, default_value = "bench/orgd.lua")]
    lua: PathBuf,
    /// Where the results are appended.
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: PathBuf,
    /// A note saved with the results (what changed, what else ran).
    #[arg(long, default_value = "")]
    note: String,
    /// Instead of the comparison: seed orgd on SQLite (or on PostgreSQL with
    /// `--profile-pg`), run this load (`patch`, `get`, or a list page: `first`, or
    /// `list` after a random cursor) under `perf record` for
    /// `--duration` seconds, and print the hottest symbols. Nothing is appended.
    #[arg(long)]
    profile: Option<String>,
    /// Profile the PostgreSQL-backed orgd instead of the SQLite one; the figures
    /// then add the CPU time PostgreSQL's processes used per request.
    #[arg(long)]
    profile_pg: bool,
    /// With `--profile`: an environment variable for the profiled orgd, as
    /// `NAME=VALUE` (repeatable), e.g. `ORGD_ORG_COPIES=0` for GETs that all read
    /// the database.
    #[arg(long, value_parser = parse_env_pair)]
    orgd_env: Vec<(String, String)>,
    /// With `--profile`: run the load without `perf` and print only its figures
    /// (for alternating A/B runs of two binaries with `--orgd`).
    #[arg(long)]
    no_perf: bool,
    /// With `--profile patch`: PATCH at this many requests a second on a schedule
    /// (open loop, `bench/open_loop.rs`) instead of with wrk, for the latency at a
    /// load short of saturation (the tail a busy but not saturated server gives).
    #[arg(long)]
    open_rate: Option<f64>,
    /// With `--profile`: after seeding, grow the store to this many organizations
    /// by SQL (as the scale check does) and load a uniform sample of 100,000 of
    /// them, after an unprofiled warm-up as long as the load: the large size's
    /// reads, alone and repeatable (e.g. with `--orgd-env ORGD_ORG_COPIES=0`).
    #[arg(long)]
    profile_orgs: Option<usize>,
    /// After the comparison, grow each store to this many organizations (inserted
    /// by SQL, not the API) and measure GET by id and list pages at both sizes; 0
    /// skips it.
    #[arg(long, default_value_t = 1_000_000)]
    scale_to: usize,
    /// Seconds each load of the scale check runs.
    #[arg(long, default_value_t = 10)]
    scale_duration: u64,
}

/// One load's outcome.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// The server's CPU time per request during the load (user + system, all its
    /// threads), in µs; NaN where not measured. Steadier than the rate on a noisy
    /// host, and it says what a request costs the server apart from the load
    /// generator that shares the machine.
    server_us: f64,
    /// For GET by id on orgd: the share of the GETs it answered from its copies of
    /// organizations (`orgd_org_copies_hits_total` before and after the load);
    /// NaN where not measured.
    from_copies: f64,
}

/// Every repetition of every measurement, by name.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<Load>>);

impl Samples {
    fn add(&mut self, name: &'static str, load: Load) {
        println!(
            "  {name:<28} {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}  server CPU {} µs/req{}",
            load.rate,
            load.p50_ms,
            load.p99_ms,
            load.errors,
            fmt_opt(Some(load.server_us), 1),
            if load.from_copies.is_nan() {
                String::new()
            } else {
                format!("  from copies {}", fmt_share(load.from_copies))
            }
        );
        self.0.entry(name).or_default().push(load);
    }

    /// Medians of rate and latencies; errors summed over the repetitions.
    fn median(&self, name: &str) -> Option<Load> {
        let loads = self.0.get(name)?;
        Some(Load {
            rate: median(loads.iter().map(|l| l.rate).collect()),
            p50_ms: median(loads.iter().map(|l| l.p50_ms).collect()),
            p99_ms: median(loads.iter().map(|l| l.p99_ms).collect()),
            errors: loads.iter().map(|l| l.errors).sum(),
            server_us: median(loads.iter().map(|l| l.server_us).collect()),
            from_copies: median(loads.iter().map(|l| l.from_copies).collect()),
        })
    }

    fn rates(&self, name: &str) -> String {
        self.0.get(name).map_or_else(String::new, |loads| {
            loads
                .iter()
                .map(|l| format!("{:.0}", l.rate))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes out what earlier loads left for later — PostgreSQL's dirty buffers (its
/// checkpointer would otherwise write them, spread over minutes, during whichever
/// loads come next), the kernel's dirty pages (logs, the loop's database) — so
/// every load, baseline or orgd, starts with a quiet disk. Prints how long it took
/// and how much it wrote.
async fn settle(pg_url: Option<&str>) {
    let started = Instant::now();
    let before = paged_out_kb();
    if let Some(url) = pg_url {
        let checkpoint = async {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query("CHECKPOINT").execute(&mut conn).await?;
            anyhow::Ok(())
        };
        if let Err(err) = checkpoint.await {
            println!("  (PostgreSQL CHECKPOINT failed: {err:#}; going on)");
        }
    }
    if let Err(err) = Command::new("sync").status().await {
        println!("  (sync failed: {err}; going on)");
    }
    let written = match (before, paged_out_kb()) {
        (Some(b), Some(a)) => format!("{:.0} MB written", a.saturating_sub(b) as f64 / 1024.0),
        _ => "writes unknown".into(),
    };
    println!(
        "  settled the disk in {} ms ({written})",
        started.elapsed().as_millis()
    );
}

/// KB written out to disk since boot, all devices (`pgpgout` in /proc/vmstat).
fn paged_out_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/vmstat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("pgpgout "))?
        .trim()
        .parse()
        .ok()
}

/// Peak resident set size of a process, from the kernel's high-water mark.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A process's resident memory now, in MB: anonymous (its own heap and stacks)
/// and file-backed (its binary and libraries, and any file it maps).
fn rss_split_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |field: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kb("RssAnon:")? / 1024.0, kb("RssFile:")? / 1024.0))
}

/// Sends one `GET path` and returns the status code, or `None` if nothing answered.
/// Plain blocking TCP so the startup clock polls every millisecond without an HTTP
/// client's own setup in the way.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A running orgd process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Starts `orgd serve` and waits for `/readyz` to answer 200; returns it with the
/// time from exec to that first 200.
async fn start_orgd(
    orgd: &Path,
    data_dir: &Path,
    database_url: Option<&str>,
    bootstrap_key: Option<&str>,
    extra_env: &[(&str, String)],
) -> anyhow::Result<(Server, Duration)> {
    std::fs::create_dir_all(data_dir)?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // One log per server: the scale check starts more servers on one data dir.
    let log_path = data_dir.join(format!("orgd-{port}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut command = Command::new(orgd);
    command
        .arg("serve")
        .env_clear()
        .env("ORGD_LISTEN", addr.to_string())
        .env("ORGD_DATA_DIR", data_dir)
        .stdout(Stdio::null())
        // Logs go to a file, as in a deployment: each request logs a line.
        .stderr(log)
        .kill_on_drop(true);
    if let Some(url) = database_url {
        command.env("ORGD_DATABASE_URL", url);
    }
    if let Some(key) = bootstrap_key {
        command.env("ORGD_BOOTSTRAP_KEY", key);
    }
    command.envs(extra_env.iter().map(|(name, value)| (name, value)));
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", orgd.display()))?;
    let ready = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_status(addr, "/readyz") == Some(200) {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
    .await?;
    match ready {
        Some(elapsed) => Ok((Server { child, addr }, elapsed)),
        None => {
            let _ = child.start_kill();
            bail!("orgd did not become ready; see {}", log_path.display())
        }
    }
}

/// Creates `count` organizations through the API, 64 at a time, and returns their
/// ids and the creation rate.
async fn seed(base: &str, count: usize, concurrency: usize) -> anyhow::Result<(Vec<String>, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/v1/organizations");
            async move {
                let body = json!({
                    "name": format!("Bench Org {i}"),
                    "domains": [format!("bench-{i}.example.com")],
                    "website": format!("https://bench-{i}.example.com/"),
                    "address": {"line1": "1 Main St", "city": "Berlin", "country": "de"},
                    "metadata": {"plan": "pro", "seq": i},
                });
                let response = client
                    .post(&url)
                    .bearer_auth(BENCH_KEY)
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status();
                let value: Value = response.json().await?;
                if status.as_u16() != 201 {
                    bail!("create answered {status}: {value}");
                }
                value["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("create answered without an id")
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let ids = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((ids, rate))
}

/// Runs wrk with the Lua script in `mode` and parses the summary line it prints.
async fn wrk(args: &Args, base: &str, mode: &str, ids: &Path) -> anyhow::Result<Load> {
    wrk_for(args, args.duration, base, mode, ids).await
}

/// wrk for `seconds`; `ids` is the file of org ids (or, for `list`, of cursors).
async fn wrk_for(
    args: &Args,
    seconds: u64,
    base: &str,
    mode: &str,
    ids: &Path,
) -> anyhow::Result<Load> {
    let hits_before = if mode == "get" {
        copies_hits(base).await
    } else {
        None
    };
    let output = Command::new("wrk")
        .arg(format!("-t{}", args.wrk_threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(&args.lua)
        .arg(base)
        .env("BENCH_MODE", mode)
        .env("BENCH_IDS", ids)
        .env("BENCH_KEY", BENCH_KEY)
        .output()
        .await
        .context("cannot run wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .with_context(|| format!("wrk printed no summary:\n{stdout}"))?;
    let v: Value = serde_json::from_str(line)?;
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let errors = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|k| n(k) as u64)
        .sum();
    let requests = n("requests");
    let from_copies = match hits_before {
        Some(before) if requests > 0.0 => copies_hits(base)
            .await
            .map_or(f64::NAN, |after| (after - before) / requests),
        _ => f64::NAN,
    };
    Ok(Load {
        rate: requests / (n("duration_us") / 1e6),
        p50_ms: n("p50_us") / 1000.0,
        p99_ms: n("p99_us") / 1000.0,
        errors,
        server_us: f64::NAN,
        from_copies,
    })
}

/// wrk against the server `pid`, with the server's CPU time per request.
async fn wrk_on(
    args: &Args,
    pid: Option<u32>,
    base: &str,
    mode: &str,
    ids: &Path,
) -> anyhow::Result<Load> {
    let before = pid.and_then(cpu_seconds);
    let mut load = wrk(args, base, mode, ids).await?;
    let after = pid.and_then(cpu_seconds);
    if let (Some(before), Some(after)) = (before, after) {
        let requests = load.rate * args.duration as f64;
        load.server_us = (after - before) * 1e6 / requests;
    }
    Ok(load)
}

/// CPU time a process has used (user + system, all threads), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces;
    // utime and stime are fields 14 and 15, so the 12th and 13th after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // In USER_HZ, which Linux fixes at 100 for every user-space interface.
    Some((utime + stime) / 100.0)
}

/// The organization list's cursor after each id: where the list loads start a page.
fn list_cursors(ids: &[impl AsRef<str>]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            orgd::domain::cursor::encode(
                orgd::domain::cursor::CursorKind::Organizations,
                id.as_ref(),
            )
        })
        .collect()
}

/// CPU time of every PostgreSQL process on this machine (the server's backends
/// and its background processes), by pid. The profile compares two readings and
/// counts only the processes in both: orgd's pooled connections live through a
/// load, so their backends are in both.
fn postgres_cpu_seconds() -> std::collections::HashMap<u32, f64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter_map(|pid| Some((pid, cpu_seconds(pid)?)))
        .collect()
}

/// The SQLite baseline's table: as many rows as seeded organizations.
async fn prepare_sqlite_loop(path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut conn = sqlite_options(path)?.connect().await?;
    sqlx::query(
        "CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, counter INTEGER NOT NULL, note TEXT NOT NULL) STRICT",
    )
    .execute(&mut conn)
    .await?;
    let mut tx = conn.begin().await?;
    for id in 1..=rows as i64 {
        sqlx::query("INSERT INTO bench_rows (id, counter, note) VALUES (?1, 0, '')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// orgd's settings: WAL and a synced WAL at every commit.
fn sqlite_options(path: &Path) -> anyhow::Result<SqliteConnectOptions> {
    Ok(
        SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full),
    )
}

/// The bare durable write: one connection, one autocommit single-row UPDATE after
/// another, each synced to disk before the next starts.
async fn sqlite_loop(path: &Path, rows: usize, duration: Duration) -> anyhow::Result<Load> {
    let mut conn = sqlite_options(path)?.connect().await?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let id = rand::thread_rng().gen_range(1..=rows as i64);
        let t = Instant::now();
        sqlx::query("UPDATE bench_rows SET counter = counter + 1, note = ?2 WHERE id = ?1")
            .bind(id)
            .bind(format!("note {}", rand::thread_rng().gen::<u32>()))
            .execute(&mut conn)
            .await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    conn.close().await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        rate: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        errors: 0,
        server_us: f64::NAN,
        from_copies: f64::NAN,
    })
}

/// The PostgreSQL half's private schema, dropped at the end.
struct PgBench {
    server_url: String,
    schema: String,
}

impl PgBench {
    /// orgd's URL: the same server, with the schema as its search path.
    fn orgd_url(&self) -> String {
        let sep = if self.server_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.server_url, self.schema
        )
    }

    async fn create(server_url: &str, rows: usize) -> anyhow::Result<Self> {
        let schema = format!("bench_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(server_url)
            .await
            .context("cannot reach PostgreSQL (pass --pg-url none to skip it)")?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE {schema}.bench_rows (id INTEGER PRIMARY KEY, counter BIGINT NOT NULL, note TEXT NOT NULL)"
        ))
        .execute(&mut conn)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {schema}.bench_rows SELECT g, 0, '' FROM generate_series(1, {rows}) g"
        ))
        .execute(&mut conn)
        .await?;
        Ok(Self {
            server_url: server_url.to_owned(),
            schema,
        })
    }

    async fn drop_schema(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.server_url).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// pgbench running the single-row UPDATE with `clients` clients; latencies come
    /// from its per-transaction log.
    async fn pgbench(
        &self,
        dir: &Path,
        rows: usize,
        clients: usize,
        threads: usize,
        duration: u64,
    ) -> anyhow::Result<Load> {
        let script = dir.join("update.sql");
        std::fs::write(
            &script,
            format!(
                "\\set id random(1, {rows})\n\
                 UPDATE bench_rows SET counter = counter + 1, note = 'note ' || :id WHERE id = :id;\n"
            ),
        )?;
        let logs = dir.join("pgbench-logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        let output = Command::new("pgbench")
            .arg("-n")
            .arg(format!("-c{clients}"))
            .arg(format!("-j{threads}"))
            .arg(format!("-T{duration}"))
            .arg("-f")
            .arg(&script)
            .arg("-l")
            .arg(format!("--log-prefix={}", logs.join("tx").display()))
            .arg(&self.server_url)
            .env("PGOPTIONS", format!("-c search_path={}", self.schema))
            .output()
            .await
            .context("cannot run pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let tps: f64 = stdout
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
        let failed: u64 = stdout
            .lines()
            .find(|l| l.starts_with("number of failed transactions:"))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        // Log lines: client_id transaction_no latency_us script_no epoch epoch_us.
        let mut latencies = Vec::new();
        for entry in std::fs::read_dir(&logs)? {
            let text = std::fs::read_to_string(entry?.path())?;
            latencies.extend(text.lines().filter_map(|l| {
                l.split_whitespace()
                    .nth(2)
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(|us| us / 1000.0)
            }));
        }
        std::fs::remove_dir_all(&logs)?;
        latencies.sort_by(|a, b| a.total_cmp(b));
        Ok(Load {
            rate: tps,
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
            errors: failed,
            server_us: f64::NAN,
            from_copies: f64::NAN,
        })
    }
}

async fn start_bare_axum(
    binary: &Path,
    answer: Option<&Path>,
) -> anyhow::Result<(Child, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut child = Command::new(binary)
        .arg(addr.to_string())
        .args(answer)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(line))) if line.starts_with("listening") => Ok((child, addr)),
        _ => bail!("the bare axum server did not start"),
    }
}

/// Saves orgd's answer to `GET /v1/organizations/{id}` as the bare axum server
/// reads it (header lines, a blank line, the body), without the headers hyper
/// writes itself (`date`, `content-length`).
async fn save_get_answer(base: &str, id: &str, file: &Path) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/organizations/{id}"))
        .bearer_auth(BENCH_KEY)
        .send()
        .await?
        .error_for_status()?;
    let mut answer = Vec::new();
    for (name, value) in response.headers() {
        if name != reqwest::header::DATE && name != reqwest::header::CONTENT_LENGTH {
            answer.extend_from_slice(format!("{name}: ").as_bytes());
            answer.extend_from_slice(value.as_bytes());
            answer.push(b'\n');
        }
    }
    answer.push(b'\n');
    answer.extend_from_slice(&response.bytes().await?);
    std::fs::write(file, answer)?;
    Ok(())
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One row of the report: a measurement, its ratio to its baseline, the target.
struct Row {
    name: String,
    load: Option<Load>,
    rss_mb: Option<f64>,
    ratio: Option<(f64, &'static str)>,
    target: String,
    met: Option<bool>,
}

/// PATCH at half the rate the closed-loop load just reached (open loop).
async fn half_rate(
    args: &Args,
    base: &str,
    ids: &[String],
    closed_rate: f64,
) -> anyhow::Result<open_loop::OpenLoop> {
    let run =
        open_loop::patch_at_rate(base, BENCH_KEY, ids, closed_rate / 2.0, args.duration).await?;
    println!(
        "  {:<28} {:>9.0}/s of {:.0} offered  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:.1} ms  errors {}",
        "patch at half rate (open)", run.achieved, run.offered, run.p50_ms, run.p99_ms, run.max_ms, run.errors
    );
    Ok(run)
}

/// The open-loop PATCH runs, medians over the repetitions.
fn open_loop_report(runs: &BTreeMap<&'static str, Vec<open_loop::OpenLoop>>) -> String {
    let mut out = String::from(
        "\nPATCH at half the closed-loop rate of the same repetition, open loop (requests sent \
         on a schedule, each latency counted from when it was due; `bench/open_loop.rs`):\n\n\
         | store | offered /s | achieved /s | p50 ms | p99 ms | max ms | errors | p99 < 10 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (store, runs) in runs {
        let m = |f: fn(&open_loop::OpenLoop) -> f64| median(runs.iter().map(f).collect());
        let p99 = m(|r| r.p99_ms);
        out.push_str(&format!(
            "| {store} | {:.0} | {:.0} | {:.2} | {p99:.2} | {:.1} | {} | {} |\n",
            m(|r| r.offered),
            m(|r| r.achieved),
            m(|r| r.p50_ms),
            m(|r| r.max_ms),
            runs.iter().map(|r| r.errors).sum::<u64>(),
            if p99 < 10.0 { "yes" } else { "no" },
        ));
    }
    out
}

fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// A share as a whole percentage; `?` where not measured.
fn fmt_share(share: f64) -> String {
    if share.is_nan() {
        "?".to_owned()
    } else {
        format!("{:.0}%", share * 100.0)
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn report(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | req/s | p50 ms | p99 ms | errors | server CPU µs/req | peak RSS MB | ratio | target | met |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        let l = row.load;
        out.push_str(&format!(
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.name,
            match l.map(|l| l.from_copies) {
                Some(share) if !share.is_nan() => format!(" ({} from copies)", fmt_share(share)),
                _ => String::new(),
            },
            fmt_opt(l.map(|l| l.rate), 0),
            fmt_opt(l.map(|l| l.p50_ms), 2),
            fmt_opt(l.map(|l| l.p99_ms), 2),
            l.map_or_else(|| "–".into(), |l| l.errors.to_string()),
            fmt_opt(l.map(|l| l.server_us), 1),
            fmt_opt(row.rss_mb, 1),
            row.ratio
                .map_or_else(|| "–".into(), |(r, of)| format!("{r:.2}× {of}")),
            row.target,
            match row.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            },
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for tool in ["wrk", "pgbench"] {
        if which(tool).is_none() && !(tool == "pgbench" && args.pg_url == "none") {
            bail!("`{tool}` is not installed; bench/run.sh installs it");
        }
    }
    let tmp = tempfile::Builder::new().prefix("orgd-bench-").tempdir()?;
    let duration = Duration::from_secs(args.duration);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    if let Some(mode) = &args.profile {
        return profile(&args, mode, tmp.path()).await;
    }

    println!(
        "== startup to ready on an empty SQLite store ({} starts)",
        args.startups
    );
    let mut startups = Vec::new();
    for i in 0..args.startups {
        let (server, took) = start_orgd(
            &args.orgd,
            &tmp.path().join(format!("start-{i}")),
            None,
            None,
            &[],
        )
        .await?;
        server.stop().await;
        println!("  start {i}: {:.1} ms", took.as_secs_f64() * 1000.0);
        startups.push(took.as_secs_f64() * 1000.0);
    }
    let startup_ms = median(startups.clone());

    println!(
        "== SQLite: starting orgd and seeding {} organizations",
        args.orgs
    );
    let (sqlite, _) = start_orgd(
        &args.orgd,
        &tmp.path().join("sqlite"),
        None,
        Some(BENCH_KEY),
        &[],
    )
    .await?;
    let (ids, sqlite_seed_rate) = seed(&sqlite.base(), args.orgs, args.connections).await?;
    println!("  {} created at {sqlite_seed_rate:.0}/s", ids.len());
    let sqlite_ids = tmp.path().join("sqlite-ids.txt");
    std::fs::write(&sqlite_ids, ids.join("\n"))?;
    let loop_db = tmp.path().join("loop").join("loop.db");
    std::fs::create_dir_all(loop_db.parent().unwrap_or(tmp.path()))?;
    prepare_sqlite_loop(&loop_db, args.orgs).await?;

    let mut pg = None;
    if args.pg_url != "none" {
        println!(
            "== PostgreSQL: starting orgd and seeding {} organizations",
            args.orgs
        );
        let bench = PgBench::create(&args.pg_url, args.orgs).await?;
        let (server, _) = start_orgd(
            &args.orgd,
            &tmp.path().join("pg"),
            Some(&bench.orgd_url()),
            Some(BENCH_KEY),
            &[],
        )
        .await?;
        let (ids, rate) = seed(&server.base(), args.orgs, args.connections).await?;
        println!("  {} created at {rate:.0}/s", ids.len());
        let path = tmp.path().join("pg-ids.txt");
        std::fs::write(&path, ids.join("\n"))?;
        pg = Some((bench, server, path, rate));
    }

    let (mut bare, bare_addr) = start_bare_axum(&args.bare_axum, None).await?;
    let bare_base = format!("http://{bare_addr}");
    let answer_file = tmp.path().join("get-answer.txt");
    save_get_answer(&sqlite.base(), &ids[0], &answer_file).await?;
    let (mut bare_answer, bare_answer_addr) =
        start_bare_axum(&args.bare_axum, Some(&answer_file)).await?;
    let bare_answer_base = format!("http://{bare_answer_addr}");
    let none = tmp.path().join("none");

    let mut samples = Samples::default();
    let mut open_loops: BTreeMap<&'static str, Vec<open_loop::OpenLoop>> = BTreeMap::new();
    let read_ids = |path: &Path| -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string(path)?
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let sqlite_id_list = read_ids(&sqlite_ids)?;
    let pg_id_list = match &pg {
        Some((_, _, ids, _)) => read_ids(ids)?,
        None => Vec::new(),
    };
    let sqlite_pid = Some(sqlite.pid());
    let pg_url = pg.as_ref().map(|(bench, ..)| bench.server_url.as_str());
    for rep in 1..=args.reps {
        println!(
            "== repetition {rep}/{} ({} s each)",
            args.reps, args.duration
        );
        settle(pg_url).await;
        samples.add(
            "sqlite_loop",
            sqlite_loop(&loop_db, args.orgs, duration).await?,
        );
        settle(pg_url).await;
        let closed = wrk_on(&args, sqlite_pid, &sqlite.base(), "patch", &sqlite_ids).await?;
        samples.add("sqlite_patch", closed);
        settle(pg_url).await;
        open_loops
            .entry("SQLite")
            .or_default()
            .push(half_rate(&args, &sqlite.base(), &sqlite_id_list, closed.rate).await?);
        settle(pg_url).await;
        samples.add(
            "sqlite_get",
            wrk_on(&args, sqlite_pid, &sqlite.base(), "get", &sqlite_ids).await?,
        );
        settle(pg_url).await;
        samples.add(
            "bare_axum",
            wrk_on(&args, bare.id(), &bare_base, "bare", &none).await?,
        );
        settle(pg_url).await;
        samples.add(
            "bare_axum_answer",
            wrk_on(&args, bare_answer.id(), &bare_answer_base, "bare", &none).await?,
        );
        if let Some((bench, server, ids, _)) = &pg {
            settle(pg_url).await;
            samples.add(
                "pgbench",
                bench
                    .pgbench(
                        tmp.path(),
                        args.orgs,
                        args.connections,
                        args.wrk_threads,
                        args.duration,
                    )
                    .await?,
            );
            let pid = Some(server.pid());
            settle(pg_url).await;
            let closed = wrk_on(&args, pid, &server.base(), "patch", ids).await?;
            samples.add("pg_patch", closed);
            settle(pg_url).await;
            open_loops
                .entry("PostgreSQL")
                .or_default()
                .push(half_rate(&args, &server.base(), &pg_id_list, closed.rate).await?);
            settle(pg_url).await;
            samples.add(
                "pg_get",
                wrk_on(&args, pid, &server.base(), "get", ids).await?,
            );
        }
    }

    let sqlite_rss = peak_rss_mb(sqlite.pid());
    let bare_rss = bare.id().and_then(peak_rss_mb);
    let mut scale_report = String::new();
    if args.scale_to > args.orgs {
        let mut stores = vec![ScaleTarget {
            label: "SQLite",
            base: sqlite.base(),
            pid: sqlite.pid(),
            data_dir: tmp.path().join("sqlite"),
            db: ScaleDb::Sqlite(tmp.path().join("sqlite").join("orgd.db")),
            ids: sqlite_id_list,
        }];
        if let Some((bench, server, _, _)) = &pg {
            stores.push(ScaleTarget {
                label: "PostgreSQL",
                base: server.base(),
                pid: server.pid(),
                data_dir: tmp.path().join("pg"),
                db: ScaleDb::Postgres(bench.orgd_url()),
                ids: pg_id_list,
            });
        }
        scale_report = scale(&args, tmp.path(), stores).await?;
    }
    sqlite.stop().await;
    let _ = bare.start_kill();
    let _ = bare_answer.start_kill();
    let _ = bare.wait().await;
    let _ = bare_answer.wait().await;
    let mut pg_rss = None;
    let mut pg_seed_rate = None;
    if let Some((bench, server, _, rate)) = pg.take() {
        pg_rss = peak_rss_mb(server.pid());
        pg_seed_rate = Some(rate);
        server.stop().await;
        bench.drop_schema().await?;
    }

    // ---- the report ----
    let m = |name| samples.median(name);
    let ratio = |a: Option<Load>, b: Option<Load>| Some(a?.rate / b?.rate);
    let rss_ok = |r: Option<f64>| r.map(|r| r < 150.0);
    let mut rows = vec![
        Row {
            name: "SQLite: bare durable UPDATE loop (1 conn, autocommit)".into(),
            load: m("sqlite_loop"),
            rss_mb: None,
            ratio: None,
            target: "baseline".into(),
            met: None,
        },
        Row {
            name: format!("SQLite: orgd PATCH ({} conns)", args.connections),
            load: m("sqlite_patch"),
            rss_mb: sqlite_rss,
            ratio: ratio(m("sqlite_patch"), m("sqlite_loop")).map(|r| (r, "of loop")),
            target: "≥ 2× loop, p99 < 10 ms".into(),
            met: ratio(m("sqlite_patch"), m("sqlite_loop"))
                .zip(m("sqlite_patch"))
                .map(|(r, l)| r >= 2.0 && l.p99_ms < 10.0 && l.errors == 0),
        },
        Row {
            name: format!("SQLite: orgd GET by id ({} conns)", args.connections),
            load: m("sqlite_get"),
            rss_mb: None,
            ratio: ratio(m("sqlite_get"), m("bare_axum")).map(|r| (r, "of bare")),
            target: "≥ 0.5× bare axum, p99 < 5 ms".into(),
            met: ratio(m("sqlite_get"), m("bare_axum"))
                .zip(m("sqlite_get"))
                .map(|(r, l)| r >= 0.5 && l.p99_ms < 5.0 && l.errors == 0),
        },
        Row {
            name: format!("bare axum GET / ({} conns)", args.connections),
            load: m("bare_axum"),
            rss_mb: bare_rss,
            ratio: None,
            target: "baseline".into(),
            met: None,
        },
        Row {
            name: format!(
                "bare axum GET / sending orgd's GET answer ({} conns)",
                args.connections
            ),
            load: m("bare_axum_answer"),
            rss_mb: None,
            ratio: ratio(m("bare_axum_answer"), m("bare_axum")).map(|r| (r, "of bare")),
            target: "none: what the answer's bytes cost".into(),
            met: None,
        },
    ];
    if pg_rss.is_some() {
        rows.extend([
            Row {
                name: format!("PostgreSQL: pgbench UPDATE ({} clients)", args.connections),
                load: m("pgbench"),
                rss_mb: None,
                ratio: None,
                target: "baseline".into(),
                met: None,
            },
            Row {
                name: format!("PostgreSQL: orgd PATCH ({} conns)", args.connections),
                load: m("pg_patch"),
                rss_mb: pg_rss,
                ratio: ratio(m("pg_patch"), m("pgbench")).map(|r| (r, "of pgbench")),
                target: "≥ 0.7× pgbench, p99 < 10 ms".into(),
                met: ratio(m("pg_patch"), m("pgbench"))
                    .zip(m("pg_patch"))
                    .map(|(r, l)| r >= 0.7 && l.p99_ms < 10.0 && l.errors == 0),
            },
            Row {
                name: format!("PostgreSQL: orgd GET by id ({} conns)", args.connections),
                load: m("pg_get"),
                rss_mb: None,
                ratio: ratio(m("pg_get"), m("bare_axum")).map(|r| (r, "of bare")),
                target: "≥ 0.5× bare axum, p99 < 5 ms".into(),
                met: ratio(m("pg_get"), m("bare_axum"))
                    .zip(m("pg_get"))
                    .map(|(r, l)| r >= 0.5 && l.p99_ms < 5.0 && l.errors == 0),
            },
        ]);
    }
    let mut table = report(&rows);
    table.push_str(&open_loop_report(&open_loops));
    let max_rss = [sqlite_rss, pg_rss].into_iter().flatten().reduce(f64::max);
    let fmt_met = |met: Option<bool>| match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "?",
    };
    table.push_str(&format!(
        "\nPeak RSS of orgd (VmHWM, whole run incl. seeding): {} MB — target < 150 MB: {}\n",
        fmt_opt(max_rss, 1),
        fmt_met(rss_ok(max_rss)),
    ));
    startups.sort_by(|a, b| a.total_cmp(b));
    table.push_str(&format!(
        "Startup to first 200 on /readyz, empty SQLite store: median {startup_ms:.1} ms of {} \
         (min {:.1}, max {:.1}) — target < 200 ms: {}\n",
        startups.len(),
        startups.first().copied().unwrap_or(f64::NAN),
        startups.last().copied().unwrap_or(f64::NAN),
        fmt_met(Some(startup_ms < 200.0)),
    ));
    table.push_str(&format!(
        "Seeding {} orgs by POST at {} conns: SQLite {sqlite_seed_rate:.0}/s{}\n",
        args.orgs,
        args.connections,
        pg_seed_rate.map_or_else(String::new, |r| format!(", PostgreSQL {r:.0}/s")),
    ));
    table.push_str(&scale_report);
    table.push_str("\nPer-repetition rates (req/s):\n\n");
    for name in samples.0.keys() {
        table.push_str(&format!("- {name}: {}\n", samples.rates(name)));
    }

    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    let section = format!(
        "\n## {date} — commit {commit}{dirty}\n\n\
         Command: `{command}`  \n\
         {} s per load, {} repetitions (medians shown; errors summed), {} connections, \
         wrk with {} threads on the same {}-core machine; load average before: {}.{}\n\n{table}",
        args.duration,
        args.reps,
        args.connections,
        args.wrk_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        if args.note.is_empty() {
            String::new()
        } else {
            format!("  \nNote: {}", args.note)
        },
    );
    println!("{section}");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.results)
        .with_context(|| format!("cannot append to {}", args.results.display()))?;
    file.write_all(section.as_bytes())?;
    println!("appended to {}", args.results.display());
    Ok(())
}

// ---- scale: the same reads at 10,000 and at 1,000,000 organizations ----------------

enum ScaleDb {
    Sqlite(PathBuf),
    Postgres(String),
}

/// A running orgd whose store the scale check grows.
struct ScaleTarget {
    label: &'static str,
    base: String,
    pid: u32,
    /// The data dir more servers on the same store are started with.
    data_dir: PathBuf,
    db: ScaleDb,
    /// The ids seeded through the API.
    ids: Vec<String>,
}

/// One size's figures: GET by id, the first list page, a page at a random cursor.
struct ScalePoint {
    orgs: usize,
    get: Load,
    first_page: Load,
    cursor_page: Load,
    /// Anonymous and file-backed RSS after the loads, MB.
    rss: Option<(f64, f64)>,
    /// GET by id on more servers on the same store, keeping other numbers of
    /// copies (`ORGD_ORG_COPIES`).
    other_copies: Vec<CopiesRun>,
}

/// GET by id on a server started for it with `ORGD_ORG_COPIES` = `copies`.
struct CopiesRun {
    copies: usize,
    get: Load,
    rss: Option<(f64, f64)>,
}

/// Starts orgd on `store`'s database keeping `copies` copies, runs GET by id on
/// `ids` (after a warm-up as long, when `warm`: a read is kept at its second
/// miss), and stops it.
async fn get_keeping(
    args: &Args,
    store: &ScaleTarget,
    ids: &Path,
    copies: usize,
    warm: bool,
) -> anyhow::Result<CopiesRun> {
    println!("  GET by id on a server keeping {copies} copies");
    let (server, _) = start_orgd(
        &args.orgd,
        &store.data_dir,
        match &store.db {
            ScaleDb::Sqlite(_) => None,
            ScaleDb::Postgres(url) => Some(url.as_str()),
        },
        Some(BENCH_KEY),
        &[("ORGD_ORG_COPIES", copies.to_string())],
    )
    .await?;
    let seconds = args.scale_duration;
    if warm {
        wrk_for(args, seconds, &server.base(), "get", ids).await?;
    }
    let get = wrk_for(args, seconds, &server.base(), "get", ids).await?;
    println!(
        "    {:.0}/s, p99 {:.2} ms, {} from the copies",
        get.rate,
        get.p99_ms,
        fmt_share(get.from_copies)
    );
    let rss = rss_split_mb(server.pid());
    server.stop().await;
    Ok(CopiesRun { copies, get, rss })
}

fn fmt_rss(rss: Option<(f64, f64)>) -> String {
    rss.map_or_else(|| "?".to_owned(), |(a, f)| format!("{a:.0} / {f:.0}"))
}

/// Measures the reads, grows each store to `--scale-to` organizations by SQL (the
/// API would take an hour to make a million), measures again, and shows the query
/// plans the reads use at the large size.
async fn scale(args: &Args, tmp: &Path, stores: Vec<ScaleTarget>) -> anyhow::Result<String> {
    let mut out = format!(
        "\nScale: reads at {} and at {} organizations ({} s per load, {} conns, 50 per page; \
         the extra organizations inserted by SQL)\n\n\
         | store | orgs | GET by id req/s | p50 ms | p99 ms | GETs from copies | first page req/s | p99 ms | page at a cursor req/s | p99 ms | errors | RSS MB anon / file |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.orgs, args.scale_to, args.scale_duration, args.connections,
    );
    let mut copies_table = format!(
        "\nGET by id and the copies of organizations (`ORGD_ORG_COPIES`): 0 reads the \
         database for every GET; {} is the read set (after a warm-up of {} s)\n\n\
         | store | orgs | copies kept at most | GET by id req/s | p99 ms | GETs from copies | RSS MB anon / file |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        SCALE_SAMPLE, args.scale_duration,
    );
    let mut plans = String::new();
    for mut store in stores {
        let mut points = Vec::new();
        points.push(scale_point(args, tmp, &store).await?);
        println!(
            "== {}: growing to {} organizations",
            store.label, args.scale_to
        );
        let started = Instant::now();
        let added = match &store.db {
            ScaleDb::Sqlite(path) => grow_sqlite(path, args.scale_to).await?,
            ScaleDb::Postgres(url) => grow_postgres(url, args.scale_to).await?,
        };
        println!(
            "  {} inserted in {:.1} s",
            added.len(),
            started.elapsed().as_secs_f64()
        );
        store.ids.extend(added);
        points.push(scale_point(args, tmp, &store).await?);
        for p in &points {
            let errors = p.get.errors + p.first_page.errors + p.cursor_page.errors;
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.0} | {:.2} | {errors} | {} |\n",
                store.label,
                p.orgs,
                p.get.rate,
                p.get.p50_ms,
                p.get.p99_ms,
                fmt_share(p.get.from_copies),
                p.first_page.rate,
                p.first_page.p99_ms,
                p.cursor_page.rate,
                p.cursor_page.p99_ms,
                fmt_rss(p.rss),
            ));
        }
        for p in &points {
            copies_table.push_str(&format!(
                "| {} | {} | {} (as shipped) | {:.0} | {:.2} | {} | {} |\n",
                store.label,
                p.orgs,
                DEFAULT_ORG_COPIES,
                p.get.rate,
                p.get.p99_ms,
                fmt_share(p.get.from_copies),
                fmt_rss(p.rss),
            ));
            for run in &p.other_copies {
                copies_table.push_str(&format!(
                    "| {} | {} | {} | {:.0} | {:.2} | {} | {} |\n",
                    store.label,
                    p.orgs,
                    run.copies,
                    run.get.rate,
                    run.get.p99_ms,
                    fmt_share(run.get.from_copies),
                    fmt_rss(run.rss),
                ));
            }
        }
        plans.push_str(&query_plans(&store.db).await?);
    }
    out.push_str(&copies_table);
    out.push_str(&plans);
    Ok(out)
}

/// The ids a load at scale reads: a uniform sample (with repeats) of
/// [`SCALE_SAMPLE`], which keeps wrk's per-thread copy small at a million ids.
fn scale_sample(ids: &[String]) -> Vec<&str> {
    let mut rng = rand::thread_rng();
    (0..ids.len().min(SCALE_SAMPLE))
        .map(|_| ids[rng.gen_range(0..ids.len())].as_str())
        .collect()
}

async fn scale_point(args: &Args, tmp: &Path, store: &ScaleTarget) -> anyhow::Result<ScalePoint> {
    let orgs = store.ids.len();
    println!("== {}: reads at {orgs} organizations", store.label);
    let sample = scale_sample(&store.ids);
    let ids = tmp.join(format!("scale-ids-{}-{orgs}.txt", store.label));
    std::fs::write(&ids, sample.join("\n"))?;
    let cursors = tmp.join(format!("scale-cursors-{}-{orgs}.txt", store.label));
    std::fs::write(&cursors, list_cursors(&sample).join("\n"))?;
    let seconds = args.scale_duration;
    let get = wrk_for(args, seconds, &store.base, "get", &ids).await?;
    println!(
        "  GET by id: {:.0}/s, {} from the copies",
        get.rate,
        fmt_share(get.from_copies)
    );
    let first_page = wrk_for(args, seconds, &store.base, "first", &cursors).await?;
    let cursor_page = wrk_for(args, seconds, &store.base, "list", &cursors).await?;
    let rss = rss_split_mb(store.pid);
    let mut other_copies = vec![get_keeping(args, store, &ids, 0, false).await?];
    if orgs > SCALE_SAMPLE {
        other_copies.push(get_keeping(args, store, &ids, SCALE_SAMPLE, true).await?);
    }
    Ok(ScalePoint {
        orgs,
        get,
        first_page,
        cursor_page,
        rss,
        other_copies,
    })
}

/// orgd's count of GETs by id answered from its copies of organizations, from
/// `/metrics`.
async fn copies_hits(base: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("orgd_org_copies_hits_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// A stored document like the seeded ones, for a new id.
fn scale_doc(template: &Value, id: &str, n: usize, now: &str) -> (String, String, String) {
    let slug = format!("scale-{n}");
    let name = format!("Scale Org {n}");
    let mut doc = template.clone();
    doc["id"] = json!(id);
    doc["slug"] = json!(slug);
    doc["name"] = json!(name);
    // Domains are unique across organizations and indexed apart; the copies have none.
    doc["domains"] = json!([]);
    doc["primary_domain"] = Value::Null;
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    (slug, name, doc.to_string())
}

/// (id, slug, name, document) of the copies numbered `numbers`.
fn scale_rows(
    template: &Value,
    numbers: std::ops::Range<usize>,
    now: &str,
) -> Vec<(String, String, String, String)> {
    numbers
        .map(|i| {
            let id = orgd::domain::ids::OrgId::generate().to_string();
            let (slug, name, doc) = scale_doc(template, &id, i, now);
            (id, slug, name, doc)
        })
        .collect()
}

/// Rows are inserted in batches of this many (one statement each).
const GROW_BATCH: usize = 500;

async fn grow_sqlite(path: &Path, target: usize) -> anyhow::Result<Vec<String>> {
    let mut conn = sqlite_options(path)?
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let (count, template): (i64, String) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM organizations), doc FROM organizations LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await?;
    let template: Value = serde_json::from_str(&template)?;
    let now = orgd::domain::time::format(jiff::Timestamp::now());
    let mut ids = Vec::new();
    let mut n = count as usize;
    while n < target {
        let mut tx = conn.begin().await?;
        for _ in 0..20 {
            let rows = scale_rows(&template, n..target.min(n + GROW_BATCH), &now);
            if rows.is_empty() {
                break;
            }
            n += rows.len();
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO organizations (id, slug, name, parent_id, enabled, version, created_at, updated_at, deleted_at, doc) ",
            );
            q.push_values(&rows, |mut b, (id, slug, name, doc)| {
                b.push_bind(id.clone())
                    .push_bind(slug.clone())
                    .push_bind(name.clone())
                    .push("NULL, 1, 1")
                    .push_bind(now.clone())
                    .push_bind(now.clone())
                    .push("NULL")
                    .push_bind(doc.clone());
            });
            q.build().execute(&mut *tx).await?;
            ids.extend(rows.into_iter().map(|r| r.0));
        }
        tx.commit().await?;
    }
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    conn.close().await?;
    Ok(ids)
}

async fn grow_postgres(url: &str, target: usize) -> anyhow::Result<Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let (count, template): (i64, String) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM organizations), doc::text FROM organizations LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await?;
    let template: Value = serde_json::from_str(&template)?;
    let now = orgd::domain::time::format(jiff::Timestamp::now());
    let mut ids = Vec::new();
    let mut n = count as usize;
    while n < target {
        let mut tx = conn.begin().await?;
        for _ in 0..20 {
            let rows = scale_rows(&template, n..target.min(n + GROW_BATCH), &now);
            if rows.is_empty() {
                break;
            }
            n += rows.len();
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO organizations (id, slug, name, parent_id, enabled, version, created_at, updated_at, deleted_at, doc) ",
            );
            q.push_values(&rows, |mut b, (id, slug, name, doc)| {
                b.push_bind(id.clone())
                    .push_bind(slug.clone())
                    .push_bind(name.clone())
                    .push("NULL, true, 1")
                    .push_bind(now.clone())
                    .push_unseparated("::timestamptz")
                    .push_bind(now.clone())
                    .push_unseparated("::timestamptz")
                    .push("NULL")
                    .push_bind(doc.clone())
                    .push_unseparated("::json");
            });
            q.build().execute(&mut *tx).await?;
            ids.extend(rows.into_iter().map(|r| r.0));
        }
        tx.commit().await?;
    }
    sqlx::query("ANALYZE organizations")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(ids)
}

/// The plans of the two reads (by id; a list page after a cursor), as the database
/// chooses them at the large size: both must be index searches, not scans.
async fn query_plans(db: &ScaleDb) -> anyhow::Result<String> {
    const BY_ID: &str = "SELECT doc FROM organizations WHERE id = 'org_01jd8c0v7qf3x9y2k5m6n8p4rs'";
    // On PostgreSQL reads by id are batched (src/store/pg_point_reads.rs).
    const BY_IDS: &str = "SELECT id, doc::text FROM organizations \
                          WHERE id = ANY(ARRAY['org_01jd8c0v7qf3x9y2k5m6n8p4rs', 'org_01jd8c0v7qf3x9y2k5m6n8p4rt'])";
    const PAGE: &str = "SELECT doc FROM organizations WHERE deleted_at IS NULL \
                        AND id > 'org_01jd8c0v7qf3x9y2k5m6n8p4rs' ORDER BY id LIMIT 51";
    let mut out = String::new();
    match db {
        ScaleDb::Sqlite(path) => {
            let mut conn = sqlite_options(path)?.connect().await?;
            for (what, sql) in [("by id", BY_ID), ("page", PAGE)] {
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .fetch_all(&mut conn)
                        .await?;
                let plan: Vec<String> = rows.into_iter().map(|r| r.3).collect();
                out.push_str(&format!("\nSQLite plan, {what}: `{}`", plan.join("; ")));
            }
            conn.close().await?;
        }
        ScaleDb::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            for (what, sql) in [("by id", BY_IDS), ("page", PAGE)] {
                let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}"))
                    .fetch_all(&mut conn)
                    .await?;
                let plan: Vec<String> = rows.into_iter().map(|r| r.0.trim().to_owned()).collect();
                out.push_str(&format!("\nPostgreSQL plan, {what}: `{}`", plan.join("; ")));
            }
            conn.close().await?;
        }
    }
    out.push('\n');
    Ok(out)
}

/// `--profile`: where orgd's CPU time goes under one load.
/// Stops `perf record`, which writes its file when interrupted.
async fn stop_perf(perf: Option<Child>) {
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().unwrap_or(0).to_string()])
            .status()
            .await;
        let _ = perf.wait().await;
    }
}

async fn profile(args: &Args, mode: &str, tmp: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.open_rate.is_none() || mode == "patch",
        "--open-rate goes with --profile patch"
    );
    let mut pg = None;
    let url = if args.profile_pg {
        let bench = PgBench::create(&args.pg_url, args.orgs).await?;
        let url = bench.orgd_url();
        pg = Some(bench);
        Some(url)
    } else {
        None
    };
    let env: Vec<(&str, String)> = args
        .orgd_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    let (server, _) = start_orgd(
        &args.orgd,
        &tmp.join("profiled"),
        url.as_deref(),
        Some(BENCH_KEY),
        &env,
    )
    .await?;
    let (mut ids, _) = seed(&server.base(), args.orgs, args.connections).await?;
    let grow_to = args.profile_orgs.filter(|&n| n > args.orgs);
    if let Some(target) = grow_to {
        let started = Instant::now();
        let added = match &url {
            Some(url) => grow_postgres(url, target).await?,
            None => grow_sqlite(&tmp.join("profiled").join("orgd.db"), target).await?,
        };
        println!(
            "grew to {target} organizations in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        ids.extend(added);
        ids = scale_sample(&ids).into_iter().map(str::to_owned).collect();
    }
    let ids_file = tmp.join("ids.txt");
    // The list loads read a page after a cursor made from each id (bench/orgd.lua).
    let lines = if mode == "first" || mode == "list" {
        list_cursors(&ids)
    } else {
        ids
    };
    std::fs::write(&ids_file, lines.join("\n"))?;
    if grow_to.is_some() && args.open_rate.is_none() {
        wrk_on(args, None, &server.base(), mode, &ids_file).await?;
    }
    // The profiler runs only around the load, so seeding stays out of the profile.
    let data = std::env::current_dir()?.join(format!("target/perf-{mode}.data"));
    let perf = if args.no_perf {
        None
    } else {
        Some(
            Command::new("perf")
                .args(["record", "-F", "999", "-g", "-o"])
                .arg(&data)
                .arg("-p")
                .arg(server.pid().to_string())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot run perf (apt-get install linux-perf)")?,
        )
    };
    let summary = if let (Some(rate), "patch") = (args.open_rate, mode) {
        let run = open_loop::patch_at_rate(&server.base(), BENCH_KEY, &lines, rate, args.duration)
            .await?;
        stop_perf(perf).await;
        format!(
            "patch (open loop): {:.0}/s of {:.0} offered p50 {:.2} ms p99 {:.2} ms max {:.1} ms errors {}",
            run.achieved, run.offered, run.p50_ms, run.p99_ms, run.max_ms, run.errors
        )
    } else {
        let database_before = args.profile_pg.then(postgres_cpu_seconds);
        let load = wrk_on(args, Some(server.pid()), &server.base(), mode, &ids_file).await?;
        let database_us = database_before.map(|before| {
            let after = postgres_cpu_seconds();
            let used: f64 = after
                .iter()
                .filter_map(|(pid, secs)| before.get(pid).map(|earlier| secs - earlier))
                .sum();
            format!(
                " database CPU {:.1} µs/req",
                used * 1e6 / (load.rate * args.duration as f64)
            )
        });
        stop_perf(perf).await;
        format!(
            "{mode}: {:.0}/s p50 {:.2} ms p99 {:.2} ms errors {} server CPU {} µs/req{}",
            load.rate,
            load.p50_ms,
            load.p99_ms,
            load.errors,
            fmt_opt(Some(load.server_us), 1),
            database_us.unwrap_or_default()
        )
    };
    println!("{summary}");
    server.stop().await;
    if let Some(bench) = pg {
        bench.drop_schema().await?;
    }
    if args.no_perf {
        return Ok(());
    }
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "-i",
        ])
        .arg(&data)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&report.stdout);
    let top: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && l.contains('%')
                && !l.trim_start().starts_with('|')
                && !l.trim_start().starts_with("--")
        })
        .take(60)
        .collect();
    println!(
        "hottest symbols (self time), full profile in {}:\n{}",
        data.display(),
        top.join("\n")
    );
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}
