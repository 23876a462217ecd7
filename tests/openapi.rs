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

    // Generated clients name their functions by operationId: one each, an
    // identifier in any language.
    let mut ids = std::collections::BTreeSet::new();
    for operation in paths
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
    {
        let id = operation["operationId"].as_str().unwrap();
        assert!(
            id.starts_with(|c: char| c.is_ascii_lowercase())
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{id}"
        );
        assert!(ids.insert(id), "{id} twice");
    }
    assert!(ids.contains("post_admin_roles_name_permissions"), "{ids:?}");

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
            let declared = op["parameters"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["in"] == "path").count());
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

/// Every operation's declared capability is the one enforced: a client given
/// every other (but `admin`) is refused with `missing_capability`, and a
/// client given just that one is not (issue 13: capabilities on every route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_asks_for_the_capability_it_declares() {
    use memberd::model::Capability;
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let spec = app.get_json("/openapi.json").await;
    let mut clients = std::collections::HashMap::new();
    for capability in Capability::ALL {
        let only = app
            .create_client_with(memberd::service::clients::NewClient {
                capabilities: vec![capability],
                ..common::new_client("only")
            })
            .await;
        let others = app
            .create_client_with(memberd::service::clients::NewClient {
                capabilities: Capability::ALL
                    .into_iter()
                    .filter(|c| *c != capability && *c != Capability::Admin)
                    .collect(),
                ..common::new_client("others")
            })
            .await;
        clients.insert(capability.as_str().to_owned(), (only, others));
    }
    let send = |method: &str, template: &str, creds: &common::Credentials| {
        let request = app.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            app.url(&concrete(template)),
        );
        let request = if template.starts_with("/scim/") {
            request.header(
                "authorization",
                format!("Bearer {}:{}", creds.client_key, creds.api_key),
            )
        } else {
            request
                .header("X-Client-Key", &creds.client_key)
                .header("X-API-Key", &creds.api_key)
        };
        let request = if matches!(method, "POST" | "PUT" | "PATCH") {
            request
                .header("content-type", "application/json")
                .body("{}")
        } else {
            request
        };
        request.send()
    };
    let mut checked = 0;
    for (template, operations) in spec["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let Some(capability) = op["x-memberd-capability"].as_str() else {
                continue;
            };
            let method = method.to_ascii_uppercase();
            let (only, others) = &clients[capability];
            let refused = send(&method, template, others).await.unwrap();
            let status = refused.status().as_u16();
            let body = refused.text().await.unwrap();
            assert!(
                status == 403 && body.contains("capability"),
                "{method} {template} served a client without {capability}: {status} {body}"
            );
            let allowed = send(&method, template, only).await.unwrap();
            let body = allowed.text().await.unwrap();
            assert!(
                !body.contains("missing_capability") && !body.contains("was not given"),
                "{method} {template} refused a client with {capability}: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "{checked} operations carry a capability");
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Issue 15: bodies were bare `{"type":"object"}`, so a generated client had
/// nothing to type against. The walk-through's operations (upsert, grant,
/// revoke, check, batch, snapshot, changes) are typed from the Rust types
/// that serve them, and every reference resolves.
#[tokio::test]
async fn the_walkthroughs_operations_are_typed_and_every_reference_resolves() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let spec = app.get_json("/openapi.json").await;
    let typed = [
        (
            "/internal/users/upsert-by-sub",
            "post",
            Some("UserUpsert"),
            "200",
            "User",
        ),
        (
            "/admin/permissions/grant",
            "post",
            Some("GrantRequest"),
            "201",
            "GrantResponse",
        ),
        (
            "/admin/permissions/grant",
            "post",
            Some("GrantRequest"),
            "200",
            "GrantResponse",
        ),
        (
            "/admin/permissions/revoke",
            "post",
            Some("RevokeRequest"),
            "200",
            "RevokeResponse",
        ),
        (
            "/v1/check",
            "post",
            Some("CheckBody"),
            "200",
            "CheckResponse",
        ),
        (
            "/v1/check/batch",
            "post",
            Some("BatchBody"),
            "200",
            "BatchResponse",
        ),
        (
            "/internal/permissions/{authentik_sub}/snapshot",
            "get",
            None,
            "200",
            "Snapshot",
        ),
        ("/internal/changes", "get", None, "200", "ChangesBody"),
    ];
    let schema_ref = |name: &str| format!("#/components/schemas/{name}");
    for (path, method, request, status, response) in typed {
        let op = &spec["paths"][path][method];
        if let Some(request) = request {
            assert_eq!(
                op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                schema_ref(request),
                "{method} {path}"
            );
            assert_eq!(op["requestBody"]["required"], true, "{method} {path}");
        }
        assert_eq!(
            op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
            schema_ref(response),
            "{method} {path} {status}"
        );
    }
    // Every operation answers a named type (JSON, SCIM's JSON), or text
    // under its media type, or nothing where nothing is the answer; every
    // body it takes is a named type.
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let typed = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(status, _)| status.starts_with('2') || status.starts_with('3'))
                .all(
                    |(status, r)| match r.get("content").and_then(Value::as_object) {
                        None => matches!(status.as_str(), "204" | "303" | "304"),
                        Some(content) => content.iter().all(|(media, body)| {
                            if media.ends_with("json") {
                                body["schema"]["$ref"].is_string()
                            } else {
                                media.starts_with("text/") && body["schema"]["type"] == "string"
                            }
                        }),
                    },
                );
            let answers = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .any(|status| status.starts_with('2') || status.starts_with('3'));
            assert!(typed && answers, "{method} {path} answers no named type");
            assert!(
                op["responses"].get("200").is_none()
                    || op["responses"]["200"].get("content").is_some(),
                "{method} {path} answers 200 without saying what"
            );
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (media, body) in content {
                    assert!(
                        body["schema"]["$ref"].is_string(),
                        "{method} {path} takes {media} of no named type"
                    );
                }
            }
        }
    }
    let check = &spec["components"]["schemas"]["CheckBody"];
    assert_eq!(
        check["additionalProperties"], false,
        "unknown fields are refused"
    );
    let mut all = Vec::new();
    refs(&spec, &mut all);
    for target in all {
        let name = target.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            spec["components"]["schemas"].get(name).is_some(),
            "{target} is not defined"
        );
    }
}
