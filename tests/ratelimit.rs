//! Rate limits answered 429 with Retry-After: an API client's own limit,
//! shared by two instances through Redis; TOTP tries per user.

mod common;

use common::{Backend, new_client, spawn_app_with};
use memberd::app::Application;
use memberd::service::auth::CaptchaMode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_limit_holds_across_instances_through_redis() {
    let Some(redis) = common::redis_url().await else {
        return;
    };
    let Some(a) = spawn_app_with(Backend::Sqlite, |s| s.redis_url = Some(redis)).await else {
        return;
    };
    let second = Application::build(a.settings.clone()).await.unwrap();
    let b = format!("http://{}", second.local_addr());
    tokio::spawn(second.run_until(std::future::pending()));

    let mut limited = new_client("limited");
    limited.rate_limit_per_minute = Some(4);
    let creds = a.create_client_with(limited).await;
    let list = |base: &str| {
        a.http
            .get(format!("{base}/admin/roles"))
            .header("X-Client-Key", &creds.client_key)
            .header("X-API-Key", &creds.api_key)
    };
    for base in [&a.base, &b, &a.base, &b] {
        assert_eq!(list(base).send().await.unwrap().status(), StatusCode::OK);
    }
    // Four were allowed in all: the fifth is refused on either instance.
    for base in [&a.base, &b] {
        let refused = list(base).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15).contains(&retry), "retry after {retry}s");
        assert_eq!(common::error_code(refused).await, "rate_limited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_codes_are_limited_per_user() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| s.login_captcha = CaptchaMode::Never).await
    else {
        return;
    };
    let admin = app.create_client().await;
    let created = app
        .http
        .post(app.url("/admin/accounts"))
        .header("X-Client-Key", &admin.client_key)
        .header("X-API-Key", &admin.api_key)
        .json(&json!({"username": "tess", "password": PASSWORD, "must_change_password": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let tokens: Value = app
        .http
        .post(app.url("/auth/login"))
        .json(&json!({"username": "tess", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let enrolled = app
        .http
        .request(Method::POST, app.url("/auth/totp/enroll"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), StatusCode::OK);

    let confirm = || {
        app.http
            .post(app.url("/auth/totp/confirm"))
            .bearer_auth(access)
            .json(&json!({"password": PASSWORD, "code": "000000"}))
    };
    let mut wrong = 0;
    loop {
        let response = confirm().send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(common::error_code(response).await, "too_many_attempts");
            break;
        }
        assert_eq!(common::error_code(response).await, "invalid_code");
        wrong += 1;
        assert!(
            wrong <= memberd::service::auth::TOTP_TRIES_PER_MINUTE as usize,
            "never limited"
        );
    }
    assert_eq!(
        wrong,
        memberd::service::auth::TOTP_TRIES_PER_MINUTE as usize
    );
}
