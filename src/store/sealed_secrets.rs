//! Webhook signing secrets as both stores keep them: sealed under the process's
//! secrets key (domain/secrets_key.rs), bound to their row and column, so the
//! database never holds a secret in clear. The SQL differs per backend; the rules
//! (what a stored value means, when a key is refused) live here once.

use super::{StoreError, StoreResult};
use crate::domain::secrets_key::{sealed_key_id, SecretsKey, UnsealError};
use crate::domain::webhook::{Endpoint, SigningSecret};

/// The columns that hold secrets; each name is part of its values' associated data.
pub(super) const SECRET: &str = "secret";
pub(super) const PREVIOUS_SECRET: &str = "previous_secret";

/// Rows still holding a secret in clear, as versions before sealing wrote them
/// (`substr`, not `LIKE`: `_` is a `LIKE` wildcard, and both engines have `substr`).
pub(super) const LEGACY_ROWS: &str = "SELECT id, secret, previous_secret FROM webhook_endpoints
     WHERE substr(secret, 1, 6) = 'whsec_' OR substr(previous_secret, 1, 6) = 'whsec_'";

/// Any one sealed secret: enough to learn which key the database's secrets are under.
pub(super) const ONE_SEALED: &str =
    "SELECT id, secret FROM webhook_endpoints WHERE substr(secret, 1, 3) = 'v1.' LIMIT 1";

/// The database's secrets were sealed under another key than this process's.
#[derive(Debug, thiserror::Error)]
#[error(
    "the webhook secrets in this database are sealed with secrets key {stored} \
     (endpoint {endpoint}), but this process has key {ours}: every orgd process sharing \
     a database must be given the same ORGD_SECRETS_KEY (or ORGD_SECRETS_KEY_FILE). \
     If that key is lost, run `orgd reset-webhook-secrets` with the new key, then \
     rotate each endpoint's secret through the API"
)]
pub struct KeyMismatch {
    pub stored: String,
    pub ours: String,
    pub endpoint: String,
}

fn aad(webhook_id: &str, column: &str) -> String {
    format!("{webhook_id}/{column}")
}

/// What goes into `column` of the endpoint `webhook_id`.
pub(super) fn seal(
    key: &SecretsKey,
    webhook_id: &str,
    column: &str,
    secret: &SigningSecret,
) -> String {
    key.seal(secret.expose(), &aad(webhook_id, column))
}

/// The two stored secret columns of an endpoint: `secret` and `previous_secret`.
pub(super) fn seal_columns(key: &SecretsKey, endpoint: &Endpoint) -> (String, Option<String>) {
    let id = endpoint.id.to_string();
    (
        seal(key, &id, SECRET, &endpoint.secret),
        endpoint
            .previous_secret
            .as_ref()
            .map(|s| seal(key, &id, PREVIOUS_SECRET, s)),
    )
}

/// Reads a stored value back. A `whsec_…` value was written in clear by a version
/// before sealing; it is read as it is (and sealed at the next start, see
/// [`reseal_legacy`]), so an upgrade never loses a secret.
pub(super) fn open(
    key: &SecretsKey,
    webhook_id: &str,
    column: &str,
    stored: &str,
) -> StoreResult<SigningSecret> {
    let text = if stored.starts_with(SigningSecret::PREFIX) {
        stored.to_owned()
    } else {
        key.open(stored, &aad(webhook_id, column))
            .map_err(|err| unreadable(webhook_id, column, err))?
    };
    SigningSecret::parse(&text).ok_or_else(|| unreadable(webhook_id, column, UnsealError::Corrupt))
}

fn unreadable(webhook_id: &str, column: &str, err: UnsealError) -> StoreError {
    StoreError::Other(anyhow::anyhow!(
        "the {column} of webhook endpoint {webhook_id} cannot be read: {err}"
    ))
}

/// Refuses `key` when the sampled sealed secret (`(endpoint id, value)`) names
/// another key. Comparing key ids suffices: they are derived from the keys.
pub(super) fn check_key(
    key: &SecretsKey,
    sample: Option<(String, String)>,
) -> Result<(), KeyMismatch> {
    let Some((endpoint, value)) = sample else {
        return Ok(());
    };
    match sealed_key_id(&value) {
        Some(stored) if stored != key.key_id() => Err(KeyMismatch {
            stored: stored.to_owned(),
            ours: key.key_id().to_owned(),
            endpoint,
        }),
        // A value in no known format is one row's corruption, reported when it is read.
        _ => Ok(()),
    }
}

/// The sealed `(secret, previous_secret)` for a row read by [`LEGACY_ROWS`].
pub(super) fn reseal_legacy(
    key: &SecretsKey,
    webhook_id: &str,
    secret: &str,
    previous: Option<&str>,
) -> StoreResult<(String, Option<String>)> {
    let reseal = |column: &str, stored: &str| -> StoreResult<String> {
        if stored.starts_with(SigningSecret::PREFIX) {
            Ok(seal(
                key,
                webhook_id,
                column,
                &open(key, webhook_id, column, stored)?,
            ))
        } else {
            Ok(stored.to_owned())
        }
    };
    Ok((
        reseal(SECRET, secret)?,
        previous.map(|p| reseal(PREVIOUS_SECRET, p)).transpose()?,
    ))
}

/// For a row whose current secret `key` cannot open (the key that sealed it is
/// lost): a new random secret sealed under `key`. Its previous secret, unreadable
/// too, is dropped by the caller. `None` when the row is readable.
pub(super) fn replacement_if_unreadable(
    key: &SecretsKey,
    webhook_id: &str,
    secret: &str,
) -> Option<String> {
    open(key, webhook_id, SECRET, secret)
        .is_err()
        .then(|| seal(key, webhook_id, SECRET, &SigningSecret::generate()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "whk_01jd0000000000000000000000";

    #[test]
    fn a_sealed_secret_reads_back_only_in_its_own_row_and_column() {
        let key = SecretsKey::generate();
        let secret = SigningSecret::generate();
        let stored = seal(&key, ID, SECRET, &secret);
        assert!(!stored.contains(secret.expose()));
        assert_eq!(open(&key, ID, SECRET, &stored).unwrap(), secret);
        assert!(open(&key, ID, PREVIOUS_SECRET, &stored).is_err());
        assert!(open(&key, "whk_01jd0000000000000000000001", SECRET, &stored).is_err());
    }

    #[test]
    fn a_legacy_clear_secret_is_read_and_resealed() {
        let key = SecretsKey::generate();
        let secret = SigningSecret::generate();
        assert_eq!(open(&key, ID, SECRET, secret.expose()).unwrap(), secret);
        let (sealed, previous) = reseal_legacy(&key, ID, secret.expose(), None).unwrap();
        assert!(sealed.starts_with("v1."));
        assert_eq!(previous, None);
        assert_eq!(open(&key, ID, SECRET, &sealed).unwrap(), secret);
    }

    #[test]
    fn another_keys_secret_is_refused_naming_both_keys() {
        let ours = SecretsKey::generate();
        let theirs = SecretsKey::generate();
        let stored = seal(&theirs, ID, SECRET, &SigningSecret::generate());
        let err = check_key(&ours, Some((ID.into(), stored.clone()))).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(theirs.key_id()) && message.contains(ours.key_id()));
        assert!(message.contains("ORGD_SECRETS_KEY"));
        assert!(check_key(&theirs, Some((ID.into(), stored.clone()))).is_ok());
        assert!(check_key(&ours, None).is_ok());
        assert!(open(&ours, ID, SECRET, &stored)
            .unwrap_err()
            .to_string()
            .contains(theirs.key_id()));
        assert!(replacement_if_unreadable(&ours, ID, &stored).is_some());
        assert!(replacement_if_unreadable(&theirs, ID, &stored).is_none());
    }
}
