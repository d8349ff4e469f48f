//! Where the process's secrets key (domain/secrets_key.rs) comes from:
//! `ORGD_SECRETS_KEY`, else the file `ORGD_SECRETS_KEY_FILE` names, else
//! `secrets.key` in the data dir, made on first start so a single-machine install
//! needs no setup (like the bootstrap key).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::StoreConfig;
use crate::domain::secrets_key::SecretsKey;

/// The key to use, and the file this start made for it, if it made one.
pub struct LoadedKey {
    pub key: SecretsKey,
    pub generated: Option<PathBuf>,
}

/// Where a key is made when none is configured.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets.key")
}

/// The configured key, or the data dir's (made now if absent).
pub fn load(config: &StoreConfig) -> anyhow::Result<LoadedKey> {
    if let Some(text) = &config.secrets_key {
        let key = SecretsKey::parse(text.expose()).context(
            "ORGD_SECRETS_KEY must be standard base64 of exactly 32 bytes \
             (e.g. the output of `openssl rand -base64 32`)",
        )?;
        return Ok(LoadedKey {
            key,
            generated: None,
        });
    }
    if let Some(path) = &config.secrets_key_file {
        return Ok(LoadedKey {
            key: read(path)?,
            generated: None,
        });
    }
    let path = default_path(&config.data_dir);
    if path.exists() {
        return Ok(LoadedKey {
            key: read(&path)?,
            generated: None,
        });
    }
    match write_new(&path)? {
        Some(key) => Ok(LoadedKey {
            key,
            generated: Some(path),
        }),
        // Another process made it between our look and our write: use theirs.
        None => Ok(LoadedKey {
            key: read(&path)?,
            generated: None,
        }),
    }
}

fn read(path: &Path) -> anyhow::Result<SecretsKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secrets key file {}", path.display()))?;
    SecretsKey::parse(&text).with_context(|| {
        format!(
            "the secrets key file {} must hold standard base64 of exactly 32 bytes",
            path.display()
        )
    })
}

/// Makes a key and writes it to `path`, readable only by its owner; never
/// replaces an existing file (a replaced key would strand every sealed secret).
/// `None` when the file already exists.
fn write_new(path: &Path) -> anyhow::Result<Option<SecretsKey>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot write {}", path.display()));
        }
    };
    let key = SecretsKey::generate();
    file.write_all(key.to_base64().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &Path) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            database_pool_size: 1,
            org_copies: crate::store::org_copies::DEFAULT_CAPACITY,
            secrets_key: None,
            secrets_key_file: None,
        }
    }

    #[test]
    fn the_first_load_makes_an_owner_only_key_that_later_loads_read() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(&config(dir.path())).unwrap();
        let path = default_path(dir.path());
        assert_eq!(first.generated.as_deref(), Some(path.as_path()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = load(&config(dir.path())).unwrap();
        assert!(again.generated.is_none());
        assert_eq!(again.key.key_id(), first.key.key_id());
    }

    #[test]
    fn a_configured_key_wins_and_a_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretsKey::generate();
        let mut with_key = config(dir.path());
        with_key.secrets_key = Some(key.to_base64().into());
        with_key.secrets_key_file = Some(dir.path().join("absent.key"));
        assert_eq!(load(&with_key).unwrap().key.key_id(), key.key_id());
        assert!(!default_path(dir.path()).exists());

        with_key.secrets_key = None;
        assert!(load(&with_key).is_err());

        let mut bad = config(dir.path());
        bad.secrets_key = Some("too-short".into());
        assert!(load(&bad).is_err());
    }
}
