//! memberd's access tokens, located through discovery and verified by
//! libraries nobody here wrote, each with its default validation of JWT
//! access tokens (issue 15): PyJWT, jose and oauth4webapi (RFC 9068's
//! `validateJwtAccessToken`). The scripts and their pinned versions are in
//! `tests/interop/`; `.ci/run` installs them (a virtual environment for
//! PyJWT, `npm ci` for the others).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "a long and unusual passphrase 42";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The Python that has PyJWT: `MEMBERD_TEST_PYTHON` (set by `.ci/run`), else `python3`.
fn python() -> Option<String> {
    let python = std::env::var("MEMBERD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ready = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    ready.then_some(python)
}

fn node_ready() -> bool {
    interop_dir().join("node_modules/jose").is_dir()
        && interop_dir().join("node_modules/oauth4webapi").is_dir()
}

fn verify(program: &str, script: &str, issuer: &str, token: &str) -> String {
    let output = Command::new(program)
        .arg(interop_dir().join(script))
        .args([issuer, "memberd", token])
        .output()
        .unwrap_or_else(|e| panic!("running {program} {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} refused memberd's token:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_jose_and_oauth4webapi_verify_an_access_token_found_through_discovery() {
    let python = python();
    let node = node_ready();
    if python.is_none() || !node {
        assert!(
            !common::in_ci(),
            "PyJWT (MEMBERD_TEST_PYTHON) and tests/interop/node_modules are required under CI"
        );
        eprintln!("skipping: PyJWT or tests/interop/node_modules is missing (see .ci/run)");
        return;
    }
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    app.create_account("rita", PASSWORD).await;
    let tokens: Value = app.login("rita", PASSWORD).await.json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let metadata = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    let issuer = metadata["issuer"].as_str().unwrap().to_owned();

    let python = python.unwrap();
    let token = token.to_owned();
    let subjects = tokio::task::spawn_blocking(move || {
        [
            verify(&python, "verify_pyjwt.py", &issuer, &token),
            verify("node", "verify_jose.mjs", &issuer, &token),
            verify("node", "verify_oauth4webapi.mjs", &issuer, &token),
        ]
    })
    .await
    .unwrap();
    assert_eq!(subjects, ["local:rita"; 3].map(String::from));
}

/// Discovery lists what memberd serves and nothing else; `/me`, named as
/// the userinfo endpoint, answers a top-level `sub`.
#[tokio::test]
async fn discovery_lists_only_what_memberd_serves() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let document = app.get_json(path).await;
        assert_eq!(document["response_types_supported"], json!([]), "{path}");
        for endpoint in ["authorization_endpoint", "token_endpoint"] {
            assert!(document.get(endpoint).is_none(), "{path} lists {endpoint}");
        }
        for url in ["jwks_uri", "userinfo_endpoint"] {
            let url = document[url].as_str().unwrap();
            let path = url
                .strip_prefix(document["issuer"].as_str().unwrap())
                .unwrap();
            let status = app.http.get(app.url(path)).send().await.unwrap().status();
            assert_ne!(status, StatusCode::NOT_FOUND, "{url} is served");
        }
    }
}
