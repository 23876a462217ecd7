//! `/metrics` as Prometheus scrapes it: the text format, request counts and
//! latencies per route template, decisions, index size and revision.

mod common;

use common::{Backend, spawn_app};
use reqwest::Method;
use serde_json::json;

/// Every sample line is `name{labels} value` with a number for a value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample has a value");
            (
                series.to_owned(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("not a number: {l}")),
            )
        })
        .collect()
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_requests_decisions_and_the_index() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    app.upsert(json!({"authentik_sub": "ada"})).await;
    let check = json!({"subject": "ada", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"});
    for _ in 0..3 {
        app.internal(Method::POST, "/v1/check")
            .json(&check)
            .send()
            .await
            .unwrap();
    }
    app.snapshot("ada").await;
    app.http
        .get(app.url("/users/ada/no-such-route"))
        .send()
        .await
        .unwrap();

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let samples = samples(&text);

    let checks = r#"memberd_http_requests_total{route="/v1/check",method="POST",status="200"}"#;
    assert!(value(&samples, checks) >= 3.0, "{text}");
    let le_inf = r#"memberd_http_request_duration_seconds_bucket{route="/v1/check",method="POST",status="200",le="+Inf"}"#;
    assert_eq!(value(&samples, le_inf), value(&samples, checks));
    assert!(value(&samples, r#"memberd_checks_total{decision="deny"}"#) >= 3.0);
    assert!(value(&samples, "memberd_snapshots_total") >= 1.0);
    assert_eq!(value(&samples, "memberd_index_users"), 1.0);
    assert_eq!(
        value(&samples, "memberd_revision"),
        app.revision().await as f64
    );
    assert!(value(&samples, "memberd_db_pool_connections") >= 1.0);
    // Paths are not labels: an unmatched one is counted under one series.
    assert!(!text.contains("no-such-route"));
    assert!(text.contains(r#"route="(unmatched)""#));
}
