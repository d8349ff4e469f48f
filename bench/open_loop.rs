//! PATCH at a fixed offered rate (open loop), for the latency a client sees when
//! orgd is busy but not saturated.
//!
//! wrk keeps 64 requests in flight and sends the next as soon as one is answered,
//! so at saturation its latencies are mostly queueing (Little's law: 64 / rate).
//! Here requests are due on a schedule whatever the earlier ones are doing, and
//! each latency counts from when the request was due: a stall delays, and counts
//! against, every request due during it (no coordinated omission, as in wrk2,
//! which Debian does not package). Written here rather than with a crate because
//! the harness already holds the client, the ids and the PATCH bodies' rules.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The schedule's step: tokio's timer has millisecond resolution, so the requests
/// due within each millisecond are sent together at its start.
const TICK: Duration = Duration::from_millis(1);

/// Most requests in flight; past it the schedule waits (and those waits count in
/// the latencies, from the time each request was due).
const MAX_IN_FLIGHT: usize = 1024;

/// What one open-loop run measured; latencies in ms, from the time each was due.
pub struct OpenLoop {
    pub offered: f64,
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

/// PATCHes a random org of `ids` (a random field or two, as `bench/orgd.lua`
/// does) `rate` times a second for `seconds`, over at most [`MAX_IN_FLIGHT`]
/// connections.
pub async fn patch_at_rate(
    base: &str,
    key: &str,
    ids: &[String],
    rate: f64,
    seconds: u64,
) -> anyhow::Result<OpenLoop> {
    anyhow::ensure!(!ids.is_empty() && rate > 0.0, "no ids or no rate");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .tcp_nodelay(true)
        .build()?;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = rand::thread_rng();
    let start = Instant::now() + TICK;
    let ticks = seconds * 1000;
    let mut sent = 0u64;
    for tick in 0..ticks {
        let due = start + TICK * u32::try_from(tick)?;
        tokio::time::sleep_until(due).await;
        // Requests due by the end of this tick, minus those already sent.
        let upto = (rate * (tick + 1) as f64 / 1000.0) as u64;
        while sent < upto {
            sent += 1;
            let permit = slots.clone().acquire_owned().await?;
            let url = format!(
                "{base}/v1/organizations/{}",
                ids[rng.gen_range(0..ids.len())]
            );
            let body = patch_body(&mut rng);
            let request = client
                .patch(url)
                .bearer_auth(key)
                .header("content-type", "application/merge-patch+json")
                .body(body);
            tasks.spawn(async move {
                let ok = match request.send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        response.bytes().await.is_ok() && ok
                    }
                    Err(_) => false,
                };
                drop(permit);
                (due.elapsed(), ok)
            });
        }
    }
    let mut latencies = Vec::with_capacity(usize::try_from(sent)?);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (latency, ok) = done?;
        latencies.push(latency.as_secs_f64() * 1000.0);
        errors += u64::from(!ok);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Ok(OpenLoop {
        offered: rate,
        achieved: latencies.len() as f64 / elapsed,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        errors,
    })
}

/// One or two valid changes, with random values so that almost none is a no-op.
fn patch_body(rng: &mut impl Rng) -> String {
    let field = |rng: &mut dyn rand::RngCore, which: u32| match which {
        0 => format!(
            r#""alias_name":"alias {}""#,
            rng.gen_range(1..1_000_000_000)
        ),
        1 => format!(
            r#""description":"bench description {}""#,
            rng.gen_range(1..1_000_000_000)
        ),
        2 => format!(
            r#""website":"https://example{}.com/""#,
            rng.gen_range(1..1_000_000)
        ),
        3 => format!(r#""is_business":{}"#, rng.gen_bool(0.5)),
        4 => format!(
            r#""metadata":{{"tier":"t{}"}}"#,
            rng.gen_range(1..1_000_000)
        ),
        _ => format!(
            r#""address":{{"city":"Berlin","postal_code":"{}"}}"#,
            rng.gen_range(10_000..100_000)
        ),
    };
    let first = rng.gen_range(0..6);
    let mut body = field(rng, first);
    let second = rng.gen_range(0..6);
    if rng.gen_bool(0.5) && second != first {
        body.push(',');
        body.push_str(&field(rng, second));
    }
    format!("{{{body}}}")
}
