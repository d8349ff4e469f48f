//! Webhooks, the pure parts: endpoints and their filters, signing secrets and
//! Standard Webhooks signatures, the retry schedule, what an attempt's outcome
//! means, and which target addresses are refused (SSRF).
//!
//! Nothing here does I/O: the delivery worker (`crate::events::webhooks`) resolves
//! names, sends requests and asks these functions what to make of the answers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::RngCore;
use sha2::Sha256;

use super::event::EventType;
use super::fields::WebUrl;
use super::ids::{OrgId, WebhookId};
use super::problems::Invalid;

/// An endpoint as stored (its secrets included: the server must sign with them).
#[derive(Clone)]
pub struct Endpoint {
    pub id: WebhookId,
    pub url: WebhookUrl,
    pub event_types: EventTypes,
    /// Only events of this organization's subtree, when set.
    pub org_id: Option<OrgId>,
    pub description: Option<String>,
    pub secret: SigningSecret,
    /// The secret replaced by the last rotation, still signing until `previous_expires_at`.
    pub previous_secret: Option<SigningSecret>,
    pub previous_expires_at: Option<Timestamp>,
    pub status: EndpointStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets are `SigningSecret`s, whose Debug is redacted; listed for completeness.
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("org_id", &self.org_id)
            .field("secret", &self.secret)
            .field("previous_secret", &self.previous_secret)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The secrets that sign a message sent at `now`: the current one, and during a
    /// rotation's grace period the previous one too.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&SigningSecret> {
        let mut secrets = vec![&self.secret];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_expires_at) {
            if now < until {
                secrets.push(previous);
            }
        }
        secrets
    }
}

/// `active` until a message exhausts its retries; `failing` then, until a delivery
/// succeeds again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    Active,
    Failing,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Active => "active",
            EndpointStatus::Failing => "failing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(EndpointStatus::Active),
            "failing" => Some(EndpointStatus::Failing),
            _ => None,
        }
    }
}

// ---- event type filter ----

/// The event types an endpoint wants: `*` (everything) or a list of known types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(Vec<String>);

/// The type of the message `POST /v1/webhooks/{id}/test` sends.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

const KNOWN_TYPES: [EventType; 7] = [
    EventType::OrganizationCreated,
    EventType::OrganizationUpdated,
    EventType::OrganizationDeleted,
    EventType::OrganizationRestored,
    EventType::MemberAdded,
    EventType::MemberUpdated,
    EventType::MemberRemoved,
];

impl EventTypes {
    pub const MAX: usize = 32;

    /// Each entry is checked; errors carry the index of the entry.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<(Option<usize>, Invalid)>> {
        let mut errors = Vec::new();
        if entries.is_empty() {
            errors.push((
                None,
                Invalid::new("too_short", "must name at least one event type, or \"*\""),
            ));
        }
        if entries.len() > Self::MAX {
            errors.push((
                None,
                Invalid::new(
                    "too_long",
                    format!("must have at most {} entries", Self::MAX),
                ),
            ));
        }
        for (i, entry) in entries.iter().enumerate() {
            let known = entry == "*"
                || entry == TEST_EVENT_TYPE
                || KNOWN_TYPES.iter().any(|t| t.as_str() == entry);
            if !known {
                errors.push((
                    Some(i),
                    Invalid::new(
                        "unknown_event_type",
                        "must be \"*\" or an event type such as organization.updated",
                    ),
                ));
            } else if entries[..i].contains(entry) {
                errors.push((Some(i), Invalid::new("duplicate", "is listed twice")));
            }
        }
        if errors.is_empty() {
            Ok(Self(entries.to_vec()))
        } else {
            Err(errors)
        }
    }

    /// Values read back from the store, parsed on the way in.
    pub fn from_stored(entries: Vec<String>) -> Self {
        Self(entries)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.0.iter().any(|t| t == "*" || t == event_type)
    }
}

// ---- signing ----

/// An endpoint's signing secret: `whsec_` + base64 of 32 random bytes. The server
/// keeps it (it signs with it), so it is redacted from `Debug`, never logged, and
/// stored only sealed under the secrets key (store/sealed_secrets.rs).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl SigningSecret {
    pub const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self {
            text: format!("{}{}", Self::PREFIX, STANDARD.encode(&key)),
            key,
        }
    }

    /// `whsec_<base64>` with 24 to 64 key bytes (the Standard Webhooks range is wider;
    /// orgd makes 32, and reads back only what it made).
    pub fn parse(text: &str) -> Option<Self> {
        let key = STANDARD.decode(text.strip_prefix(Self::PREFIX)?).ok()?;
        (24..=64).contains(&key.len()).then(|| Self {
            text: text.to_owned(),
            key,
        })
    }

    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">` (Standard Webhooks).
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret.key).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one `v1,…` entry per secret, space-separated, so
/// receivers that verify with either the old or the new secret accept it.
pub fn signature_header(
    secrets: &[&SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- retries ----

/// Delays between attempts (`ORGD_WEBHOOK_RETRY_SCHEDULE`): after the first attempt
/// fails, wait the first delay, and so on; when they are used up, give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    pub const MAX_STEPS: usize = 50;

    /// Svix's and the Standard Webhooks guide's schedule: about 27.6 hours in 8 attempts.
    pub fn default_schedule() -> Self {
        let s = Duration::from_secs;
        Self(vec![
            s(5),
            s(5 * 60),
            s(30 * 60),
            s(2 * 3600),
            s(5 * 3600),
            s(10 * 3600),
            s(10 * 3600),
        ])
    }

    /// `5s,1m,10m,1h`; each entry a [`parse_duration`]. An empty schedule means one
    /// attempt and no retries (write `none`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self(Vec::new()));
        }
        let delays = text
            .split(',')
            .map(|part| parse_duration(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > Self::MAX_STEPS {
            return Err(format!("at most {} delays", Self::MAX_STEPS));
        }
        Ok(Self(delays))
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// The wait before attempt `failed_attempts + 1`, or `None` to give up. `jitter`
    /// in [0, 1) spreads retries over ±10% so that endpoints recovering from an
    /// outage are not hit by every queued message in the same instant.
    pub fn next_delay(&self, failed_attempts: u32, jitter: f64) -> Option<Duration> {
        let base = *self.0.get((failed_attempts as usize).checked_sub(1)?)?;
        let factor = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }
}

/// `250ms`, `5s`, `1m`, `10m`, `1h`, `1d`: a whole number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` needs a unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}`: the unit must be ms, s, m, h or d")),
    };
    let ms = n
        .checked_mul(ms_per_unit)
        .filter(|&ms| ms <= 30 * 86_400_000)
        .ok_or_else(|| format!("`{text}` is longer than 30 days"))?;
    Ok(Duration::from_millis(ms))
}

/// What one attempt's result means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again later (timeouts, connection errors, 5xx, 429).
    Retry,
    /// The receiver refused it for good (other 4xx, 3xx: redirects are not followed,
    /// or a target that is not allowed).
    Refused,
}

/// `status` is `None` when no response came (timeout, connection error).
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        None | Some(429) | Some(500..=599) => Verdict::Retry,
        Some(_) => Verdict::Refused,
    }
}

// ---- targets (SSRF) ----

/// Why an address may not be a webhook target, or `None` if it may.
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("an unspecified (\"this network\") address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if a >= 240 {
        Some("a reserved or broadcast address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d.
        return forbidden_v4(v4);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        // IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it).
        return forbidden_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the gateway forwards to the embedded IPv4 address.
        return forbidden_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        // 6to4 embeds an IPv4 address in bits 16..48.
        if let Some(reason) = forbidden_v4(embedded_v4(segments[1], segments[2])) {
            return Some(reason);
        }
    }
    if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("a unique local (private) address")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if segments[0] & 0xffc0 == 0xfec0 {
        Some("a site-local (private) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Host names that always mean this machine (RFC 6761 §6.3), refused without a lookup.
pub fn is_local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// A webhook target: an absolute `http`/`https` URL with a host and no credentials.
/// Whether its host is allowed is a separate question ([`WebhookUrl::host`],
/// [`forbidden_address`]), because for names it needs a DNS lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

/// The host part of a target, as the SSRF check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    Ip(IpAddr),
    Name(String),
}

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let normalized = WebUrl::parse_web(text)?;
        let url = url::Url::parse(normalized.as_str())
            .map_err(|e| Invalid::new("invalid_url", format!("is not an absolute URL ({e})")))?;
        if url.fragment().is_some() {
            return Err(Invalid::new("invalid_url", "must not have a #fragment"));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    pub fn host(&self) -> TargetHost {
        match self.0.host() {
            Some(url::Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => TargetHost::Name(name.to_owned()),
            None => TargetHost::Name(String::new()),
        }
    }

    /// The port a connection goes to (the scheme's default when none is given).
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(443)
    }

    /// The refusal for a target that needs no lookup to judge: an IP literal on a
    /// forbidden range, or a `localhost` name. `None` means "allowed, or ask DNS".
    pub fn literal_refusal(&self) -> Option<Invalid> {
        match self.host() {
            TargetHost::Ip(ip) => forbidden_address(ip).map(refusal),
            TargetHost::Name(name) if is_local_name(&name) => Some(refusal("a loopback address")),
            TargetHost::Name(_) => None,
        }
    }
}

/// The error a forbidden target gets (422 at `/url`).
pub fn refusal(reason: &str) -> Invalid {
    Invalid::new(
        "forbidden_target",
        format!(
            "resolves to {reason}; webhook targets must be public \
             (set ORGD_WEBHOOKS_ALLOW_PRIVATE=true to allow private targets)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The vector of the Standard Webhooks reference libraries.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_both_secrets_until_the_grace_period_ends() {
        let (old, new) = (SigningSecret::generate(), SigningSecret::generate());
        let header = signature_header(&[&new, &old], "evt_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [sign(&new, "evt_1", 1, b"{}"), sign(&old, "evt_1", 1, b"{}")]
        );
    }

    #[test]
    fn secrets_are_prefixed_random_and_redacted() {
        let secret = SigningSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(secret.expose()), Some(secret.clone()));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
        assert_ne!(secret, SigningSecret::generate());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_none());
    }

    #[test]
    fn parses_schedules_and_durations() {
        let schedule = RetrySchedule::parse("5s, 1m,10m,1h").unwrap();
        assert_eq!(
            schedule.delays(),
            [5, 60, 600, 3600].map(Duration::from_secs)
        );
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-5s",
            "1.5s",
            "31d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(RetrySchedule::parse("5s,,1m").is_err());
        assert!(RetrySchedule::parse("none").unwrap().delays().is_empty());
        let total: Duration = RetrySchedule::default_schedule().delays().iter().sum();
        assert!(total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(30 * 3600));
    }

    #[test]
    fn retries_follow_the_schedule_then_give_up() {
        let schedule = RetrySchedule::parse("1s,10s").unwrap();
        assert_eq!(schedule.next_delay(0, 0.5), None);
        assert_eq!(schedule.next_delay(1, 0.5), Some(Duration::from_secs(1)));
        assert_eq!(schedule.next_delay(2, 0.5), Some(Duration::from_secs(10)));
        assert_eq!(schedule.next_delay(3, 0.5), None);
    }

    #[test]
    fn verdicts_follow_the_spec() {
        assert_eq!(verdict(Some(200)), Verdict::Delivered);
        assert_eq!(verdict(Some(204)), Verdict::Delivered);
        assert_eq!(verdict(None), Verdict::Retry);
        assert_eq!(verdict(Some(429)), Verdict::Retry);
        assert_eq!(verdict(Some(503)), Verdict::Retry);
        assert_eq!(verdict(Some(400)), Verdict::Refused);
        assert_eq!(verdict(Some(410)), Verdict::Refused);
        assert_eq!(verdict(Some(301)), Verdict::Refused);
    }

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for text in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(
                forbidden_address(ip).is_some(),
                "{text} should be forbidden"
            );
        }
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(forbidden_address(ip), None, "{text} should be allowed");
        }
    }

    #[test]
    fn urls_must_be_web_urls_and_literal_targets_are_judged_without_dns() {
        assert!(WebhookUrl::parse("ftp://example.com/").is_err());
        assert!(WebhookUrl::parse("https://user:pw@example.com/").is_err());
        assert!(WebhookUrl::parse("/relative").is_err());
        assert!(WebhookUrl::parse("https://example.com/#frag").is_err());
        let refused = |u: &str| WebhookUrl::parse(u).unwrap().literal_refusal().is_some();
        assert!(refused("http://127.0.0.1:8080/hook"));
        assert!(refused("http://[::1]/"));
        assert!(refused("http://[::ffff:192.168.0.1]/"));
        assert!(refused("http://localhost/"));
        assert!(refused("http://LOCALHOST./"));
        assert!(refused("http://api.localhost/"));
        assert!(refused("http://2130706433/")); // 127.0.0.1 as one decimal number
        assert!(refused("http://0x7f.1/"));
        assert!(!refused("https://hooks.example.com/orgd"));
        assert!(!refused("https://8.8.8.8/"));
    }

    #[test]
    fn event_type_filters() {
        let all = EventTypes::parse(&["*".into()]).unwrap();
        assert!(all.matches("organization.updated") && all.matches("webhook.test"));
        let some = EventTypes::parse(&["organization.created".into()]).unwrap();
        assert!(some.matches("organization.created"));
        assert!(!some.matches("organization.updated"));
        let errors = EventTypes::parse(&["nope".into(), "*".into(), "*".into()]).unwrap_err();
        let at: Vec<_> = errors.iter().map(|(i, e)| (*i, e.code)).collect();
        assert_eq!(
            at,
            [(Some(0), "unknown_event_type"), (Some(2), "duplicate")]
        );
        assert!(EventTypes::parse(&[]).is_err());
    }

    proptest! {
        #[test]
        fn every_ipv4_address_is_judged_the_same_through_an_ipv4_mapped_address(v in any::<u32>()) {
            let v4 = Ipv4Addr::from(v);
            prop_assert_eq!(
                forbidden_address(IpAddr::V4(v4)).is_some(),
                forbidden_address(IpAddr::V6(v4.to_ipv6_mapped())).is_some()
            );
        }

        #[test]
        fn schedules_round_trip_and_jitter_stays_within_ten_percent(
            secs in proptest::collection::vec(1u64..100_000, 1..10),
            jitter in 0.0f64..1.0,
        ) {
            let text = secs.iter().map(|s| format!("{s}s")).collect::<Vec<_>>().join(",");
            let schedule = RetrySchedule::parse(&text).unwrap();
            prop_assert_eq!(schedule.delays().len(), secs.len());
            for (i, &s) in secs.iter().enumerate() {
                let delay = schedule.next_delay(i as u32 + 1, jitter).unwrap().as_secs_f64();
                prop_assert!(delay >= s as f64 * 0.9 - 1e-6 && delay <= s as f64 * 1.1 + 1e-6);
            }
        }

        #[test]
        fn signatures_depend_on_every_input(id in "[a-z0-9_]{1,20}", ts in 0i64..4_000_000_000, body in ".{0,50}") {
            let secret = SigningSecret::generate();
            let sig = sign(&secret, &id, ts, body.as_bytes());
            prop_assert!(sig.starts_with("v1,"));
            prop_assert_ne!(&sig, &sign(&secret, &id, ts + 1, body.as_bytes()));
            prop_assert_ne!(&sig, &sign(&SigningSecret::generate(), &id, ts, body.as_bytes()));
        }

        #[test]
        fn duration_parsing_never_panics(text in "\\PC{0,30}") {
            let _ = parse_duration(&text);
            let _ = RetrySchedule::parse(&text);
        }
    }
}
