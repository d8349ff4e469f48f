//! Per-principal rate limits (`ORGD_RATE_LIMIT`, e.g. `100/s`, `6000/m`), off by
//! default. One keyed GCRA limiter (governor): each principal has its own bucket,
//! so one noisy client cannot starve the others.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

pub struct PrincipalLimiter {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    /// The configured `<n>/<unit>`, for the `RateLimit-Policy` header.
    pub per: u32,
    pub window_secs: u64,
}

/// Parses `100/s`, `6000/m` or `100000/h`.
pub fn parse_rate(text: &str) -> Result<(NonZeroU32, Duration), String> {
    let (count, unit) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{text}`: expected <count>/<s|m|h>"))?;
    let count: NonZeroU32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: the count must be a positive integer"))?;
    let window = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => return Err(format!("`{text}`: unknown unit `{other}` (use s, m or h)")),
    };
    Ok((count, window))
}

impl PrincipalLimiter {
    pub fn new(count: NonZeroU32, window: Duration) -> Self {
        // A burst of the whole allowance, refilled evenly over the window.
        let quota = Quota::with_period(window / count.get())
            .unwrap_or_else(|| Quota::per_second(count))
            .allow_burst(count);
        Self {
            limiter: RateLimiter::keyed(quota),
            per: count.get(),
            window_secs: window.as_secs(),
        }
    }

    /// `Err(wait)` when the principal must wait before its next request.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&principal.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_limit_per_principal() {
        assert!(parse_rate("10/x").is_err());
        assert!(parse_rate("0/s").is_err());
        let (count, window) = parse_rate("2/m").unwrap();
        let limiter = PrincipalLimiter::new(count, window);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(1));
        assert!(
            limiter.check("b").is_ok(),
            "another principal has its own allowance"
        );
    }
}
