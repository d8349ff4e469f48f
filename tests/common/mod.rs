//! Test harness: a real orgd server on a random local port, on a fresh store per
//! test, driven over HTTP like any client would.
#![allow(dead_code)]

pub mod process;
pub mod receiver;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

use orgd::config::{ServeConfig, StoreConfig};
use orgd::server::{self, RunningServer};

/// The bootstrap key every test server is started with.
pub const ADMIN_KEY: &str = "orgd_test-bootstrap-admin-key-0123456789";
/// HS256 secret, issuer and audience of [`TestApp::spawn_with_users`].
pub const JWT_SECRET: &str = "test-hs256-secret-that-is-long-enough-0123456789";
pub const JWT_ISSUER: &str = "https://idp.test";
pub const JWT_AUDIENCE: &str = "orgd";

/// What a test user token says.
#[derive(Debug, Clone, Default)]
pub struct UserClaims {
    pub sub: String,
    pub roles: Vec<&'static str>,
    pub mfa: bool,
}

impl UserClaims {
    pub fn new(sub: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            ..Default::default()
        }
    }

    pub fn roles(mut self, roles: &[&'static str]) -> Self {
        self.roles = roles.to_vec();
        self
    }

    pub fn mfa(mut self) -> Self {
        self.mfa = true;
        self
    }

    /// The claims as JSON, valid for an hour, for [`TestApp::spawn_with_users`].
    pub fn to_json(&self) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut claims = json!({
            "sub": self.sub,
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "iat": now,
            "exp": now + 3600,
            "roles": self.roles,
        });
        if self.mfa {
            claims["amr"] = json!(["pwd", "mfa"]);
        }
        claims
    }

    /// A signed HS256 token.
    pub fn token(&self) -> String {
        hs256_token(&self.to_json())
    }
}

/// Signs arbitrary claims with [`JWT_SECRET`].
pub fn hs256_token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token signs")
}

/// Makes a serve configuration accept the test user tokens (HS256 with
/// [`JWT_SECRET`], issuer [`JWT_ISSUER`], audience [`JWT_AUDIENCE`]); for
/// [`TestApp::spawn_with`] when other settings change too.
pub fn accept_users(serve: &mut ServeConfig) {
    serve.jwt_hs256_secret = Some(JWT_SECRET.into());
    serve.jwt_issuer = Some(JWT_ISSUER.into());
    serve.jwt_audience = Some(JWT_AUDIENCE.into());
}

pub struct TestApp {
    pub base: String,
    pub admin: String,
    pub data_dir: TempDir,
    pub server: Option<RunningServer>,
    client: reqwest::Client,
    /// `(server URL, schema)` when running on PostgreSQL.
    pg_schema: Option<(String, String)>,
}

/// Creates an empty schema with a unique name for one test. The first call in a
/// process also drops schemas left by test processes that are gone (a process can
/// exit before a test's clean-up thread has finished).
pub async fn fresh_pg_schema(url: &str) -> String {
    use sqlx::Connection;
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let schema = format!("t_{}", uuid_simple());
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("ORGD_TEST_DATABASE_URL must point at a reachable PostgreSQL");
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let leftovers: Vec<String> =
            sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'")
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
        for name in leftovers {
            let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    schema
}

fn uuid_simple() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg_schema.take() {
            drop_pg_schema_later(url, schema);
        }
    }
}

/// Drop runs inside the test's runtime, which must not be blocked: the server's
/// connections finish their rollbacks on it, and DROP SCHEMA waits for their locks.
/// A detached thread with its own runtime removes the schema.
fn drop_pg_schema_later(url: String, schema: String) {
    std::thread::spawn(move || {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query("SET lock_timeout = '20s'")
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            });
        }
    });
}

/// A database several orgd processes can share: a fresh PostgreSQL schema when
/// `ORGD_TEST_DATABASE_URL` is set (its URL in `url`), else `None`, meaning the
/// SQLite file of a shared data dir.
pub struct SharedDatabase {
    pub url: Option<String>,
    pg_schema: Option<(String, String)>,
}

impl SharedDatabase {
    pub async fn new() -> SharedDatabase {
        match std::env::var("ORGD_TEST_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => {
                let schema = fresh_pg_schema(&url).await;
                SharedDatabase {
                    url: Some(pg_url_with_schema(&url, &schema)),
                    pg_schema: Some((url, schema)),
                }
            }
            _ => SharedDatabase {
                url: None,
                pg_schema: None,
            },
        }
    }

    /// The base PostgreSQL URL, when on PostgreSQL.
    pub fn postgres_base(&self) -> Option<&str> {
        self.pg_schema.as_ref().map(|(url, _)| url.as_str())
    }
}

impl Drop for SharedDatabase {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg_schema.take() {
            drop_pg_schema_later(url, schema);
        }
    }
}

/// `url` with the schema as its search path.
pub fn pg_url_with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// One response, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `code` of a problem+json body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The pointers of a problem's field errors, in order.
    pub fn pointers(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["pointer"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(pointer, code)` of each field error.
    pub fn field_errors(&self) -> Vec<(String, String)> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        (
                            e["pointer"].as_str().unwrap_or("").to_owned(),
                            e["code"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A request being built: `app.req(Method::PATCH, "/v1/…").json(body).send(200)`.
pub struct Req<'a> {
    app: &'a TestApp,
    builder: reqwest::RequestBuilder,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Replaces the credentials (`None` sends none).
    pub fn key(mut self, key: Option<&str>) -> Self {
        let request = self.builder.build().expect("request builds");
        let mut rebuilt = self
            .app
            .client
            .request(request.method().clone(), request.url().clone());
        for (name, value) in request.headers() {
            if name != reqwest::header::AUTHORIZATION {
                rebuilt = rebuilt.header(name, value);
            }
        }
        if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
            rebuilt = rebuilt.body(body.to_vec());
        }
        if let Some(key) = key {
            rebuilt = rebuilt.bearer_auth(key);
        }
        self.builder = rebuilt;
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.raw("application/json", body.to_string())
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.builder = self
            .builder
            .header("content-type", content_type)
            .body(body.into());
        self
    }

    /// Sends the request and asserts its status.
    pub async fn send(self, expected: u16) -> TestResponse {
        let response = self.send_any().await;
        assert_eq!(
            response.status, expected,
            "unexpected status; body: {}",
            response.text
        );
        response
    }

    /// Sends the request and returns only its status, without reading the body
    /// (for streams).
    pub async fn status_only(self) -> u16 {
        let response = self
            .builder
            .send()
            .await
            .expect("request reaches the server");
        response.status().as_u16()
    }

    pub async fn send_any(self) -> TestResponse {
        let response = self
            .builder
            .send()
            .await
            .expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body is readable");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            text,
            body,
        }
    }
}

impl TestApp {
    /// A server on a fresh store: a SQLite file in a temporary directory, or, when
    /// `ORGD_TEST_DATABASE_URL` names a PostgreSQL database, a fresh schema in it
    /// (dropped when the test ends). The same tests thus run on both stores.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], with user tokens accepted: HS256 with
    /// [`JWT_SECRET`], issuer [`JWT_ISSUER`], audience [`JWT_AUDIENCE`].
    pub async fn spawn_with_users() -> TestApp {
        Self::spawn_with(accept_users).await
    }

    /// A server on a fresh store with its serve configuration adjusted.
    pub async fn spawn_with(configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        Self::spawn_configured(|_| {}, configure).await
    }

    /// A server on a fresh store with its store and serve configurations adjusted.
    pub async fn spawn_configured(
        configure_store: impl FnOnce(&mut StoreConfig),
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (database_url, pg_schema) = match std::env::var("ORGD_TEST_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => {
                let schema = fresh_pg_schema(&url).await;
                let sep = if url.contains('?') { '&' } else { '?' };
                (
                    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}")),
                    Some((url, schema)),
                )
            }
            _ => (None, None),
        };
        let store = StoreConfig {
            data_dir: data_dir.path().to_path_buf(),
            database_url: database_url.map(Into::into),
            database_pool_size: 4,
            org_copies: orgd::store::org_copies::DEFAULT_CAPACITY,
            secrets_key: None,
            secrets_key_file: None,
        };
        let mut store = store;
        configure_store(&mut store);
        let mut serve = ServeConfig::local();
        serve.bootstrap_key = Some(ADMIN_KEY.into());
        configure(&mut serve);
        let server = server::start(&store, &serve).await.expect("server starts");
        TestApp {
            base: format!("http://{}", server.addr),
            admin: ADMIN_KEY.to_owned(),
            data_dir,
            server: Some(server),
            client: reqwest::Client::new(),
            pg_schema,
        }
    }

    /// The PostgreSQL schema this test's server uses, when on PostgreSQL.
    pub fn pg_schema_name(&self) -> Option<String> {
        self.pg_schema.as_ref().map(|(_, schema)| schema.clone())
    }

    /// Whether this test runs on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.pg_schema.is_some()
    }

    /// A URL reaching this test's store directly, behind the server's back: the
    /// SQLite file of the data dir, or the PostgreSQL schema.
    pub fn database_url(&self) -> String {
        match &self.pg_schema {
            Some((url, schema)) => pg_url_with_schema(url, schema),
            None => format!(
                "sqlite://{}",
                self.data_dir.path().join("orgd.db").display()
            ),
        }
    }

    pub fn store(&self) -> &orgd::store::SharedStore {
        &self.server.as_ref().expect("server running").store
    }

    /// A request with the admin key.
    pub fn req(&self, method: Method, path: &str) -> Req<'_> {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        Req { app: self, builder }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.req(Method::GET, path)
    }

    pub fn patch(&self, path: &str, body: &Value) -> Req<'_> {
        self.req(Method::PATCH, path).json(body)
    }

    pub fn post(&self, path: &str, body: &Value) -> Req<'_> {
        self.req(Method::POST, path).json(body)
    }

    /// Creates an organization and returns it.
    pub async fn create_org(&self, body: Value) -> Value {
        self.post("/v1/organizations", &body).send(201).await.body
    }

    /// Creates `{"name": name}` and returns its id.
    pub async fn org_named(&self, name: &str) -> String {
        let org = self.create_org(json!({ "name": name })).await;
        org["id"].as_str().expect("id").to_owned()
    }

    /// A new API key with these scopes (optionally bound to a subtree); returns its secret.
    pub async fn key(&self, scopes: &[&str], org: Option<&str>) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let (_, secret) = orgd::keys::create_key(self.store(), &scopes, org, None)
            .await
            .expect("key created");
        secret.expose().to_owned()
    }

    /// The organization's audit trail.
    pub async fn events(&self, org: &str) -> Vec<Value> {
        let body = self
            .get(&format!("/v1/organizations/{org}/events?limit=200"))
            .send(200)
            .await
            .body;
        body["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Key helpers for tests that need the key's id (to revoke it, or find it in a list).
impl TestApp {
    /// Like [`TestApp::key`], but also returns the key's id (`key_…`).
    pub async fn key_with_id(
        &self,
        scopes: &[&str],
        org: Option<&str>,
        name: Option<&str>,
    ) -> (String, String) {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let (key, secret) =
            orgd::keys::create_key(self.store(), &scopes, org, name.map(str::to_owned))
                .await
                .expect("key created");
        (key.id.to_string(), secret.expose().to_owned())
    }

    /// Revokes a key by id; returns whether an active key was revoked.
    pub async fn revoke_key(&self, id: &str) -> bool {
        let id = orgd::domain::ids::KeyId::parse(id).expect("a key id");
        self.store()
            .revoke_api_key(&id, orgd::domain::time::now())
            .await
            .expect("revoke succeeds")
    }
}

impl TestApp {
    /// A server on the SQLite file of `data_dir`, with its serve configuration
    /// adjusted by `configure` (the admin key is [`ADMIN_KEY`] unless changed).
    pub async fn spawn_in(data_dir: TempDir, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        use clap::Parser;
        let path = data_dir
            .path()
            .to_str()
            .expect("a UTF-8 temp path")
            .to_owned();
        // Parsed like the command line, so fields added to the config keep their defaults.
        let mut store =
            orgd::config::Cli::parse_from(["orgd", "--data-dir", path.as_str(), "migrate"]).store;
        store.database_url = None;
        let mut serve = ServeConfig::local();
        serve.bootstrap_key = Some(ADMIN_KEY.into());
        configure(&mut serve);
        let admin = serve
            .bootstrap_key
            .as_ref()
            .map_or_else(String::new, |k| k.expose().to_owned());
        let server = server::start(&store, &serve).await.expect("server starts");
        TestApp {
            base: format!("http://{}", server.addr),
            admin,
            data_dir,
            server: Some(server),
            client: reqwest::Client::new(),
            pg_schema: None,
        }
    }
}

/// The event context of a write made through the store directly, as an API key.
pub fn key_event_context() -> orgd::domain::event::EventContext {
    use orgd::domain::event::{Actor, ActorKind, EventContext};
    EventContext {
        actor: Actor {
            kind: ActorKind::ApiKey,
            id: "key_test".into(),
        },
        request_id: "req-test".into(),
        now: orgd::domain::time::now(),
    }
}

/// Holds every write to the store back until released: on PostgreSQL by locking
/// the rows of the orgs with the given ids from another connection (so updates of
/// those orgs block, and whatever is queued meanwhile goes out together after),
/// on SQLite by holding the write lock.
pub enum Hold {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Hold {
    pub async fn start(app: &TestApp, org_ids: &[String]) -> Hold {
        use sqlx::Connection;
        let url = app.database_url();
        if app.on_postgres() {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("SELECT id FROM organizations WHERE id = ANY($1) FOR UPDATE")
                .bind(org_ids)
                .fetch_all(&mut conn)
                .await
                .unwrap();
            Hold::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Hold::Sqlite(conn)
        }
    }

    pub async fn release(self) {
        match self {
            Hold::Postgres(mut conn) => {
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            }
            Hold::Sqlite(mut conn) => {
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Stores `org` as created through `store`, with its creation event.
pub async fn store_created(
    store: &dyn orgd::store::Store,
    org: &orgd::domain::org::Organization,
) -> Result<(), orgd::store::StoreError> {
    let event = key_event_context().event(
        orgd::domain::event::EventType::OrganizationCreated,
        org.id,
        1,
        orgd::domain::patch::creation_changes(org),
    );
    store.create_org(org, &event, None, None).await
}

/// `current` with the next version and a new description, written through `store`.
pub async fn describe(
    store: &dyn orgd::store::Store,
    current: &orgd::domain::org::Organization,
    n: u64,
) -> orgd::domain::org::Organization {
    let mut next = current.clone();
    next.version += 1;
    next.description =
        Some(orgd::domain::fields::Text::parse(&format!("v{n}"), 100).expect("a valid text"));
    let event = key_event_context().event(
        orgd::domain::event::EventType::OrganizationUpdated,
        next.id,
        next.version,
        Default::default(),
    );
    store
        .write_org(current, std::sync::Arc::new(next.clone()), &event)
        .await
        .expect("the write commits");
    next
}

/// Three readers read `org` by id through `store` while `writes` updates of it
/// are written one after another through the same store: no read may be older
/// than a write already acknowledged when it began, and no reader may see the
/// version go back. For the copies reads by id are answered from
/// (src/store/org_copies.rs); each reader must have read at least once.
pub async fn race_readers_against_writes(
    store: std::sync::Arc<dyn orgd::store::Store>,
    org: orgd::domain::org::Organization,
    writes: u64,
) {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    let acknowledged = Arc::new(AtomicI64::new(org.version));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, acknowledged, done) = (store.clone(), acknowledged.clone(), done.clone());
            let id = org.id;
            tokio::spawn(async move {
                let (mut last, mut reads) = (0, 0u64);
                while !done.load(Ordering::Acquire) {
                    let floor = acknowledged.load(Ordering::Acquire);
                    let found = store.read_org(&orgd::store::OrgLookup::Id(id)).await;
                    let version = found.expect("the read").expect("the org").version;
                    assert!(
                        version >= floor,
                        "read v{version} after v{floor} was acknowledged"
                    );
                    assert!(version >= last, "read v{version} after reading v{last}");
                    (last, reads) = (version, reads + 1);
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    let mut current = org;
    for n in 1..=writes {
        current = describe(store.as_ref(), &current, n).await;
        acknowledged.store(current.version, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(
            reader.await.expect("the reader ends") > 0,
            "a reader never read"
        );
    }
}

/// Reads `id` through `store` until a read is answered from `copies` (the store's
/// own), and returns that read: the first reads may go to the database while the
/// store has yet to vouch for its copies, and a first miss is not kept.
pub async fn read_from_copy(
    store: &dyn orgd::store::Store,
    copies: &orgd::store::org_copies::OrgCopies,
    id: orgd::domain::ids::OrgId,
) -> orgd::domain::org::Organization {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let hits = copies.hits();
        let found = store.read_org(&orgd::store::OrgLookup::Id(id)).await;
        let org = found.expect("the read").expect("the org exists");
        if copies.hits() > hits {
            return orgd::domain::org::Organization::clone(&org);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no read by id was answered from the copies in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
