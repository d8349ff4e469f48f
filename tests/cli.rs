//! The `orgd` command line (SPEC §3, §6): `migrate` and `keys create|list|revoke`,
//! run as a separate process against a data dir, as an operator would.
//!
//! Tests that also run a server in-process use a multi-threaded runtime: the CLI is
//! awaited with a blocking call, and the server's own tasks (the outbox pump holds
//! SQLite's write lock for a moment) must keep running meanwhile.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;

use common::TestApp;

/// Runs `orgd <args>` with `ORGD_DATA_DIR=data_dir` and no other `ORGD_*` settings.
fn orgd(data_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgd"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORGD_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("ORGD_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("orgd runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "orgd failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// `orgd keys create …`; returns the secret it printed.
fn create_key(data_dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let output = orgd(data_dir, &all);
    assert_success(&output);
    stdout(&output).trim_end().to_owned()
}

/// One row of `orgd keys list`.
#[derive(Debug)]
struct KeyRow {
    line: String,
    id: String,
    name: String,
    scopes: Vec<String>,
    org: String,
    status: String,
}

fn list_keys(data_dir: &Path) -> (String, Vec<KeyRow>) {
    let output = orgd(data_dir, &["keys", "list"]);
    assert_success(&output);
    let text = stdout(&output);
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "id, name, scopes, org, status: {line:?}");
            KeyRow {
                line: line.to_owned(),
                id: cols[0].to_owned(),
                name: cols[1].to_owned(),
                scopes: cols[2].split(',').map(str::to_owned).collect(),
                org: cols[3].to_owned(),
                status: cols[4].to_owned(),
            }
        })
        .collect();
    (text, rows)
}

fn row_named<'a>(rows: &'a [KeyRow], name: &str) -> &'a KeyRow {
    let found: Vec<&KeyRow> = rows.iter().filter(|r| r.name == name).collect();
    assert_eq!(found.len(), 1, "one key named {name}: {rows:?}");
    found[0]
}

// ---- migrate --------------------------------------------------------------------

#[test]
fn migrate_on_a_fresh_data_dir_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not-yet-there");
    let output = orgd(&data, &["migrate"]);
    assert_success(&output);
    assert!(data.join("orgd.db").is_file(), "orgd.db was not created");
    // The database is usable: keys can be listed (none yet).
    let (text, rows) = list_keys(&data);
    assert!(rows.is_empty(), "a migrated store has no keys: {text}");
}

#[test]
fn migrate_is_safe_to_run_again() {
    let dir = tempfile::tempdir().unwrap();
    assert_success(&orgd(dir.path(), &["migrate"]));
    create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "kept"],
    );
    assert_success(&orgd(dir.path(), &["migrate"]));
    let (_, rows) = list_keys(dir.path());
    assert_eq!(rows.len(), 1, "migrating again keeps the data");
}

// ---- keys create ----------------------------------------------------------------

#[test]
fn keys_create_prints_exactly_one_line_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = orgd(
        dir.path(),
        &[
            "keys",
            "create",
            "--scope",
            "organizations:read",
            "--name",
            "ci",
        ],
    );
    assert_success(&output);
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {out:?}");
    assert!(out.ends_with('\n'));
    let secret = lines[0];
    assert!(secret.starts_with("orgd_"), "{secret}");
    assert!(
        secret.len() >= "orgd_".len() + 32,
        "the secret is long enough to be unguessable"
    );
    assert!(
        !stderr(&output).contains(secret),
        "the secret is printed only on stdout"
    );
}

#[test]
fn each_created_key_has_its_own_secret() {
    let dir = tempfile::tempdir().unwrap();
    let a = create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "a"],
    );
    let b = create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "b"],
    );
    assert_ne!(a, b);
}

#[test]
fn keys_create_accepts_several_scopes_and_the_write_aliases() {
    let dir = tempfile::tempdir().unwrap();
    create_key(
        dir.path(),
        &[
            "--scope",
            "orgs:edit",
            "--scope",
            "events:read",
            "--name",
            "multi",
        ],
    );
    create_key(
        dir.path(),
        &["--scope", "organizations:edit", "--name", "alias"],
    );
    let (_, rows) = list_keys(dir.path());
    let multi = row_named(&rows, "multi");
    assert!(
        multi.scopes.contains(&"organizations:write".to_owned()),
        "{multi:?}"
    );
    assert!(
        multi.scopes.contains(&"events:read".to_owned()),
        "{multi:?}"
    );
    assert_eq!(row_named(&rows, "alias").scopes, ["organizations:write"]);
}

#[test]
fn an_unknown_scope_fails_and_creates_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = orgd(
        dir.path(),
        &[
            "keys",
            "create",
            "--scope",
            "organizations:read",
            "--scope",
            "root:everything",
            "--name",
            "bad",
        ],
    );
    assert!(!output.status.success(), "an unknown scope must fail");
    assert!(stdout(&output).trim().is_empty(), "no secret is printed");
    assert!(
        stderr(&output).contains("root:everything"),
        "the error names the scope: {}",
        stderr(&output)
    );
    let (_, rows) = list_keys(dir.path());
    assert!(rows.is_empty(), "no key was created: {rows:?}");
}

#[test]
fn a_scope_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let output = orgd(dir.path(), &["keys", "create", "--name", "scopeless"]);
    assert!(!output.status.success());
    assert!(stdout(&output).trim().is_empty());
}

#[test]
fn an_unknown_org_fails_and_creates_no_key() {
    let dir = tempfile::tempdir().unwrap();
    for org in ["org_01h455vb4pex5vsknk084sn02q", "no-such-org"] {
        let output = orgd(
            dir.path(),
            &[
                "keys",
                "create",
                "--scope",
                "organizations:read",
                "--org",
                org,
                "--name",
                "bound",
            ],
        );
        assert!(!output.status.success(), "--org {org} must fail");
        assert!(stdout(&output).trim().is_empty(), "no secret is printed");
        assert!(
            stderr(&output).contains(org),
            "the error names the org: {}",
            stderr(&output)
        );
    }
    let (_, rows) = list_keys(dir.path());
    assert!(rows.is_empty(), "no key was created: {rows:?}");
}

// ---- keys list and revoke -------------------------------------------------------

#[test]
fn keys_list_shows_a_key_by_name_and_scopes_but_never_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "ci"],
    );
    let (text, rows) = list_keys(dir.path());
    let ci = row_named(&rows, "ci");
    assert!(ci.id.starts_with("key_"), "{ci:?}");
    assert_eq!(ci.scopes, ["organizations:read"]);
    assert_eq!(ci.org, "-");
    assert_eq!(ci.status, "active");
    assert!(!text.contains(&secret), "the list shows a secret");
    assert!(
        !text.contains(&secret["orgd_".len()..]),
        "the list shows a secret"
    );
    assert!(
        !text.contains("orgd_"),
        "the list shows something secret-shaped: {text}"
    );
}

#[test]
fn keys_revoke_marks_the_key_revoked_in_the_list() {
    let dir = tempfile::tempdir().unwrap();
    create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "ci"],
    );
    create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "other"],
    );
    let (_, rows) = list_keys(dir.path());
    let id = row_named(&rows, "ci").id.clone();

    assert_success(&orgd(dir.path(), &["keys", "revoke", &id]));
    let (_, rows) = list_keys(dir.path());
    assert_eq!(
        row_named(&rows, "ci").status,
        "revoked",
        "{}",
        row_named(&rows, "ci").line
    );
    assert_eq!(
        row_named(&rows, "other").status,
        "active",
        "only the named key is revoked"
    );
}

#[test]
fn revoking_an_unknown_or_already_revoked_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    create_key(
        dir.path(),
        &["--scope", "organizations:read", "--name", "ci"],
    );
    let (_, rows) = list_keys(dir.path());
    let id = row_named(&rows, "ci").id.clone();
    assert_success(&orgd(dir.path(), &["keys", "revoke", &id]));

    let again = orgd(dir.path(), &["keys", "revoke", &id]);
    assert!(!again.status.success(), "revoking twice must fail");
    let unknown = orgd(
        dir.path(),
        &["keys", "revoke", "key_01h455vb4pex5vsknk084sn02q"],
    );
    assert!(
        !unknown.status.success(),
        "revoking an unknown key must fail"
    );
    let garbage = orgd(dir.path(), &["keys", "revoke", "not-a-key-id"]);
    assert!(
        !garbage.status.success(),
        "revoking a malformed id must fail"
    );
}

// ---- keys against a running server ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_by_the_cli_authenticates_until_the_cli_revokes_it() {
    let app = TestApp::spawn_in(tempfile::tempdir().unwrap(), |_| {}).await;
    let data = app.data_dir.path().to_owned();
    let secret = create_key(&data, &["--scope", "organizations:read", "--name", "ci"]);

    let listed = app
        .get("/v1/organizations")
        .key(Some(&secret))
        .send(200)
        .await;
    assert!(listed.body["items"].is_array());
    // Read scope only: writing is refused.
    let refused = app
        .post("/v1/organizations", &json!({"name": "Nope"}))
        .key(Some(&secret))
        .send(403)
        .await;
    assert_eq!(refused.code(), "permission_denied");

    let (_, rows) = list_keys(&data);
    let id = row_named(&rows, "ci").id.clone();
    assert_success(&orgd(&data, &["keys", "revoke", &id]));
    let revoked = app
        .get("/v1/organizations")
        .key(Some(&secret))
        .send(401)
        .await;
    assert_eq!(revoked.code(), "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_with_org_sees_only_that_subtree() {
    let app = TestApp::spawn_in(tempfile::tempdir().unwrap(), |_| {}).await;
    let data = app.data_dir.path().to_owned();
    let tenant = app
        .create_org(json!({"name": "Tenant", "slug": "tenant"}))
        .await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let child = app
        .create_org(json!({"name": "Tenant Child", "parent_id": tenant_id}))
        .await;
    app.org_named("Someone Else").await;

    let secret = create_key(
        &data,
        &[
            "--scope",
            "organizations:read",
            "--org",
            "tenant",
            "--name",
            "bound",
        ],
    );
    let (_, rows) = list_keys(&data);
    assert_eq!(
        row_named(&rows, "bound").org,
        tenant_id,
        "the list shows the bound org's id"
    );

    let listed = app
        .get("/v1/organizations")
        .key(Some(&secret))
        .send(200)
        .await;
    let ids: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [tenant_id.as_str(), child["id"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_be_bound_to_a_deleted_org() {
    let app = TestApp::spawn_in(tempfile::tempdir().unwrap(), |_| {}).await;
    let data = app.data_dir.path().to_owned();
    let id = app.org_named("Departed").await;
    app.req(reqwest::Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(200)
        .await;
    let output = orgd(
        &data,
        &[
            "keys",
            "create",
            "--scope",
            "organizations:read",
            "--org",
            &id,
        ],
    );
    assert!(
        !output.status.success(),
        "binding to a deleted org must fail"
    );
    assert!(stdout(&output).trim().is_empty());
}
