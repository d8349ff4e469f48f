//! Reaching webhook targets without reaching what they must not: the SSRF checks
//! at registration and at delivery, and the HTTP client that connects only to
//! addresses it has checked.
//!
//! The delivery client resolves names through [`GuardedResolver`], which drops
//! forbidden addresses before the connector sees them, so the address that was
//! checked is the address connected to: a name that resolves to a public address
//! for the check and to a private one a moment later (DNS rebinding) has no second
//! lookup to exploit. Redirects are not followed and proxies from the environment
//! are ignored, for the same reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::problems::Invalid;
use crate::domain::webhook::{forbidden_address, is_local_name, refusal, TargetHost, WebhookUrl};

/// How long registration waits for DNS before accepting the name (delivery checks again).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks a target at registration: literal addresses and `localhost` names at
/// once, other names by resolving them (every address must be allowed). A name that
/// does not resolve (yet) is accepted; delivery refuses it if it later resolves to a
/// forbidden address.
pub async fn check_target(url: &WebhookUrl, allow_private: bool) -> Result<(), Invalid> {
    if allow_private {
        return Ok(());
    }
    if let Some(refused) = url.literal_refusal() {
        return Err(refused);
    }
    let TargetHost::Name(host) = url.host() else {
        return Ok(());
    };
    let lookup = tokio::net::lookup_host((host.as_str(), url.port()));
    let Ok(Ok(addrs)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await else {
        return Ok(());
    };
    for addr in addrs {
        if let Some(reason) = forbidden_address(addr.ip()) {
            return Err(refusal(reason));
        }
    }
    Ok(())
}

/// Why a request was not even attempted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ForbiddenTarget(pub String);

/// A DNS resolver that returns only addresses webhooks may reach.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if !allow_private && is_local_name(&host) {
                return Err(ForbiddenTarget(format!("{host} is a loopback name")).into());
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || forbidden_address(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let reason = found
                    .first()
                    .and_then(|a| forbidden_address(a.ip()))
                    .unwrap_or("no address");
                return Err(ForbiddenTarget(format!("{host} resolves to {reason}")).into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The client webhooks are sent with.
pub fn delivery_client(timeout: Duration, allow_private: bool) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("orgd-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The target's refusal at delivery time, for targets the resolver never sees (IP
/// literals); `None` when the request may go ahead.
pub fn literal_refusal(url: &WebhookUrl, allow_private: bool) -> Option<ForbiddenTarget> {
    if allow_private {
        return None;
    }
    url.literal_refusal()
        .map(|invalid| ForbiddenTarget(format!("the target {}", invalid.message)))
}

/// An error and its causes on one line (reqwest's own message hides the cause).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
