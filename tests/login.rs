//! memberd's own login over HTTP: accounts and the password policy, captcha,
//! lockout, TOTP, tokens verified with nothing but the JWKS, refresh
//! rotation, sessions and their revocation, cookies and CSRF. Every test
//! runs with sessions in SQLite, in PostgreSQL, and in Redis.

mod common;

use std::time::Instant;

use common::{Backend, Credentials, TestApp, error_code, spawn_app_with};
use memberd::authn::totp::{Totp, TotpSecret};
use memberd::config::Settings;
use memberd::service::auth::CaptchaMode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy)]
enum Sessions {
    Sqlite,
    Postgres,
    Redis,
}

struct Fixture {
    app: TestApp,
    admin: Credentials,
}

async fn fixture(kind: Sessions, configure: impl FnOnce(&mut Settings)) -> Option<Fixture> {
    let redis = match kind {
        Sessions::Redis => Some(common::redis_url().await?),
        _ => None,
    };
    let backend = match kind {
        Sessions::Postgres => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let app = spawn_app_with(backend, |s| {
        s.redis_url = redis;
        s.login_captcha = CaptchaMode::Never;
        configure(s);
    })
    .await?;
    let admin = app.create_client().await;
    Some(Fixture { app, admin })
}

/// Runs each test with sessions in SQLite, PostgreSQL and Redis.
macro_rules! on_every_session_store {
    ($(async fn $name:ident($kind:ident) $body:block)*) => {
        mod sqlite { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let $kind = Sessions::Sqlite; $body }
        )* }
        mod postgres { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let $kind = Sessions::Postgres; $body }
        )* }
        mod redis { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let $kind = Sessions::Redis; $body }
        )* }
    };
}

impl Fixture {
    /// The actions recorded against `target`, newest first.
    async fn audited(&self, target: &str) -> Vec<String> {
        let page: Value = self
            .admin_request(Method::GET, &format!("/admin/audit?target={target}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_owned())
            .collect()
    }

    fn admin_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .request(method, self.app.url(path))
            .header("X-Client-Key", &self.admin.client_key)
            .header("X-API-Key", &self.admin.api_key)
    }

    async fn create_account(&self, username: &str, password: &str) -> reqwest::Response {
        self.admin_request(Method::POST, "/admin/accounts")
            .json(
                &json!({"username": username, "password": password, "must_change_password": false}),
            )
            .send()
            .await
            .unwrap()
    }

    async fn account(&self, username: &str) {
        let response = self.create_account(username, PASSWORD).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
    }

    async fn login_raw(&self, body: Value) -> reqwest::Response {
        self.app
            .http
            .post(self.app.url("/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.login_raw(json!({"username": username, "password": password}))
            .await
    }

    /// Signs in and answers the token response.
    async fn tokens(&self, username: &str) -> Value {
        let response = self.login(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    fn bearer(&self, method: Method, path: &str, access: &Value) -> reqwest::RequestBuilder {
        self.app
            .http
            .request(method, self.app.url(path))
            .bearer_auth(access["access_token"].as_str().unwrap())
    }

    async fn me_status(&self, tokens: &Value) -> StatusCode {
        self.bearer(Method::GET, "/me", tokens)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.app
            .http
            .post(self.app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn sid_active(&self, sid: &str) -> bool {
        let body: Value = self
            .app
            .internal(Method::GET, &format!("/internal/sessions/{sid}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["active"].as_bool().unwrap()
    }
}

fn claims(tokens: &Value) -> Value {
    let token = tokens["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs in with the password and answers the MFA token.
async fn mfa_challenge(f: &Fixture, username: &str) -> String {
    let body: Value = f.login(username, PASSWORD).await.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

/// Enrols TOTP for the signed-in user and answers its secret and recovery codes.
async fn enrol_totp(f: &Fixture, tokens: &Value) -> (TotpSecret, Vec<String>) {
    let enrolment: Value = f
        .bearer(Method::POST, "/auth/totp/enroll", tokens)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = TotpSecret::from_bytes(
        data_encoding::BASE32_NOPAD
            .decode(enrolment["secret"].as_str().unwrap().as_bytes())
            .unwrap(),
    );
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/memberd:"), "{uri}");
    assert!(
        enrolment["qr_png"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    let code = Totp::default().code_at(&secret, now());
    let confirmed = f
        .bearer(Method::POST, "/auth/totp/confirm", tokens)
        .json(&json!({"password": PASSWORD, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    let body: Value = confirmed.json().await.unwrap();
    let codes: Vec<String> = serde_json::from_value(body["recovery_codes"].clone()).unwrap();
    (secret, codes)
}

on_every_session_store! {

async fn the_password_policy_names_the_rule_that_failed(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    for (password, code) in [
        ("short pass", "password_too_short"),
        ("1qaz2wsx3edc", "password_too_common"),
        ("my name is carol, ok", "password_contains_username"),
        (&*"x".repeat(257), "password_too_long"),
    ] {
        let response = f.create_account("carol", password).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        assert_eq!(error_code(response).await, code);
    }
    f.account("carol").await;
    let again = f.create_account("CAROL", PASSWORD).await;
    assert_eq!(again.status(), StatusCode::CONFLICT, "usernames ignore case");
    assert_eq!(error_code(again).await, "account_exists");
}

async fn a_login_issues_tokens_another_service_verifies_with_the_jwks_alone(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("alice").await;
    let tokens = f.tokens("Alice").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("mrt_"));

    // The other service: the discovery document, the JWKS, a standard JWT library.
    let discovery: Value = f.app.http.get(f.app.url("/.well-known/openid-configuration"))
        .send().await.unwrap().json().await.unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = f.app.http.get(discovery["jwks_uri"].as_str().unwrap())
        .send().await.unwrap().json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    validation.set_audience(&["memberd"]);
    let verified = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the token verifies");
    let c = verified.claims;
    assert_eq!(c["sub"], "local:alice");
    assert_eq!(c["preferred_username"], "alice");
    for claim in ["iss", "aud", "exp", "iat", "jti", "sid", "roles"] {
        assert!(!c[claim].is_null(), "claim {claim} in {c}");
    }
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);

    let me: Value = f.bearer(Method::GET, "/me", &tokens).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["user"]["authentik_sub"], "local:alice");
    assert_eq!(me["totp_enabled"], false);
    assert!(f.sid_active(c["sid"].as_str().unwrap()).await);
}

async fn unknown_users_and_wrong_passwords_look_and_take_the_same(kind) {
    let Some(f) = fixture(kind, |s| s.login_max_failures = 100).await else { return };
    f.account("dave").await;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..6 {
        let started = Instant::now();
        let response = f.login("dave", "not the password at all").await;
        wrong.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(response).await, "invalid_credentials");
        let started = Instant::now();
        let response = f.login(&format!("nobody{i}"), "not the password at all").await;
        unknown.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(response).await, "invalid_credentials");
    }
    wrong.sort();
    unknown.sort();
    let (w, u) = (wrong[3].as_secs_f64(), unknown[3].as_secs_f64());
    // Both run one argon2id verification; without it an unknown user would answer in
    // well under a tenth of the time.
    assert!(u > w * 0.5 && u < w * 2.0, "median wrong password {w:.4}s, unknown user {u:.4}s");
}

async fn captcha_always_required_wrong_expired_and_reused(kind) {
    let Some(f) = fixture(kind, |s| s.login_captcha = CaptchaMode::Always).await else { return };
    f.account("erin").await;
    let issued: Value = f.app.http.get(f.app.url("/auth/captcha")).send().await.unwrap().json().await.unwrap();
    assert!(issued["image"].as_str().unwrap().starts_with("data:image/png;base64,"));
    assert!(issued["captcha_id"].is_string());

    let missing = f.login("erin", PASSWORD).await;
    assert_eq!(error_code(missing).await, "captcha_required");

    // The image is for people; the test plants a captcha whose answer it knows.
    let plant = |id: &str, expires: i64| {
        let store = f.app.store.clone();
        let id = id.to_owned();
        async move {
            use sha2::Digest;
            let digest = memberd::authn::api_key::hex(&sha2::Sha256::digest(b"12345"));
            store.insert_captcha(&id, &digest, expires).await.unwrap();
        }
    };
    let later = now() as i64 + 120;
    plant("c-wrong", later).await;
    let wrong = f.login_raw(json!({"username": "erin", "password": PASSWORD, "captcha_id": "c-wrong", "captcha_answer": "54321"})).await;
    assert_eq!(error_code(wrong).await, "captcha_invalid");
    let retried = f.login_raw(json!({"username": "erin", "password": PASSWORD, "captcha_id": "c-wrong", "captcha_answer": "12345"})).await;
    assert_eq!(error_code(retried).await, "captcha_invalid", "a captcha is good for one try");

    plant("c-expired", now() as i64 - 1).await;
    let expired = f.login_raw(json!({"username": "erin", "password": PASSWORD, "captcha_id": "c-expired", "captcha_answer": "12345"})).await;
    assert_eq!(error_code(expired).await, "captcha_invalid");

    plant("c-good", later).await;
    let good = f.login_raw(json!({"username": "erin", "password": PASSWORD, "captcha_id": "c-good", "captcha_answer": " 12345 "})).await;
    assert_eq!(good.status(), StatusCode::OK);
    let reused = f.login_raw(json!({"username": "erin", "password": PASSWORD, "captcha_id": "c-good", "captcha_answer": "12345"})).await;
    assert_eq!(error_code(reused).await, "captcha_invalid");
}

async fn captcha_after_three_failures(kind) {
    let Some(f) = fixture(kind, |s| s.login_captcha = CaptchaMode::AfterFailures).await else { return };
    f.account("fred").await;
    for _ in 0..3 {
        let response = f.login("fred", "wrong password here").await;
        assert_eq!(error_code(response).await, "invalid_credentials");
    }
    let response = f.login("fred", PASSWORD).await;
    assert_eq!(error_code(response).await, "captcha_required");
}

async fn lockout_after_five_failures_doubles_each_time(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("gina").await;
    for _ in 0..5 {
        assert_eq!(error_code(f.login("gina", "wrong password here").await).await, "invalid_credentials");
    }
    let locked = f.login("gina", PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS, "the right password is refused too");
    let first: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((890..=900).contains(&first), "first lockout {first}s");
    assert_eq!(error_code(locked).await, "too_many_attempts");
    assert_eq!(f.audited("account:gina").await, [vec!["login.lockout"], vec!["login.failure"; 5]].concat());

    // Let the first lockout pass, then earn a second one.
    f.app.store.lock_out("user:gina", memberd::store::Attempt { failures: 0, lockouts: 1 }, 0).await.unwrap();
    let state = f.app.store.throttle("user:gina").await.unwrap();
    assert_eq!(state.locked_until, 0);
    for _ in 0..5 {
        assert_eq!(error_code(f.login("gina", "wrong password here").await).await, "invalid_credentials");
    }
    let again = f.login("gina", PASSWORD).await;
    let second: u64 = again.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&second), "a third lockout lasts 4× the first: {second}s");
}

async fn parallel_wrong_guesses_get_no_more_than_the_limit(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("hank").await;
    let guesses = (0..20).map(|i| {
        let http = f.app.http.clone();
        let url = f.app.url("/auth/login");
        async move {
            let response = http.post(url).json(&json!({"username": "hank", "password": format!("guess number {i:02}")}))
                .send().await.unwrap();
            error_code(response).await
        }
    });
    let codes = futures_util::future::join_all(guesses).await;
    let checked = codes.iter().filter(|c| *c == "invalid_credentials").count();
    let refused = codes.iter().filter(|c| *c == "too_many_attempts").count();
    assert_eq!(checked + refused, 20, "{codes:?}");
    assert!(checked <= 5, "{checked} guesses were checked: {codes:?}");
    assert_eq!(error_code(f.login("hank", PASSWORD).await).await, "too_many_attempts");
}

async fn totp_enrol_login_replay_and_recovery_codes(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("ivy").await;
    let tokens = f.tokens("ivy").await;
    let (secret, recovery) = enrol_totp(&f, &tokens).await;
    assert_eq!(recovery.len(), 10);

    // The confirmation used this step's code: the next step's is accepted (skew), this one is not again.
    let used = Totp::default().code_at(&secret, now());
    let mfa = mfa_challenge(&f, "ivy").await;
    let replay = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": used})).await;
    assert_eq!(error_code(replay).await, "invalid_code", "a code is good once");
    let next = Totp::default().code_at(&secret, now() + 30);
    let ok = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": next})).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let signed_in: Value = ok.json().await.unwrap();
    assert_eq!(f.me_status(&signed_in).await, StatusCode::OK);
    let spent = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": next})).await;
    assert_eq!(error_code(spent).await, "invalid_mfa_token", "the MFA token is single use");

    let mfa = mfa_challenge(&f, "ivy").await;
    let by_recovery = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": recovery[0].to_uppercase()})).await;
    assert_eq!(by_recovery.status(), StatusCode::OK);
    let mfa = mfa_challenge(&f, "ivy").await;
    let again = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": recovery[0]})).await;
    assert_eq!(error_code(again).await, "invalid_code", "a recovery code is good once");
    let me: Value = f.bearer(Method::GET, "/me", &signed_in).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["totp_enabled"], true);
    assert_eq!(me["recovery_codes_left"], 9);

    // Disabling takes the password and a code.
    let wrong = f.bearer(Method::POST, "/auth/totp/disable", &signed_in)
        .json(&json!({"password": "not it at all!!", "code": recovery[1]})).send().await.unwrap();
    assert_eq!(error_code(wrong).await, "wrong_password");
    let off = f.bearer(Method::POST, "/auth/totp/disable", &signed_in)
        .json(&json!({"password": PASSWORD, "code": recovery[1]})).send().await.unwrap();
    assert_eq!(off.status(), StatusCode::NO_CONTENT);
    assert!(f.login("ivy", PASSWORD).await.json::<Value>().await.unwrap()["access_token"].is_string());
}

async fn wrong_codes_count_towards_the_lockout(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("jack").await;
    let tokens = f.tokens("jack").await;
    enrol_totp(&f, &tokens).await;
    let body: Value = f.login("jack", PASSWORD).await.json().await.unwrap();
    let mfa = body["mfa_token"].as_str().unwrap();
    let mut codes = Vec::new();
    for i in 0..6 {
        let response = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": format!("00000{i}")})).await;
        codes.push(error_code(response).await);
    }
    // A right password is no failure: five wrong codes reach the limit of five.
    assert_eq!(&codes[..5], ["invalid_code"; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| c == "too_many_attempts"), "{codes:?}");
}

// Regression (issue 13, finding 10): logins waiting at the TOTP step counted
// as failures, so five right passwords without a code locked the account.
async fn logins_waiting_for_the_code_do_not_lock_the_account(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("lena").await;
    let tokens = f.tokens("lena").await;
    let (secret, _) = enrol_totp(&f, &tokens).await;
    for _ in 0..7 {
        let body: Value = f.login("lena", PASSWORD).await.json().await.unwrap();
        assert_eq!(body["mfa_required"], true, "{body}");
    }
    let mfa = mfa_challenge(&f, "lena").await;
    let code = Totp::default().code_at(&secret, now() + 30);
    let response = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": code})).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
}

// Regression (issue 13, finding 7): an account disabled after its password
// step finished the TOTP step with the old mfa_token and got a session.
async fn a_disabled_account_cannot_finish_the_totp_step(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("otto").await;
    let tokens = f.tokens("otto").await;
    let (secret, _) = enrol_totp(&f, &tokens).await;
    let mfa = mfa_challenge(&f, "otto").await;
    let disabled = f.admin_request(Method::POST, "/admin/accounts/otto/disable").send().await.unwrap();
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    let code = Totp::default().code_at(&secret, now() + 30);
    let response = f.post_json("/auth/login/totp", json!({"mfa_token": mfa, "code": code})).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// Regression (issue 13, finding 9): `/auth/password` answered 403 to any
// number of wrong current passwords: an oracle for a stolen session.
async fn wrong_current_passwords_are_throttled_and_audited(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("pia").await;
    let tokens = f.tokens("pia").await;
    let mut codes = Vec::new();
    for _ in 0..7 {
        let wrong = f.bearer(Method::POST, "/auth/password", &tokens)
            .json(&json!({"current_password": "not the right one", "new_password": "a brand new passphrase"}))
            .send().await.unwrap();
        codes.push(error_code(wrong).await);
    }
    assert_eq!(&codes[..5], ["wrong_password"; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| c == "too_many_attempts"), "{codes:?}");
    let audited = f.audited("account:pia").await;
    assert!(audited.iter().filter(|a| *a == "login.failure").count() >= 5, "{audited:?}");
}

// Regression (issue 13, finding 9): a session alone could bind a second factor.
async fn turning_totp_on_takes_the_password(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("quin").await;
    let tokens = f.tokens("quin").await;
    let enrolment: Value = f.bearer(Method::POST, "/auth/totp/enroll", &tokens)
        .send().await.unwrap().json().await.unwrap();
    let secret = TotpSecret::from_bytes(data_encoding::BASE32_NOPAD.decode(enrolment["secret"].as_str().unwrap().as_bytes()).unwrap());
    let code = Totp::default().code_at(&secret, now());
    let without = f.bearer(Method::POST, "/auth/totp/confirm", &tokens)
        .json(&json!({"code": code})).send().await.unwrap();
    assert_eq!(without.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let wrong = f.bearer(Method::POST, "/auth/totp/confirm", &tokens)
        .json(&json!({"password": "not the right one", "code": code})).send().await.unwrap();
    assert_eq!(error_code(wrong).await, "wrong_password");
    let right = f.bearer(Method::POST, "/auth/totp/confirm", &tokens)
        .json(&json!({"password": PASSWORD, "code": code})).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
}

async fn refresh_rotates_and_a_reused_token_revokes_the_session(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("kate").await;
    let first = f.tokens("kate").await;
    let refreshed = f.post_json("/auth/refresh", json!({"refresh_token": first["refresh_token"]})).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let second: Value = refreshed.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(claims(&second)["sid"], claims(&first)["sid"], "the same session, renewed");
    assert_eq!(f.me_status(&second).await, StatusCode::OK);

    let reused = f.post_json("/auth/refresh", json!({"refresh_token": first["refresh_token"]})).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(reused).await, "refresh_token_reused");
    let after = f.post_json("/auth/refresh", json!({"refresh_token": second["refresh_token"]})).await;
    assert_eq!(error_code(after).await, "invalid_token", "the whole session is gone");
    assert_eq!(f.me_status(&second).await, StatusCode::UNAUTHORIZED);
    assert!(!f.sid_active(claims(&second)["sid"].as_str().unwrap()).await);

    let bogus = f.post_json("/auth/refresh", json!({"refresh_token": "mrt_nonsense"})).await;
    assert_eq!(error_code(bogus).await, "invalid_token");
}

async fn logout_and_admin_revocation_refuse_the_access_token_at_once(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("liam").await;
    let a = f.tokens("liam").await;
    let b = f.tokens("liam").await;
    let c = f.tokens("liam").await;

    let listed: Value = f.bearer(Method::GET, "/auth/sessions", &a).send().await.unwrap().json().await.unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(sessions.iter().all(|s| s["ip"] == "127.0.0.1" && s["created_at"].is_string() && s["last_used_at"].is_string()));

    let logout = f.bearer(Method::POST, "/auth/logout", &a).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let refused = f.bearer(Method::GET, "/me", &a).send().await.unwrap();
    assert_eq!(error_code(refused).await, "session_revoked");

    // Revoking one's own other session.
    let b_sid = claims(&b)["sid"].as_str().unwrap().to_owned();
    let deleted = f.bearer(Method::DELETE, &format!("/auth/sessions/{b_sid}"), &c).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.me_status(&b).await, StatusCode::UNAUTHORIZED);

    // An administrator lists and revokes.
    let listed: Value = f.admin_request(Method::GET, "/admin/users/local:liam/sessions").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    let c_sid = claims(&c)["sid"].as_str().unwrap().to_owned();
    let revoked = f.admin_request(Method::DELETE, &format!("/admin/users/local:liam/sessions/{c_sid}")).send().await.unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.me_status(&c).await, StatusCode::UNAUTHORIZED);
    assert!(!f.sid_active(&c_sid).await);

    // Logins and revocations are in the audit log, each revocation by whoever made it.
    let records: Value = f.admin_request(Method::GET, "/admin/audit?target=user:local:liam").send().await.unwrap().json().await.unwrap();
    let seen: Vec<(String, String)> = records["records"].as_array().unwrap().iter()
        .map(|r| (r["action"].as_str().unwrap().to_owned(), r["actor"]["kind"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("session.revoke", "client"), ("session.revoke", "user"), ("session.revoke", "user"),
        ("login.success", "user"), ("login.success", "user"), ("login.success", "user"),
    ].iter().map(|(a, k)| (a.to_string(), k.to_string())).collect();
    assert_eq!(seen[..6], expected[..], "{records}");
}

async fn disabling_a_user_ends_every_session(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("mona").await;
    let a = f.tokens("mona").await;
    let b = f.tokens("mona").await;
    let disabled = f.admin_request(Method::POST, "/admin/accounts/mona/disable").send().await.unwrap();
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.me_status(&a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(f.me_status(&b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(f.login("mona", PASSWORD).await).await, "invalid_credentials");
    f.admin_request(Method::POST, "/admin/accounts/mona/enable").send().await.unwrap();
    let c = f.tokens("mona").await;
    // Disabled as a user, by subject, too. Another system's upsert may not
    // reach a local account's subject (issue 13: the namespace is memberd's).
    let upsert = f.app.upsert(json!({"authentik_sub": "local:mona", "is_active": false})).await;
    assert_eq!(upsert.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.me_status(&c).await, StatusCode::OK);
    let disabled = f.admin_request(Method::POST, "/admin/users/local:mona/disable").send().await.unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(f.me_status(&c).await, StatusCode::UNAUTHORIZED);
}

async fn password_change_and_admin_reset(kind) {
    let Some(f) = fixture(kind, |_| {}).await else { return };
    f.account("nora").await;
    let tokens = f.tokens("nora").await;
    let wrong = f.bearer(Method::POST, "/auth/password", &tokens)
        .json(&json!({"current_password": "not the right one", "new_password": "a brand new passphrase"}))
        .send().await.unwrap();
    assert_eq!(error_code(wrong).await, "wrong_password");
    let weak = f.bearer(Method::POST, "/auth/password", &tokens)
        .json(&json!({"current_password": PASSWORD, "new_password": "short"}))
        .send().await.unwrap();
    assert_eq!(error_code(weak).await, "password_too_short");

    let reset = f.admin_request(Method::POST, "/admin/accounts/nora/password")
        .json(&json!({"password": "temporary passphrase 1"})).send().await.unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.me_status(&tokens).await, StatusCode::UNAUTHORIZED, "a reset signs the user out");
    let login = f.login("nora", "temporary passphrase 1").await;
    let temp: Value = login.json().await.unwrap();
    let other: Value = f.login("nora", "temporary passphrase 1").await.json().await.unwrap();
    assert_eq!(temp["password_change_required"], true);
    let blocked = f.bearer(Method::GET, "/auth/sessions", &temp).send().await.unwrap();
    assert_eq!(error_code(blocked).await, "password_change_required");
    assert_eq!(f.me_status(&temp).await, StatusCode::OK);
    let changed = f.bearer(Method::POST, "/auth/password", &temp)
        .json(&json!({"current_password": "temporary passphrase 1", "new_password": "my own passphrase now"}))
        .send().await.unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.me_status(&other).await, StatusCode::UNAUTHORIZED, "other sessions end");
    assert_eq!(f.me_status(&temp).await, StatusCode::OK, "this one goes on");
    let renewed: Value = f.post_json("/auth/refresh", json!({"refresh_token": temp["refresh_token"]})).await.json().await.unwrap();
    assert!(renewed.get("password_change_required").is_none(), "{renewed}");
    assert_eq!(f.bearer(Method::GET, "/auth/sessions", &renewed).send().await.unwrap().status(), StatusCode::OK);
}

async fn cookies_need_the_csrf_token_for_changes(kind) {
    let Some(f) = fixture(kind, |s| s.cookie_secure = false).await else { return };
    f.account("olga").await;
    let response = f.login_raw(json!({"username": "olga", "password": PASSWORD, "use_cookies": true})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let set: Vec<String> = response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let body: Value = response.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "tokens stay out of reach of scripts");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let find = |name: &str| set.iter().find(|c| c.starts_with(&format!("{name}="))).cloned().unwrap();
    let access = find("memberd_access");
    assert!(access.contains("HttpOnly") && access.contains("SameSite=Strict"), "{access}");
    assert!(find("memberd_csrf").contains("SameSite=Strict"));
    let pair = |c: &str| c.split(';').next().unwrap().to_owned();
    let cookie_header = format!("{}; {}", pair(&access), pair(&find("memberd_csrf")));

    let me = f.app.http.get(f.app.url("/me")).header("cookie", &cookie_header).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK, "reading needs no CSRF token");
    let refresh_cookie = pair(&find("memberd_refresh"));
    let refresh_header = format!("{refresh_cookie}; {}", pair(&find("memberd_csrf")));
    let refresh_forged = f.app.http.post(f.app.url("/auth/refresh")).header("cookie", &refresh_header)
        .json(&json!({})).send().await.unwrap();
    assert_eq!(error_code(refresh_forged).await, "csrf_failed");
    let refreshed = f.app.http.post(f.app.url("/auth/refresh")).header("cookie", &refresh_header)
        .header("x-csrf-token", &csrf).json(&json!({})).send().await.unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert!(refreshed.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("memberd_refresh=mrt_")));
    let forged = f.app.http.post(f.app.url("/auth/logout")).header("cookie", &cookie_header).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(forged).await, "csrf_failed");
    let logout = f.app.http.post(f.app.url("/auth/logout")).header("cookie", &cookie_header)
        .header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    let secure = fixture(kind, |_| {}).await.unwrap();
    secure.account("olga").await;
    let response = secure.login_raw(json!({"username": "olga", "password": PASSWORD, "use_cookies": true})).await;
    assert!(response.headers().get_all("set-cookie").iter().all(|c| c.to_str().unwrap().contains("; Secure")));
}

}

#[tokio::test]
async fn tokens_of_another_issuer_or_tampered_are_refused() {
    let Some(f) = fixture(Sessions::Sqlite, |_| {}).await else {
        return;
    };
    f.account("pete").await;
    let tokens = f.tokens("pete").await;
    let token = tokens["access_token"].as_str().unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    use base64::Engine as _;
    let mut payload = claims(&tokens);
    payload["sub"] = "local:someone-else".into();
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let response = f
        .app
        .http
        .get(f.app.url("/me"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, "invalid_token");
    let none = f.app.http.get(f.app.url("/me")).send().await.unwrap();
    assert_eq!(error_code(none).await, "missing_token");
}

mod embedded {
    use super::*;
    use memberd::authn::Secret;
    use memberd::authn::frontend::{FrontendCipher, FrontendClaims, FrontendTokens};

    async fn app_with(cipher: FrontendCipher, secret: &str, public: &[&str]) -> Option<Fixture> {
        let secret = Secret::new(secret);
        let public: Vec<_> = public
            .iter()
            .map(|p| memberd::model::PathPattern::parse(*p).unwrap())
            .collect();
        fixture(Sessions::Sqlite, move |s| {
            s.frontend_secret = Some(secret);
            s.frontend_cipher = cipher;
            s.public_paths = public;
        })
        .await
    }

    async fn me_with(f: &Fixture, token: &str) -> reqwest::Response {
        f.app
            .http
            .get(f.app.url("/me"))
            .header("x-frontend-token", token)
            .send()
            .await
            .unwrap()
    }

    fn sealed(secret: &str, cipher: FrontendCipher, sub: &str, exp: i64) -> String {
        FrontendTokens::new(&Secret::new(secret), cipher)
            .unwrap()
            .seal(&FrontendClaims {
                sub: sub.into(),
                exp,
            })
    }

    const GCM_SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[tokio::test]
    async fn an_embedded_token_names_the_user_and_every_failure_looks_alike() {
        let Some(f) = app_with(FrontendCipher::Gcm, GCM_SECRET, &[]).await else {
            return;
        };
        f.app
            .upsert(json!({"authentik_sub": "emb-1", "email": "e@example.org"}))
            .await;
        let later = now() as i64 + 300;
        let token = sealed(GCM_SECRET, FrontendCipher::Gcm, "emb-1", later);
        let me: Value = me_with(&f, &token).await.json().await.unwrap();
        assert_eq!(me["source"], "embedded");
        assert_eq!(me["user"]["authentik_sub"], "emb-1");
        let by_query = f
            .app
            .http
            .get(f.app.url(&format!("/me?frontend_token={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(by_query.status(), StatusCode::OK);

        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let other_key = "ff".repeat(32);
        let failures = [
            tampered,
            sealed(GCM_SECRET, FrontendCipher::Gcm, "emb-1", now() as i64 - 1),
            sealed(GCM_SECRET, FrontendCipher::Gcm, "nobody-here", later),
            sealed(&other_key, FrontendCipher::Gcm, "emb-1", later),
            "garbage".into(),
        ];
        for token in failures {
            let response = me_with(&f, &token).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_token");
            assert_eq!(body["error"]["message"], "the token is not valid");
        }
        f.app
            .upsert(json!({"authentik_sub": "emb-1", "is_active": false}))
            .await;
        assert_eq!(
            me_with(&f, &token).await.status(),
            StatusCode::UNAUTHORIZED,
            "a disabled user"
        );
        let none = f.app.http.get(f.app.url("/me")).send().await.unwrap();
        assert_eq!(error_code(none).await, "missing_token");
    }

    #[tokio::test]
    async fn cbc_mode_takes_only_authenticated_tokens() {
        let secret = "ab".repeat(64);
        let Some(f) = app_with(FrontendCipher::CbcHmacSha256, &secret, &[]).await else {
            return;
        };
        f.app.upsert(json!({"authentik_sub": "emb-2"})).await;
        let later = now() as i64 + 300;
        let good = sealed(&secret, FrontendCipher::CbcHmacSha256, "emb-2", later);
        assert_eq!(me_with(&f, &good).await.status(), StatusCode::OK);
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let bytes = engine.decode(&good).unwrap();
        let unmacked = engine.encode(&bytes[..bytes.len() - 32]);
        assert_eq!(
            me_with(&f, &unmacked).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn public_paths_answer_without_a_token() {
        let Some(f) = app_with(FrontendCipher::Gcm, GCM_SECRET, &["/me"]).await else {
            return;
        };
        let me: Value = f
            .app
            .http
            .get(f.app.url("/me"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me, json!({"authenticated": false}));
    }
}

#[tokio::test]
async fn an_address_is_throttled_across_usernames() {
    let Some(f) = fixture(Sessions::Sqlite, |_| {}).await else {
        return;
    };
    f.account("quinn").await;
    // 20 failures from one address, none reaching a username's own limit.
    for i in 0..20 {
        let response = f
            .login(&format!("guess{}", i / 4), "wrong password here")
            .await;
        assert_eq!(
            error_code(response).await,
            "invalid_credentials",
            "attempt {i}"
        );
    }
    let blocked = f.login("quinn", PASSWORD).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(blocked).await, "too_many_attempts");
}

#[tokio::test]
async fn successful_logins_do_not_use_up_the_address() {
    let Some(f) = fixture(Sessions::Sqlite, |_| {}).await else {
        return;
    };
    f.account("rita").await;
    for _ in 0..25 {
        assert_eq!(f.login("rita", PASSWORD).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_client_hanging_up_does_not_leave_attempts_taken() {
    let Some(f) = fixture(Sessions::Sqlite, |_| {}).await else {
        return;
    };
    f.account("sam").await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(2))
        .build()
        .unwrap();
    for _ in 0..8 {
        let _ = impatient
            .post(f.app.url("/auth/login"))
            .json(&json!({"username": "sam", "password": PASSWORD}))
            .send()
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let address = f.app.store.throttle("ip:127.0.0.1").await.unwrap();
    assert_eq!(
        address.failures, 0,
        "every abandoned login settled its attempt"
    );
    assert_eq!(f.login("sam", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn operators_with_the_admin_role_administer_with_their_session() {
    let Some(f) = fixture(Sessions::Sqlite, |s| s.cookie_secure = false).await else {
        return;
    };
    let created = f
        .admin_request(Method::POST, "/admin/accounts")
        .json(&json!({"username": "boss", "password": PASSWORD, "admin": true, "must_change_password": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    f.account("clerk").await;

    let boss = f.tokens("boss").await;
    let listed = f
        .bearer(Method::GET, "/admin/accounts", &boss)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let disabled = f
        .bearer(Method::POST, "/admin/accounts/clerk/disable", &boss)
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);

    f.admin_request(Method::POST, "/admin/accounts/clerk/enable")
        .send()
        .await
        .unwrap();
    let clerk = f.tokens("clerk").await;
    let refused = f
        .bearer(Method::GET, "/admin/accounts", &clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(refused).await, "forbidden");

    // The console's cookie needs the CSRF token for changes here too.
    let response = f
        .login_raw(json!({"username": "boss", "password": PASSWORD, "use_cookies": true}))
        .await;
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
        .filter(|c| !c.starts_with("memberd_refresh"))
        .collect();
    let csrf = response.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = cookies.join("; ");
    let url = f.app.url("/admin/accounts/clerk/disable");
    let forged = f
        .app
        .http
        .post(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(forged).await, "csrf_failed");
    let ok = f
        .app
        .http
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn auth_routes_are_rate_limited_per_address() {
    let Some(f) = fixture(Sessions::Sqlite, |s| s.auth_rate_limit_per_minute = 5).await else {
        return;
    };
    for _ in 0..5 {
        let captcha = f
            .app
            .http
            .get(f.app.url("/auth/captcha"))
            .send()
            .await
            .unwrap();
        assert_eq!(captcha.status(), StatusCode::OK);
    }
    let limited = f
        .app
        .http
        .get(f.app.url("/auth/captcha"))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(error_code(limited).await, "rate_limited");
    let jwks = f
        .app
        .http
        .get(f.app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), StatusCode::OK, "only /auth/* is limited");
}
