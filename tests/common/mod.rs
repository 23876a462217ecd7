//! Test harness: a fresh database per test on SQLite or PostgreSQL, and the
//! real server on a random port against it.
//!
//! PostgreSQL is found through `MEMBERD_TEST_POSTGRES_URL` (default: the
//! local server as user postgres). When it cannot be reached, its tests are
//! skipped with a message, except under `CI=true`, where that is a failure.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use memberd::app::Application;
use memberd::authn::Secret;
use memberd::authn::api_key::HashAlgorithm;
use memberd::authn::hashing::HashPool;
use memberd::config::Settings;
use memberd::model::{Capability, ClientName};
use memberd::service::clients::{ClientAdmin, NewClient};
use memberd::store::Store;
use sqlx::Connection;

pub const INTERNAL_SECRET: &str = "test-internal-secret-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("MEMBERD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// `None` when PostgreSQL is unavailable outside CI (the test then skips).
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("memberd.db").display());
                Some(TestDb {
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
                    Ok(conn) => conn,
                    Err(e) if !in_ci() => {
                        eprintln!("skipping: PostgreSQL at {admin_url} is unavailable ({e})");
                        return None;
                    }
                    Err(e) => panic!("PostgreSQL at {admin_url} is required under CI: {e}"),
                };
                let name = format!("memberd_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("creating a test database");
                let _ = conn.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(base, _)| base);
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }
}

impl TestDb {
    /// An SQLite database in `dir`, which the caller owns (a filesystem of
    /// the test's own, say).
    pub fn sqlite_in(dir: &std::path::Path) -> TestDb {
        TestDb {
            url: format!("sqlite://{}", dir.join("memberd.db").display()),
            _dir: None,
            pg_name: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A migrated store on a fresh database, for the shared store suite.
pub struct TestStore {
    pub store: Store,
    pub db: TestDb,
}

pub async fn test_store(backend: Backend) -> Option<TestStore> {
    let db = TestDb::create(backend).await?;
    let store = memberd::app::open_store(&db.url)
        .await
        .expect("opening the test store");
    Some(TestStore { store, db })
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub settings: Settings,
    pub db: TestDb,
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the server with test settings, adjusted by `configure`.
pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let db = TestDb::create(backend).await?;
    let mut settings = Settings::with_database(&db.url);
    settings.bind = "127.0.0.1:0".parse().unwrap();
    settings.internal_secrets = vec![Secret::new(INTERNAL_SECRET)];
    // Many suites share two cores: a slow Redis answer must not read as an
    // outage (the outage test stops its Redis, which fails at once).
    settings.redis_timeout = Duration::from_secs(2);
    configure(&mut settings);
    if settings.redis_url.is_some()
        && settings.redis_prefix == memberd::config::DEFAULT_REDIS_PREFIX
    {
        // Tests share one Redis: each app counts and keeps sessions apart.
        settings.redis_prefix = format!("memberd-test-{}:", uuid::Uuid::new_v4().simple());
    }
    Some(spawn_on(db, settings).await)
}

pub async fn spawn_on(db: TestDb, settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("building the app");
    let addr = app.local_addr();
    tokio::spawn(app.run_until(std::future::pending()));
    let store = memberd::app::open_store(&db.url)
        .await
        .expect("opening the store");
    TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        store,
        settings,
        db,
    }
}

/// A client's credentials, as handed to an operator.
#[derive(Clone)]
pub struct Credentials {
    pub client_key: String,
    pub api_key: String,
}

pub fn new_client(name: &str) -> NewClient {
    NewClient {
        name: ClientName::parse(name).unwrap(),
        allowed_origins: vec![],
        allowed_ips: vec![],
        allowed_paths: vec![],
        expires_at: None,
        rate_limit_per_minute: None,
        // The suites drive every admin route; narrower clients are made
        // where a test is about capabilities.
        capabilities: vec![Capability::Admin],
        hash: HashAlgorithm::Sha256,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client_admin(&self) -> ClientAdmin {
        ClientAdmin::new(self.store.clone(), HashPool::standard())
    }

    pub async fn create_client_with(&self, new: NewClient) -> Credentials {
        let (client, key) = self
            .client_admin()
            .create(new)
            .await
            .expect("creating a client");
        Credentials {
            client_key: client.client_key,
            api_key: key.expose().to_owned(),
        }
    }

    pub async fn create_client(&self) -> Credentials {
        self.create_client_with(new_client("tests")).await
    }

    pub fn internal(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-Internal-Secret", INTERNAL_SECRET)
    }

    pub fn admin(&self, creds: &Credentials, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("X-Client-Key", &creds.client_key)
            .header("X-API-Key", &creds.api_key)
    }

    /// A local account made by an admin API client, its password final.
    pub async fn create_account(&self, username: &str, password: &str) {
        let admin = self.create_client().await;
        let created = self
            .admin(&admin, "/admin/accounts")
            .json(&serde_json::json!({
                "username": username, "password": password, "must_change_password": false,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    }

    /// The JSON body `GET path` answers, whatever its status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /auth/login`.
    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn upsert(&self, body: serde_json::Value) -> reqwest::Response {
        self.internal(reqwest::Method::POST, "/internal/users/upsert-by-sub")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn snapshot(&self, sub: &str) -> reqwest::Response {
        self.internal(
            reqwest::Method::GET,
            &format!("/internal/permissions/{sub}/snapshot"),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn revision(&self) -> i64 {
        self.store.current_revision().await.unwrap().0
    }
}

/// The `error.code` of an error response, checking the envelope on the way.
pub async fn error_code(response: reqwest::Response) -> String {
    let header_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json().await.expect("an error body is JSON");
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert_eq!(error["request_id"].as_str(), header_id.as_deref(), "{body}");
    error["code"].as_str().expect("error.code").to_owned()
}

/// Runs each test once on SQLite and once on PostgreSQL, with `$setup(backend)`
/// providing its fixture: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($setup:ident; $(async fn $name:ident($arg:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($arg) = $setup(common::Backend::Sqlite).await else { return };
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($arg) = $setup(common::Backend::Postgres).await else { return };
                    $body
                }
            )*
        }
    };
}

/// Redis for the session-store tests, from `MEMBERD_TEST_REDIS_URL` (default
/// the local server). `None` when it cannot be reached outside CI; under
/// `CI=true` that is a failure.
pub async fn redis_url() -> Option<String> {
    let url =
        std::env::var("MEMBERD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = match redis::Client::open(url.as_str()) {
        Ok(client) => match client.get_multiplexed_async_connection().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok(),
            Err(_) => false,
        },
        Err(_) => false,
    };
    match (reachable, in_ci()) {
        (true, _) => Some(url),
        (false, false) => {
            eprintln!("skipping: Redis at {url} is unavailable");
            None
        }
        (false, true) => panic!("Redis at {url} is required under CI"),
    }
}

/// Runs `sql` on the test database behind the server's back.
pub async fn tamper(url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
    }
}
