//! A Redis outage, with a Redis this test starts and stops itself (issue 14,
//! fault 3: with Redis down every call waited about 9.4 s and answered 500).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, error_code, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "a long and unusual passphrase 42";

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// `None` when redis-server is not installed (outside CI: skipped).
    fn start(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if !common::in_ci() => {
                eprintln!("skipping: redis-server cannot be started ({e})");
                return None;
            }
            Err(e) => panic!("redis-server is required under CI: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { child, port })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_answers_503_at_once_and_recovers_by_itself() {
    let port = free_port();
    let Some(mut redis) = Redis::start(port) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.redis_url = Some(url);
        s.redis_timeout = memberd::config::DEFAULT_REDIS_TIMEOUT;
        s.cookie_secure = false;
    })
    .await
    else {
        return;
    };
    app.create_account("rita", PASSWORD).await;
    let login = || app.login("rita", PASSWORD);
    let tokens: Value = login().await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let me = || app.http.get(app.url("/me")).bearer_auth(&access).send();
    assert_eq!(me().await.unwrap().status(), StatusCode::OK);

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let r = me().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(error_code(r).await, "dependency_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let r = login().await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        r.text().await.unwrap()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["redis"], "unavailable", "{ready}");
    assert_eq!(ready["database"], "ok", "{ready}");
    // Decisions need no Redis, and rate limits fall back to this instance.
    let r = app
        .internal(reqwest::Method::POST, "/v1/check")
        .json(&json!({"subject": "local:rita", "scope_type": "org", "scope_id": "1", "module": "m", "action": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Back again: memberd reconnects by itself.
    let _redis = Redis::start(port).expect("redis-server starts again");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = login().await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
