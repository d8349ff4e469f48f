//! Authentication: turning a bearer token into a [`Principal`]. API keys are
//! looked up by hash; anything else is verified as a user JWT.

pub mod jwt;
pub mod rate_limit;

use crate::domain::access::Principal;
use crate::domain::apikey::Secret;
use crate::store::{SharedStore, StoreError};

/// Why a token was not accepted; each becomes 401 (or 503 when the store is down).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is invalid, expired or revoked")]
    Invalid,
    #[error("user tokens are not accepted: no JWT key is configured")]
    NoUserTokens,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything needed to authenticate a request.
pub struct Authenticator {
    pub store: SharedStore,
    pub jwt: Option<jwt::JwtVerifier>,
}

impl Authenticator {
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(Secret::PREFIX) {
            return self.api_key(token).await;
        }
        let verifier = self.jwt.as_ref().ok_or(AuthError::NoUserTokens)?;
        Ok(Principal::User(verifier.verify(token).await?))
    }

    async fn api_key(&self, token: &str) -> Result<Principal, AuthError> {
        let secret = Secret::parse(token).ok_or(AuthError::Invalid)?;
        let hash = secret.hash();
        match self.store.find_api_key(&hash).await? {
            Some(key) if key.revoked_at.is_none() && key.secret_hash.matches(&hash) => {
                Ok(Principal::ApiKey {
                    id: key.id,
                    scopes: key.scopes,
                    root: key.org_id,
                })
            }
            _ => Err(AuthError::Invalid),
        }
    }
}
