//! `/openapi.json` against the running server: every documented operation
//! is served, and no method a path does not document answers on it. Routes
//! are registered only with their documentation (`Api::route`), so every
//! route the server has is in the description.

mod common;

use common::{Backend, spawn_app};
use reqwest::Method;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let spec: Value = response.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["info"]["title"], "memberd");
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 60, "{} paths", paths.len());

    let mut checked = 0;
    for (template, operations) in paths {
        let operations = operations.as_object().unwrap();
        let url = app.url(&concrete(template));
        for method in METHODS {
            let documented = operations.contains_key(&method.to_ascii_lowercase());
            let request = app
                .http
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url);
            let request = if matches!(method, "POST" | "PUT" | "PATCH") {
                request
                    .header("content-type", "application/json")
                    .body("{}")
            } else {
                request
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if documented {
                let op = &operations[&method.to_ascii_lowercase()];
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {template}"
                );
                assert!(op["responses"]["default"].is_object());
                assert!(op["security"].is_array());
                assert!(
                    status != 405 && !body.contains("route_not_found"),
                    "{method} {template} is documented but not served: {status} {body}"
                );
                checked += 1;
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} answers but is not documented: {body}"
                );
            }
        }
        // Path parameters are declared.
        for op in operations.values() {
            let declared = op["parameters"].as_array().map_or(0, Vec::len);
            assert_eq!(declared, template.matches('{').count(), "{template}");
        }
    }
    assert!(checked >= 80, "{checked} operations");

    // The reference page lists them too, and fetches nothing from elsewhere.
    let page = app
        .http
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for template in paths.keys() {
        assert!(
            page.contains(&template.replace('&', "&amp;")),
            "{template} missing from /docs"
        );
    }
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
}
