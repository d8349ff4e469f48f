//! User tokens: JWTs from the deployment's identity provider.
//!
//! The algorithm is decided by the key, never by the token: an HS256 token is
//! checked only against the configured HS256 secret, an RS256/ES256 token only
//! against a JWKS key of that type, so a token cannot pick its own verification
//! (no `alg: none`, no HS256 signed with a public key). `exp` is required; `nbf`,
//! `iss` and `aud` are checked, with a small leeway for clock skew.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use super::AuthError;
use crate::domain::access::User;
use crate::domain::members::UserId;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// An unknown `kid` refetches the JWKS at most this often, so forged tokens cannot
/// turn orgd into a request amplifier against the identity provider.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Where JWKS keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl JwksSource {
    pub fn parse(text: &str) -> Self {
        if text.starts_with("https://") || text.starts_with("http://") {
            JwksSource::Url(text.to_owned())
        } else {
            JwksSource::File(PathBuf::from(text))
        }
    }
}

/// What to accept.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub hs256_secret: Option<String>,
    pub jwks: Option<JwksSource>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Claim holding the global roles (`system_admin`, `support`).
    pub roles_claim: String,
    /// An `acr` value that counts as multi-factor, besides `amr` containing `mfa`.
    pub mfa_acr: Option<String>,
}

struct JwkKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct KeyCache {
    keys: Vec<JwkKey>,
    fetched_at: Option<Instant>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    hs256: Option<DecodingKey>,
    cache: Arc<RwLock<KeyCache>>,
    /// Makes concurrent refetches on an unknown kid wait for one fetch.
    refetch: Mutex<()>,
    http: reqwest::Client,
}

impl JwtVerifier {
    /// Builds a verifier and loads the JWKS once; a failed load is logged and
    /// retried on demand (the service keeps serving API keys and HS256 tokens).
    pub async fn new(settings: JwtSettings) -> Self {
        let hs256 = settings
            .hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let verifier = Self {
            settings,
            hs256,
            cache: Arc::new(RwLock::new(KeyCache {
                keys: Vec::new(),
                fetched_at: None,
            })),
            refetch: Mutex::new(()),
            http,
        };
        verifier.refresh().await;
        verifier
    }

    pub async fn verify(&self, token: &str) -> Result<User, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or(AuthError::Invalid)?;
                self.decode(token, key, Algorithm::HS256)?
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                self.verify_with_jwks(token, header.alg, header.kid).await?
            }
            _ => return Err(AuthError::Invalid),
        };
        self.user_from(claims)
    }

    async fn verify_with_jwks(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<String>,
    ) -> Result<Map<String, Value>, AuthError> {
        if self.settings.jwks.is_none() {
            return Err(AuthError::Invalid);
        }
        if let Some(claims) = self.try_cached(token, alg, kid.as_deref()).await? {
            return Ok(claims);
        }
        // Unknown kid (or no keys yet): the provider may have rotated its keys.
        let _guard = self.refetch.lock().await;
        let stale = self
            .cache
            .read()
            .await
            .fetched_at
            .is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL);
        if stale {
            self.refresh().await;
        }
        self.try_cached(token, alg, kid.as_deref())
            .await?
            .ok_or(AuthError::Invalid)
    }

    /// `Ok(None)` when no cached key matches; `Err` when one matched and refused.
    async fn try_cached(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Option<Map<String, Value>>, AuthError> {
        let cache = self.cache.read().await;
        let candidates: Vec<&JwkKey> = cache
            .keys
            .iter()
            .filter(|k| k.algorithm == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .collect();
        // Without a kid, only an unambiguous key is used.
        match candidates.as_slice() {
            [key] => self.decode(token, &key.key, alg).map(Some),
            _ => Ok(None),
        }
    }

    async fn refresh(&self) {
        let Some(source) = &self.settings.jwks else {
            return;
        };
        let loaded = match source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<JwkSet>(&text).map_err(|e| e.to_string())),
            JwksSource::Url(url) => match self.http.get(url).send().await {
                Ok(response) if response.status().is_success() => {
                    response.json::<JwkSet>().await.map_err(|e| e.to_string())
                }
                Ok(response) => Err(format!("status {}", response.status())),
                Err(e) => Err(e.to_string()),
            },
        };
        let mut cache = self.cache.write().await;
        cache.fetched_at = Some(Instant::now());
        match loaded {
            Ok(set) => {
                cache.keys = set.keys.iter().filter_map(jwk_key).collect();
                tracing::info!(keys = cache.keys.len(), "loaded JWKS");
            }
            // Keep the keys we had: a flaky provider must not log everyone out.
            Err(error) => tracing::warn!(%error, "cannot load JWKS; keeping the previous keys"),
        }
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<Map<String, Value>, AuthError> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present
        // (jsonwebtoken skips the comparison when the claim is absent).
        let mut required = vec!["exp", "sub"];
        match &self.settings.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::Invalid)?;
        // jsonwebtoken skips an `nbf` that is not an integer (`"nbf": "9999999999"`);
        // like `exp`, it must be a whole NumericDate to count.
        if claims.get("nbf").is_some_and(|nbf| nbf.as_u64().is_none()) {
            return Err(AuthError::Invalid);
        }
        Ok(claims)
    }

    fn user_from(&self, claims: Map<String, Value>) -> Result<User, AuthError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(AuthError::Invalid)?;
        let id = UserId::parse(sub).map_err(|_| AuthError::Invalid)?;
        let roles = strings(claims.get(&self.settings.roles_claim));
        let amr = strings(claims.get("amr"));
        let acr = claims.get("acr").and_then(Value::as_str);
        let mfa = amr.iter().any(|m| m == "mfa")
            || self
                .settings
                .mfa_acr
                .as_deref()
                .is_some_and(|want| acr == Some(want));
        Ok(User {
            id,
            system_admin: roles.iter().any(|r| r == "system_admin"),
            support: roles.iter().any(|r| r == "support"),
            mfa,
        })
    }
}

/// A claim that is an array of strings or one space-separated string.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// A JWK usable for RS256 or ES256 (P-256); others are ignored.
fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<JwkKey> {
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let matches = matches!(
            (declared, algorithm),
            (jsonwebtoken::jwk::KeyAlgorithm::RS256, Algorithm::RS256)
                | (jsonwebtoken::jwk::KeyAlgorithm::ES256, Algorithm::ES256)
        );
        if !matches {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(JwkKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}
