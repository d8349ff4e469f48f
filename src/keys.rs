//! API keys outside the HTTP API: `orgd keys create|list|revoke`, and the bootstrap
//! admin key that makes a fresh install usable.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::domain::apikey::{ApiKey, Scope, ScopeSet, Secret};
use crate::domain::ids::KeyId;
use crate::domain::time;
use crate::store::{OrgLookup, SharedStore};

/// Makes a key, stores its hash, and returns the secret (shown once).
pub async fn create_key(
    store: &SharedStore,
    scopes: &[String],
    org: Option<&str>,
    name: Option<String>,
) -> anyhow::Result<(ApiKey, Secret)> {
    let scopes = scopes
        .iter()
        .map(|s| Scope::parse(s).with_context(|| format!("unknown scope `{s}`")))
        .collect::<anyhow::Result<ScopeSet>>()?;
    let org_id = match org {
        None => None,
        Some(text) => {
            let lookup = OrgLookup::parse(text)
                .with_context(|| format!("`{text}` is not an org id or slug"))?;
            match store.find_org(&lookup).await? {
                Some(found) if found.is_live() => Some(found.id),
                _ => bail!("organization `{text}` not found"),
            }
        }
    };
    let secret = Secret::generate();
    let key = ApiKey {
        id: KeyId::generate(),
        name,
        scopes,
        org_id,
        secret_hash: secret.hash(),
        created_at: time::now(),
        revoked_at: None,
    };
    store.insert_api_key(&key).await?;
    Ok((key, secret))
}

/// Where `orgd serve` writes a generated bootstrap key.
pub fn bootstrap_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bootstrap-admin.key")
}

/// Makes sure an all-scopes admin key exists: the configured one (registered if
/// absent, so it keeps working across restarts), or on an empty store a fresh one
/// written to the data dir, readable only by its owner. Returns the file written.
pub async fn ensure_bootstrap_key(
    store: &SharedStore,
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    if let Some(text) = configured {
        let secret = Secret::parse(text).context(
            "ORGD_BOOTSTRAP_KEY must start with `orgd_` and carry at least 16 more characters",
        )?;
        if store.find_api_key(&secret.hash()).await?.is_none() {
            store.insert_api_key(&bootstrap_key(&secret)).await?;
        }
        return Ok(None);
    }
    if store.count_api_keys().await? > 0 {
        return Ok(None);
    }
    let secret = Secret::generate();
    let path = bootstrap_key_path(data_dir);
    write_owner_only(&path, secret.expose())?;
    store.insert_api_key(&bootstrap_key(&secret)).await?;
    Ok(Some(path))
}

fn bootstrap_key(secret: &Secret) -> ApiKey {
    ApiKey {
        id: KeyId::generate(),
        name: Some("bootstrap".into()),
        scopes: ScopeSet::all(),
        org_id: None,
        secret_hash: secret.hash(),
        created_at: time::now(),
        revoked_at: None,
    }
}

fn write_owner_only(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}
