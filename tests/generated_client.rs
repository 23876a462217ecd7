//! A client generated from `/openapi.json` by a mainstream generator
//! (openapi-python-client, pinned in `tests/interop/requirements.txt`)
//! runs the README's walk-through: upsert, grant, check, the snapshot with
//! its ETag, revoke (`tests/interop/generated_client.py`). What the
//! description promises is what a generated client trusts; a status, header
//! or body it does not describe breaks that client here (issue 15).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, INTERNAL_SECRET, spawn_app};

/// `openapi-python-client` beside `MEMBERD_TEST_PYTHON`.
fn generator() -> Option<(PathBuf, PathBuf)> {
    let python = PathBuf::from(std::env::var("MEMBERD_TEST_PYTHON").ok()?);
    let program = python.parent()?.join("openapi-python-client");
    program.is_file().then_some((python, program))
}

/// Runs it to success; answers what it printed.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("starting it");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?}\n{printed}");
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_runs_the_walkthrough() {
    let Some((python, program)) = generator() else {
        assert!(
            !common::in_ci(),
            "openapi-python-client (beside MEMBERD_TEST_PYTHON) is required under CI"
        );
        eprintln!("skipping: openapi-python-client is not installed (see .ci/run)");
        return;
    };
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let mut client = common::new_client("generated");
    client.capabilities = vec![
        memberd::model::Capability::GrantsWrite,
        memberd::model::Capability::Read,
    ];
    let credentials = app.create_client_with(client).await;
    let spec = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    let spec = spec.bytes().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let description = work.path().join("openapi.json");
    std::fs::write(&description, &spec).unwrap();
    let url = app.url("");
    tokio::task::spawn_blocking(move || {
        let work = work.path();
        // The generator formats what it writes with ruff, from the same
        // virtual environment.
        let path = format!(
            "{}:{}",
            program.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let generated = run(Command::new(&program)
            .args(["generate", "--meta", "none", "--path"])
            .arg(&description)
            .arg("--output-path")
            .arg(work.join("memberd_client"))
            .env("PATH", path));
        // A warning is a part of the description the generator could not
        // read and left out of the client.
        assert!(!generated.contains("Warning"), "{generated}");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/generated_client.py");
        run(Command::new(&python)
            .arg(script)
            .env("PYTHONPATH", work)
            .env("MEMBERD_URL", url.trim_end_matches('/'))
            .env("MEMBERD_SECRET", INTERNAL_SECRET)
            .env("MEMBERD_CLIENT_KEY", &credentials.client_key)
            .env("MEMBERD_API_KEY", &credentials.api_key));
    })
    .await
    .unwrap();
}
