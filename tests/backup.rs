//! `orgd backup FILE`: a consistent online copy of the SQLite store, taken while
//! writes keep coming, holds every write acknowledged before the backup began.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::Mutex;

use common::TestApp;
use orgd::store::OrgLookup;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_holds_every_write_acknowledged_before_it() {
    // The backup reads the SQLite file, so this runs on SQLite in both passes.
    let app = Arc::new(TestApp::spawn_in(tempfile::tempdir().unwrap(), |_| {}).await);
    let mut orgs = Vec::new();
    for i in 0..4 {
        orgs.push(app.org_named(&format!("Backup {i}")).await);
    }
    // Each writer bumps its own org and records every acknowledged version.
    let acknowledged: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for org in orgs.clone() {
        let (app, acknowledged, stop) = (app.clone(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                n += 1;
                let response = app
                    .patch(
                        &format!("/v1/organizations/{org}"),
                        &json!({"metadata": {"n": n}}),
                    )
                    .send_any()
                    .await;
                if response.status == 200 {
                    let version = response.body["version"].as_i64().unwrap();
                    acknowledged.lock().await.insert(org.clone(), version);
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before_backup = acknowledged.lock().await.clone();
    let target = app.data_dir.path().join("copy.db");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgd"))
        .arg("backup")
        .arg(&target)
        .env("ORGD_DATA_DIR", app.data_dir.path())
        .env_remove("ORGD_DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        before_backup.len(),
        orgs.len(),
        "every writer got acknowledgements before the backup"
    );

    // Open the copy as a store of its own and compare.
    // The copy's webhook secrets are sealed with the data dir's secrets key.
    let key = std::fs::read_to_string(orgd::secrets_key_file::default_path(app.data_dir.path()))
        .ok()
        .and_then(|text| orgd::domain::secrets_key::SecretsKey::parse(&text))
        .expect("the data dir holds the secrets key");
    let copy = orgd::store::open(
        &format!("sqlite://{}", target.display()),
        1,
        key,
        orgd::store::org_copies::DEFAULT_CAPACITY,
    )
    .await
    .unwrap();
    for (org, version) in &before_backup {
        let lookup = OrgLookup::parse(org).unwrap();
        let restored = copy
            .find_org(&lookup)
            .await
            .unwrap()
            .expect("org in the backup");
        assert!(
            restored.version >= *version,
            "{org}: backup has version {}, but {version} was acknowledged before the backup",
            restored.version
        );
        let events = copy
            .list_org_events(&restored.id, None, 5000)
            .await
            .unwrap();
        assert_eq!(
            events.len() as i64,
            restored.version,
            "one event per version in the copy"
        );
    }
    // A second backup to the same file is refused rather than overwriting it.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_orgd"))
        .arg("backup")
        .arg(&target)
        .env("ORGD_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
}
