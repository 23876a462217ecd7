//! schemathesis, a fuzzer nobody here wrote, against `/openapi.json`
//! (issue 15): every operation, with positive and negative data, each
//! family of routes with the credentials it takes. On SQLite every check
//! runs (status codes, content types, response schemas, negative data
//! refused, authentication not ignored); on PostgreSQL the server-error
//! check. Its pinned version is in `tests/interop/requirements.txt`;
//! `.ci/run` installs it in the virtual environment `MEMBERD_TEST_PYTHON`
//! names.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use common::{Backend, INTERNAL_SECRET, TestApp, spawn_app};
use serde_json::Value;

const PASSWORD: &str = "a long and unusual passphrase 42";

/// `schemathesis` beside `MEMBERD_TEST_PYTHON`.
fn schemathesis() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var("MEMBERD_TEST_PYTHON").ok()?);
    let program = python.parent()?.join("schemathesis");
    program.is_file().then_some(program)
}

/// Who an operation lets in, by the first way its `security` names.
fn family(operation: &Value) -> &'static str {
    let Some(first) = operation["security"][0].as_object() else {
        return "public";
    };
    let has = |scheme: &str| first.contains_key(scheme);
    if first.is_empty() {
        "public"
    } else if has("internalSecret") {
        "internal"
    } else if has("clientKey") {
        "client"
    } else if has("scimBearer") {
        "scim"
    } else if has("bearer") {
        "session"
    } else {
        panic!("no credentials for {first:?}")
    }
}

/// The operation ids of each family.
fn families(spec: &Value) -> BTreeMap<&'static str, Vec<String>> {
    let mut families: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for operations in spec["paths"].as_object().unwrap().values() {
        for operation in operations.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            families.entry(family(operation)).or_default().push(id);
        }
    }
    families
}

/// The headers each family is called with: an internal secret, an API
/// client given every capability, the same client as SCIM's bearer, and an
/// operator's access token.
async fn credentials(app: &TestApp) -> BTreeMap<&'static str, Vec<String>> {
    use memberd::model::Capability;
    let mut client = common::new_client("schemathesis");
    client.capabilities = vec![Capability::Admin, Capability::Check, Capability::Scim];
    let client = app.create_client_with(client).await;
    app.create_account("fuzz", PASSWORD).await;
    let tokens: Value = app.login("fuzz", PASSWORD).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    BTreeMap::from([
        ("public", vec![]),
        (
            "internal",
            vec![format!("X-Internal-Secret: {INTERNAL_SECRET}")],
        ),
        (
            "client",
            vec![
                format!("X-Client-Key: {}", client.client_key),
                format!("X-API-Key: {}", client.api_key),
            ],
        ),
        (
            "scim",
            vec![format!(
                "Authorization: Bearer {}:{}",
                client.client_key, client.api_key
            )],
        ),
        ("session", vec![format!("Authorization: Bearer {access}")]),
    ])
}

/// Runs schemathesis on each family; answers what it reported, for every
/// family that failed.
async fn fuzz(app: &TestApp, program: PathBuf, checks: &'static str) -> Vec<String> {
    let spec = app.get_json("/openapi.json").await;
    let families = families(&spec);
    let credentials = credentials(app).await;
    let schema = app.url("/openapi.json");
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    tokio::task::spawn_blocking(move || {
        let mut failures = Vec::new();
        for (family, operations) in families {
            let mut command = Command::new(&program);
            command
                .arg("--config-file")
                .arg(interop.join("schemathesis.toml"))
                .args(["run", &schema, "--checks", checks])
                .args(["--mode", "all", "--max-examples", "12", "--seed", "15"])
                .args(["--phases", "examples,coverage,fuzzing", "--no-shrink"])
                // One worker: Hypothesis describes its strategies from their
                // source, which races between threads (a runtime error, not a finding).
                .args(["--workers", "1", "--request-timeout", "10"])
                .args(["--suppress-health-check", "all", "--warnings", "off"])
                .env("NO_COLOR", "1");
            for header in &credentials[family] {
                command.args(["--header", header]);
            }
            for operation in &operations {
                command.args(["--include-operation-id", operation]);
            }
            let output = command.output().expect("running schemathesis");
            if !output.status.success() {
                failures.push(format!(
                    "== {family}\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        failures
    })
    .await
    .unwrap()
}

fn installed() -> Option<PathBuf> {
    let program = schemathesis();
    if program.is_none() {
        assert!(
            !common::in_ci(),
            "schemathesis (beside MEMBERD_TEST_PYTHON) is required under CI"
        );
        eprintln!("skipping: schemathesis is not installed (see .ci/run)");
    }
    program
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_sqlite() {
    let Some(program) = installed() else { return };
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let failures = fuzz(&app, program, "all").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_on_postgres() {
    let Some(program) = installed() else { return };
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let failures = fuzz(&app, program, "not_a_server_error").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
