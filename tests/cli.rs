//! The `memberd` binary as a newcomer uses it: `serve`, `migrate`, `client …`,
//! on SQLite and PostgreSQL, with the CLI acting while the server runs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestDb, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_memberd");

fn memberd(db: &TestDb) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("MEMBERD_INTERNAL_SECRETS")
        .env_remove("MEMBERD_CONFIG")
        .env_remove("MEMBERD_ENVIRONMENT")
        .env_remove("MEMBERD_REDIS_URL")
        .env_remove("MEMBERD_KEY_ENCRYPTION_KEY")
        .env("MEMBERD_DATABASE_URL", &db.url);
    command
}

fn run(mut command: Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("running memberd")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// `memberd serve` as a child process, its standard error collected.
struct Server {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(db: &TestDb) -> Server {
        Self::start_with(db, &[])
    }

    fn start_with(db: &TestDb, envs: &[(&str, &str)]) -> Server {
        let mut command = memberd(db);
        for (name, value) in envs {
            command.env(name, value);
        }
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
            .env("MEMBERD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting memberd serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["message"] == "memberd listening" {
                        let _ = tx.send(event["addr"].as_str().unwrap().to_owned());
                    }
                }
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("memberd serve did not start:\n{}", stderr.lock().unwrap()));
        Server {
            child,
            base: format!("http://{addr}"),
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The development secret from the first-start banner, printed once
    /// the server listens (so waited for, a little).
    fn printed_secret(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains("X-Internal-Secret: ")) {
                return Some(line.split("X-Internal-Secret: ").nth(1)?.trim().to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn walkthrough(backend: common::Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = Server::start(&db);
    let secret = server
        .printed_secret()
        .expect("a development secret is printed on first start");
    assert!(secret.starts_with("mbs_"));
    let http = reqwest::Client::new();

    // An API client created by the CLI while the server runs.
    let mut create = memberd(&db);
    create.args([
        "client",
        "create",
        "--name",
        "back office",
        "--rate-limit",
        "100",
        "--capability",
        "grants:write",
        "--capability",
        "read",
        "--json",
    ]);
    let created = stdout_json(&run(create));
    let (client_key, api_key) = (
        created["client_key"].as_str().unwrap().to_owned(),
        created["api_key"].as_str().unwrap().to_owned(),
    );
    assert!(api_key.starts_with("mbr_"));
    assert_eq!(created["client"]["rate_limit_per_minute"], 100);

    let r = http
        .post(server.url("/internal/users/upsert-by-sub"))
        .header("X-Internal-Secret", &secret)
        .json(&json!({"authentik_sub": "ada", "email": "ada@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let grant = || {
        http.post(server.url("/admin/permissions/grant"))
            .header("X-Client-Key", &client_key)
            .header("X-API-Key", &api_key)
            .json(&json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"}))
            .send()
    };
    assert_eq!(grant().await.unwrap().status(), StatusCode::CREATED);
    let r = http
        .get(server.url("/internal/permissions/ada/snapshot"))
        .header("X-Internal-Secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["permissions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Disabled from the CLI, in another process: refused at once.
    let mut disable = memberd(&db);
    disable.args(["client", "disable", &client_key]);
    assert!(run(disable).status.success());
    let r = grant().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "client_disabled");

    // Listing shows the client, never its key or hash.
    let mut list = memberd(&db);
    list.args(["client", "list", "--json"]);
    let output = run(list);
    let listed = stdout_json(&output);
    assert_eq!(listed[0]["client_key"], client_key.as_str());
    assert_eq!(listed[0]["status"], "disabled");
    assert!(listed[0]["last_used_at"].is_string());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains(&api_key) && !text.contains("api_key_hash") && !text.contains("sha256:")
    );

    let log = server.stop();
    assert!(
        log.contains("\"status\":201"),
        "requests are logged:\n{log}"
    );
    assert!(!log.contains(&api_key), "the API key appears in the log");
    assert_eq!(
        log.matches(&secret).count(),
        1,
        "the secret appears only in its first-start banner"
    );

    // A restart keeps the generated secret and does not print it again.
    let server = Server::start(&db);
    assert_eq!(server.printed_secret(), None);
    let r = http
        .get(server.url("/internal/permissions/ada/snapshot"))
        .header("X-Internal-Secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn walkthrough_on_sqlite() {
    walkthrough(common::Backend::Sqlite).await;
}

#[tokio::test]
async fn walkthrough_on_postgres() {
    walkthrough(common::Backend::Postgres).await;
}

#[tokio::test]
async fn migrate_on_both_backends() {
    for backend in [common::Backend::Sqlite, common::Backend::Postgres] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        for _ in 0..2 {
            let mut migrate = memberd(&db);
            migrate.arg("migrate");
            let output = run(migrate);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                "migrations applied"
            );
        }
    }
}

#[tokio::test]
async fn client_commands_refuse_bad_input() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "client",
                "create",
                "--name",
                "x",
                "--allow-ip",
                "10.0.0.300",
            ],
            "--allow-ip",
        ),
        (
            &[
                "client",
                "create",
                "--name",
                "x",
                "--allow-origin",
                "example.org",
            ],
            "--allow-origin",
        ),
        (
            &["client", "create", "--name", "x", "--allow-path", "admin"],
            "--allow-path",
        ),
        (
            &[
                "client",
                "create",
                "--name",
                "x",
                "--expires-at",
                "tomorrow",
            ],
            "--expires-at",
        ),
        (
            &[
                "client",
                "create",
                "--name",
                "x",
                "--expires-at",
                "2001-01-01T00:00:00Z",
            ],
            "future",
        ),
        (&["client", "disable", "mbc_nope"], "no client"),
    ];
    for (args, expected) in cases {
        let mut command = memberd(&db);
        command.args(args);
        let output = run(command);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let mut list = memberd(&db);
    list.args(["client", "list", "--json"]);
    assert_eq!(stdout_json(&run(list)), json!([]), "nothing was created");
}

#[tokio::test]
async fn rotate_prints_a_new_key() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let mut create = memberd(&db);
    create.args([
        "client", "create", "--name", "x", "--hash", "bcrypt", "--json",
    ]);
    let created = stdout_json(&run(create));
    let mut rotate = memberd(&db);
    rotate.args([
        "client",
        "rotate",
        created["client_key"].as_str().unwrap(),
        "--json",
    ]);
    let rotated = stdout_json(&run(rotate));
    assert_eq!(rotated["client_key"], created["client_key"]);
    assert_ne!(rotated["api_key"], created["api_key"]);
}

#[tokio::test]
async fn production_refuses_to_start_without_a_secret() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let mut serve = memberd(&db);
    serve
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("MEMBERD_ENVIRONMENT", "production");
    let output = run(serve);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MEMBERD_INTERNAL_SECRETS"));
}

/// Regression (issue 13, finding 8): with only a JWKS URL, provider tokens
/// were accepted from any issuer and for any audience.
#[tokio::test]
async fn provider_tokens_need_an_issuer_and_an_audience_unless_waived_by_name() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let serve = |envs: &[(&str, &str)]| {
        let mut serve = memberd(&db);
        serve
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("MEMBERD_OIDC_JWKS_URL", "http://127.0.0.1:9/jwks")
            .env_remove("MEMBERD_OIDC_ISSUER")
            .env_remove("MEMBERD_OIDC_AUDIENCE")
            .env_remove("MEMBERD_OIDC_ALLOW_ANY_ISSUER")
            .env_remove("MEMBERD_OIDC_ALLOW_ANY_AUDIENCE");
        for (k, v) in envs {
            serve.env(k, v);
        }
        run(serve)
    };
    let output = serve(&[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MEMBERD_OIDC_ISSUER"));
    let output = serve(&[("MEMBERD_OIDC_ALLOW_ANY_ISSUER", "true")]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MEMBERD_OIDC_AUDIENCE"));
}

#[tokio::test]
async fn unknown_config_keys_are_errors() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memberd.toml");
    std::fs::write(&path, "bnid = \"127.0.0.1:0\"\n").unwrap();
    let mut serve = memberd(&db);
    serve.args(["serve"]).env("MEMBERD_CONFIG", &path);
    let output = run(serve);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bnid"));
}

/// `memberd admin create` with the password on standard input.
fn admin_create(db: &TestDb, username: &str, password: &str) -> Output {
    use std::io::Write as _;
    let mut command = memberd(db);
    command
        .args([
            "admin",
            "create",
            "--username",
            username,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("running memberd admin create");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

/// Signs in with the operator passphrase: the access token and `/me`.
async fn sign_in(http: &reqwest::Client, server: &Server, username: &str) -> (String, Value) {
    let tokens: Value = http
        .post(server.url("/auth/login"))
        .json(&json!({"username": username, "password": "a long operator passphrase"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let me: Value = http
        .get(server.url("/me"))
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (access_token, me)
}

async fn operator_walkthrough(backend: common::Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let weak = admin_create(&db, "root", "password123");
    assert!(!weak.status.success());
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert!(stderr.contains("password_too_short"), "{stderr}");
    let common = admin_create(&db, "root", "1qaz2wsx3edc");
    assert!(String::from_utf8_lossy(&common.stderr).contains("password_too_common"));

    let created = admin_create(&db, "Root", "a long operator passphrase");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(String::from_utf8_lossy(&created.stdout).contains("created operator root"));
    let twice = admin_create(&db, "root", "a long operator passphrase");
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already exists"));

    let server = Server::start(&db);
    let http = reqwest::Client::new();
    let (access_token, me) = sign_in(&http, &server, "root").await;
    assert_eq!(me["roles"], json!(["admin"]), "{me}");
    assert!(
        !server.log().contains("a long operator passphrase"),
        "passwords never reach the log"
    );

    let mut rotate = memberd(&db);
    rotate.args(["keys", "rotate"]);
    let rotated = run(rotate);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let mut list = memberd(&db);
    list.args(["keys", "list"]);
    let listed = String::from_utf8_lossy(&run(list).stdout).to_string();
    assert_eq!(listed.lines().count(), 3, "a header and two keys: {listed}");
    // The token signed by the retired key still verifies.
    let again = http
        .get(server.url("/me"))
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    server.stop();
}

#[tokio::test]
async fn operator_walkthrough_on_sqlite() {
    operator_walkthrough(common::Backend::Sqlite).await;
}

#[tokio::test]
async fn operator_walkthrough_on_postgres() {
    operator_walkthrough(common::Backend::Postgres).await;
}

#[tokio::test]
async fn production_refuses_to_start_without_a_key_encryption_key() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let mut serve = memberd(&db);
    serve
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("MEMBERD_ENVIRONMENT", "production")
        .env("MEMBERD_INTERNAL_SECRETS", "a-production-secret-0123456789");
    let output = run(serve);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MEMBERD_KEY_ENCRYPTION_KEY"));
}

#[tokio::test]
async fn a_database_from_a_newer_memberd_is_refused() {
    for backend in [common::Backend::Sqlite, common::Backend::Postgres] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        let mut migrate = memberd(&db);
        migrate.arg("migrate");
        assert!(run(migrate).status.success());
        // What a newer memberd would have left behind: a migration this one lacks.
        use sqlx::Connection as _;
        let insert = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                      VALUES (9999, 'from the future', TRUE, {checksum}, 0)";
        match backend {
            common::Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                let sql = insert.replace("{checksum}", "X'00'");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            common::Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                let sql = insert.replace("{checksum}", "'\\x00'::bytea");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
        let mut serve = memberd(&db);
        serve.args(["serve", "--bind", "127.0.0.1:0"]);
        let output = run(serve);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("migrated by a newer version"), "{stderr}");
    }
}

#[tokio::test]
async fn audit_verify_passes_then_names_a_hand_edited_record() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    for name in ["first", "second", "third"] {
        let mut create = memberd(&db);
        create.args(["client", "create", "--name", name, "--json"]);
        stdout_json(&run(create));
    }
    let mut rotate = memberd(&db);
    rotate.args(["keys", "rotate"]);
    assert!(run(rotate).status.success());
    let mut verify = memberd(&db);
    verify.args(["audit", "verify"]);
    let output = run(verify);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "audit chain intact: 4 records"
    );

    // The CLI's changes are the CLI's doing.
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT actor_kind, action FROM audit_log ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let expected = [
        "client.create",
        "client.create",
        "client.create",
        "keys.rotate",
    ];
    assert_eq!(recorded, expected.map(|a| ("cli".to_owned(), a.to_owned())));

    sqlx::raw_sql("UPDATE audit_log SET action = 'client.delete' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut verify = memberd(&db);
    verify.args(["audit", "verify"]);
    let output = run(verify);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("audit chain broken: record 2"), "{stderr}");
}

/// Two `memberd serve` processes on one PostgreSQL: a grant made through one
/// is answered by the other, exactly with `min_revision`, and within
/// moments without it (PostgreSQL's notifications, not the 1 s poll).
#[tokio::test]
async fn two_server_processes_on_one_postgres_agree() {
    let Some(db) = TestDb::create(common::Backend::Postgres).await else {
        return;
    };
    let a = Server::start(&db);
    let secret = a
        .printed_secret()
        .expect("the first start prints the secret");
    let b = Server::start(&db);
    let mut create = memberd(&db);
    create.args([
        "client",
        "create",
        "--name",
        "back office",
        "--capability",
        "grants:write",
        "--json",
    ]);
    let created = stdout_json(&run(create));
    let (client_key, api_key) = (
        created["client_key"].as_str().unwrap().to_owned(),
        created["api_key"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let upsert = http
        .post(a.url("/internal/users/upsert-by-sub"))
        .header("X-Internal-Secret", &secret)
        .json(&json!({"authentik_sub": "ivy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upsert.status(), StatusCode::OK);

    let mut latencies = Vec::new();
    for i in 0..20 {
        let module = format!("module{i}");
        let granted: Value = http
            .post(a.url("/admin/permissions/grant"))
            .header("X-Client-Key", &client_key)
            .header("X-API-Key", &api_key)
            .json(&json!({"authentik_sub": "ivy", "scope_type": "org", "scope_id": "1", "module": module, "action": "read"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let started = Instant::now();
        let check = json!({"subject": "ivy", "scope_type": "org", "scope_id": "1", "module": module, "action": "read"});
        loop {
            let answer: Value = http
                .post(b.url("/v1/check"))
                .header("X-Internal-Secret", &secret)
                .json(&check)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if answer["allowed"] == true {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "instance B did not see grant {i} within 500 ms"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
        let mut exact = check.clone();
        exact["min_revision"] = granted["revision"].clone();
        let answer: Value = http
            .post(b.url("/v1/check"))
            .header("X-Internal-Secret", &secret)
            .json(&exact)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["allowed"], true);
    }
    latencies.sort();
    eprintln!(
        "grant on A visible on B after: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    drop(b);
    drop(a);
}

/// Regression (issue 14, fault 1): SIGTERM on PostgreSQL never finished,
/// the follower's LISTEN connection held while the pool waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_stops_within_the_grace_period_and_keeps_acknowledged_writes() {
    for backend in [common::Backend::Postgres, common::Backend::Sqlite] {
        let Some(db) = TestDb::create(backend).await else {
            return;
        };
        let mut server = Server::start_with(&db, &[("MEMBERD_SHUTDOWN_GRACE_SECONDS", "3")]);
        let secret = server
            .printed_secret()
            .expect("the first start prints the secret");
        let http = reqwest::Client::new();
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let request = http
                    .post(server.url("/internal/users/upsert-by-sub"))
                    .header("X-Internal-Secret", &secret)
                    .json(&json!({"authentik_sub": format!("load-{i}")}));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i * 5)).await;
                    let ok = request
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == StatusCode::OK);
                    (i, ok)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(server.child.id().to_string())
            .status();
        let mut acknowledged = Vec::new();
        for write in writes {
            let (i, ok) = write.await.unwrap();
            if ok {
                acknowledged.push(i);
            }
        }
        let exited = loop {
            if server.child.try_wait().unwrap().is_some() {
                break true;
            }
            if started.elapsed() > Duration::from_secs(10) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            exited,
            "{backend:?}: still running 10 s after SIGTERM (grace 3 s):\n{}",
            server.log()
        );
        assert!(server.log().contains("stopped"), "{}", server.log());
        let store = memberd::store::Store::connect(&db.url).await.unwrap();
        for i in acknowledged {
            let sub = memberd::model::AuthentikSub::parse(format!("load-{i}")).unwrap();
            assert!(
                store.user_by_sub(&sub).await.unwrap().is_some(),
                "{backend:?}: acknowledged write {i} lost"
            );
        }
        store.close().await;
    }
}

/// Issue 14 (the first hour): without a terminal, `admin create` failed
/// with "No such device or address" and no word of `--password-stdin`.
#[tokio::test]
async fn admin_create_without_a_terminal_says_how_to_pass_the_password() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let mut create = memberd(&db);
    create.args(["admin", "create", "--username", "root"]).env(
        "MEMBERD_INTERNAL_SECRETS",
        "a-secret-of-enough-length-0123456789",
    );
    // setsid: no controlling terminal, as under systemd or in a container.
    let mut detached = Command::new("setsid");
    detached.arg(create.get_program()).args(create.get_args());
    for (key, value) in create.get_envs() {
        match value {
            Some(value) => detached.env(key, value),
            None => detached.env_remove(key),
        };
    }
    let output = run(detached);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--password-stdin"), "{stderr}");
}

/// Issue 14 (the first hour): the development secret was generated and kept
/// before the port was bound, so a first start that failed kept a secret
/// nobody had seen, and no later start showed one.
#[tokio::test]
async fn a_first_start_that_fails_does_not_use_up_the_development_secret() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut serve = memberd(&db);
    serve.args(["serve", "--bind", &taken.local_addr().unwrap().to_string()]);
    let output = run(serve);
    assert!(!output.status.success(), "the port is taken");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("X-Internal-Secret"), "{stderr}");

    let server = Server::start(&db);
    let secret = server
        .printed_secret()
        .expect("the first start that listens prints the secret");
    let r = reqwest::Client::new()
        .post(server.url("/v1/check"))
        .header("X-Internal-Secret", &secret)
        .json(&json!({"subject": "a", "scope_type": "org", "scope_id": "1", "module": "m", "action": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Issue 14 (the first hour): a PostgreSQL database that does not exist
/// printed PostgreSQL's message twice and no word of creating it.
#[tokio::test]
async fn a_missing_postgres_database_is_one_line_that_says_to_create_it() {
    let Some(db) = TestDb::create(common::Backend::Postgres).await else {
        return;
    };
    let (base, _) = db.url.rsplit_once('/').unwrap();
    let missing = format!("{base}/memberd_missing_{}", uuid::Uuid::new_v4().simple());
    let mut migrate = memberd(&db);
    migrate.arg("migrate").env("MEMBERD_DATABASE_URL", &missing);
    let output = run(migrate);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert_eq!(line.matches("does not exist").count(), 1, "{stderr}");
    assert!(line.contains("createdb"), "{stderr}");
}

/// Issue 14 (the first hour, found running the README): an operator created
/// by the CLI while the server runs, signing in at once, got a token and a
/// `/me` with no roles: the server follows the CLI's change within a second,
/// and the login came first. Five in a row, so that the old code fails.
#[tokio::test]
async fn an_operator_created_while_the_server_runs_signs_in_with_the_admin_role_at_once() {
    let Some(db) = TestDb::create(common::Backend::Sqlite).await else {
        return;
    };
    let server = Server::start(&db);
    let http = reqwest::Client::new();
    for n in 0..5 {
        let username = format!("operator{n}");
        let created = admin_create(&db, &username, "a long operator passphrase");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        let (_, me) = sign_in(&http, &server, &username).await;
        assert_eq!(me["roles"], json!(["admin"]), "{me}");
    }
}
