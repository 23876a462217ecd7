//! The console in a real headless Chromium, driven over WebDriver
//! (chromedriver): sign in with TOTP, create a role, grant it to a user, see
//! the user's permissions change, create an API client and use its key,
//! see the audit entries. Screenshots of the main pages are written to
//! `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); without them the test is skipped, except under `CI=true`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Backend, spawn_app};
use memberd::authn::totp::{Totp, TotpSecret};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// chromedriver and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    shots: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            assert!(!in_ci(), "Chromium and chromedriver are required under CI");
            eprintln!("skipping: install chromium and chromium-driver to drive the console");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap().keep();
        // The flags keep Chromium from reaching for the network it has no access to.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "unhandledPromptBehavior": "ignore",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        let shots =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            driver: child,
            base,
            session,
            http,
            shots,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method, url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            if started.elapsed() > Duration::from_secs(10) {
                self.screenshot("failure").await;
                panic!("no element {css}: {found}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `script` in the page; its value.
    async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await["value"]
            .clone()
    }

    /// Clicks the button whose text is `label` inside `scope` (a CSS
    /// selector), and, when `row` is given, in the table row that mentions it.
    async fn press_where(&self, scope: &str, row: Option<&str>, label: &str) {
        let script = format!(
            "const b = [...document.querySelectorAll({scope:?} + ' button')].find(b => b.textContent.trim() === {label:?} \
               && ({row} === null || (b.closest('tr') && b.closest('tr').textContent.includes({row})))); \
             if (b) {{ b.setAttribute('data-press', '1'); return true; }} return false;",
            row = serde_json::to_string(&row).unwrap()
        );
        let started = Instant::now();
        while self.run(&script).await != json!(true) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no button {label:?} in {scope}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = self.find("[data-press='1']").await;
        // Unmarked before the click: a confirmation it opens must be the next thing the page sees.
        self.run("document.querySelector(\"[data-press='1']\").removeAttribute('data-press')")
            .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn press(&self, scope: &str, label: &str) {
        self.press_where(scope, None, label).await;
    }

    async fn accept_confirmation(&self) {
        let started = Instant::now();
        loop {
            let answer = self
                .call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
                .await;
            if answer["value"].is_null() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no confirmation asked: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the page's text contains `needle`.
    async fn until_text(&self, needle: &str) {
        let started = Instant::now();
        loop {
            let body = self.text("body").await;
            if body.contains(needle) {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                self.screenshot("failure").await;
                panic!("the page never said {needle:?}:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", None).await;
        if let Some(png) = shot["value"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png)
                .unwrap();
            std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("curl")
            .args([
                "-s",
                "-X",
                "DELETE",
                &format!("{}/session/{}", self.base, self.session),
            ])
            .output();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn totp_code(secret: &str, offset: u64) -> String {
    let secret = TotpSecret::from_bytes(
        data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Totp::default().code_at(&secret, now + offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_does_the_daily_tasks_in_the_console() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let admin = app.create_client().await;
    let created = app.http.post(app.url("/admin/accounts"))
        .header("X-Client-Key", &admin.client_key).header("X-API-Key", &admin.api_key)
        .json(&json!({"username": "olga", "password": PASSWORD, "admin": true, "must_change_password": false}))
        .send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    app.upsert(json!({"authentik_sub": "ada", "email": "ada@example.org", "display_name": "Ada"}))
        .await;

    // Sign in, and turn TOTP on with the code the secret gives.
    browser.go(&app.url("/console")).await;
    browser.type_into("input[name=username]", "olga").await;
    browser.type_into("input[name=password]", PASSWORD).await;
    browser.screenshot("01-sign-in").await;
    browser.press("form", "Sign in").await;
    browser.until_text("Users").await;
    browser.go(&app.url("/console#/account")).await;
    browser.press("main", "Set up TOTP").await;
    let secret = browser.text("#totp-secret").await;
    browser.find("#totp-qr").await;
    browser.screenshot("02-totp-enrolment").await;
    browser
        .type_into(
            "form[aria-label='Confirm TOTP'] input[name=password]",
            PASSWORD,
        )
        .await;
    browser
        .type_into("input[name=code]", &totp_code(&secret, 0))
        .await;
    browser.press("main", "Turn on").await;
    browser.until_text("recovery codes").await;
    let codes = browser.text("#recovery-codes").await;
    assert_eq!(codes.lines().count(), 10, "{codes}");

    // Sign out; signing in again asks for the second factor.
    browser.press("header", "Sign out").await;
    browser.type_into("input[name=username]", "olga").await;
    browser.type_into("input[name=password]", PASSWORD).await;
    browser.press("form", "Sign in").await;
    browser.until_text("Second factor").await;
    browser
        .type_into("input[name=code]", &totp_code(&secret, 30))
        .await;
    browser.press("form", "Verify").await;

    // The navigation is the operator's menus: every page the admin role reveals.
    browser.until_text("Audit log").await;
    let pages = browser
        .run("return [...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await;
    assert_eq!(
        pages,
        json!(["Users", "Roles", "Menus", "API clients", "Audit log"])
    );
    browser.screenshot("03-users").await;

    // A role with a permission, granted to Ada.
    browser.go(&app.url("/console#/roles")).await;
    browser
        .type_into(
            "form[aria-label='Create a role'] input[name=name]",
            "auditor",
        )
        .await;
    browser
        .type_into(
            "form[aria-label='Create a role'] input[name=description]",
            "Reads the ledger",
        )
        .await;
    browser
        .press("form[aria-label='Create a role']", "Create role")
        .await;
    browser.until_text("Role auditor").await;
    browser
        .type_into(
            "form[aria-label='Add a permission'] input[name=module]",
            "ledger",
        )
        .await;
    browser
        .type_into(
            "form[aria-label='Add a permission'] input[name=action]",
            "read",
        )
        .await;
    browser
        .press("form[aria-label='Add a permission']", "Add")
        .await;
    browser.until_text("ledger/read").await;
    browser.screenshot("04-role").await;

    browser.go(&app.url("/console#/users?q=ada")).await;
    browser.click("a[href='#/users/ada']").await;
    browser.until_text("User ada").await;
    browser.until_text("Effective permissions").await;
    assert!(!browser.text("main").await.contains("ledger/read"));
    browser.run("document.querySelector(\"form[aria-label='Assign a role'] select[name=role]\").value = 'auditor'").await;
    browser
        .type_into(
            "form[aria-label='Assign a role'] input[name=scope_type]",
            "org",
        )
        .await;
    browser
        .type_into(
            "form[aria-label='Assign a role'] input[name=scope_id]",
            "acme",
        )
        .await;
    browser
        .press("form[aria-label='Assign a role']", "Assign")
        .await;
    browser.until_text("ledger/read in org:acme").await;
    browser.press("main", "why?").await;
    browser.until_text("through auditor held in org:acme").await;
    browser.screenshot("05-user").await;
    let snapshot: Value = app.snapshot("ada").await.json().await.unwrap();
    assert!(snapshot.to_string().contains("ledger"), "{snapshot}");

    // An API client, its key shown once, used like curl would.
    browser.go(&app.url("/console#/clients")).await;
    browser
        .type_into(
            "form[aria-label='Create an API client'] input[name=name]",
            "reporting",
        )
        .await;
    // A new client asks for decisions only; this one also reads.
    browser
        .click("form[aria-label='Create an API client'] input[value=read]")
        .await;
    browser
        .press("form[aria-label='Create an API client']", "Create client")
        .await;
    let client_key = browser.text("#new-client-key").await;
    let api_key = browser.text("#new-api-key").await;
    browser.screenshot("06-clients").await;
    // With curl, as the operator would paste it.
    let used = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("X-Client-Key: {client_key}")])
        .args(["-H", &format!("X-API-Key: {api_key}")])
        .arg(app.url("/admin/roles"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&used.stdout), "200");

    // Disabling asks first, then the key stops working.
    browser
        .press_where("main table", Some(&client_key), "Disable")
        .await;
    browser.accept_confirmation().await;
    browser.until_text("disabled").await;
    let refused = app
        .http
        .get(app.url("/admin/roles"))
        .header("X-Client-Key", &client_key)
        .header("X-API-Key", &api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // The audit log shows it all, by the operator, with the chain intact.
    browser.go(&app.url("/console#/audit")).await;
    browser.until_text("chain intact").await;
    for action in [
        "client.disable",
        "client.create",
        "role.assign",
        "role.permission.set",
        "role.create",
        "totp.enrol",
        "login.success",
    ] {
        browser.until_text(action).await;
    }
    browser.until_text("user local:olga").await;
    browser.screenshot("07-audit").await;

    browser.go(&app.url("/console#/menus")).await;
    browser.until_text("Bind rules to a role").await;
    browser.screenshot("08-menus").await;
    eprintln!("screenshots: {}", browser.shots.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_only_the_pages_their_roles_reveal_and_the_server_refuses_the_rest() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let admin = app.create_client().await;
    let call = |path: &str, body: Value| {
        app.http
            .post(app.url(path))
            .header("X-Client-Key", &admin.client_key)
            .header("X-API-Key", &admin.api_key)
            .json(&body)
    };
    // A helpdesk role: the console's Users page, nothing else, and not memberd/admin.
    call("/admin/roles", json!({"name": "helpdesk"}))
        .send()
        .await
        .unwrap();
    let bound = app
        .http
        .put(app.url("/admin/roles/helpdesk/rules"))
        .header("X-Client-Key", &admin.client_key)
        .header("X-API-Key", &admin.api_key)
        .json(&json!({"rules": ["memberd", "memberd:users"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), StatusCode::OK);
    // Created by an administrator: hank must choose his own password first.
    call(
        "/admin/accounts",
        json!({"username": "hank", "password": PASSWORD}),
    )
    .send()
    .await
    .unwrap();
    call("/admin/users/local:hank/roles", json!({"role": "helpdesk"}))
        .send()
        .await
        .unwrap();

    browser.go(&app.url("/console")).await;
    browser.type_into("input[name=username]", "hank").await;
    browser.type_into("input[name=password]", PASSWORD).await;
    browser.press("form", "Sign in").await;
    browser.until_text("Choose a new password").await;
    browser
        .type_into("input[name=current_password]", PASSWORD)
        .await;
    browser
        .type_into("input[name=new_password]", "a quiet river at dawn")
        .await;
    browser.press("form", "Set password").await;
    browser
        .until_text("Your roles do not allow this page.")
        .await;
    let pages = browser
        .run("return [...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await;
    assert_eq!(pages, json!(["Users"]));
    // Typing another page's address does not get past the server either.
    browser.go(&app.url("/console#/clients")).await;
    browser
        .until_text("administering memberd takes the admin role")
        .await;
    browser.screenshot("09-refused").await;
}
