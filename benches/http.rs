//! `POST /v1/check` over HTTP against `GET /healthz` on the same server, in
//! the same run: the large policy imported with `memberd casbin import`,
//! served by the release binary, loaded by wrk on loopback with keep-alive.
//!
//! `cargo bench --bench http` (needs wrk: `apt-get install wrk`).
//! `MEMBERD_BENCH_SECONDS` sets each run's length (default 10).

mod support;

use std::process::Stdio;
use std::time::Instant;

use support::server::{Server, free_port, memberd, wait_ready, wrk, wrk_script};
use support::{LARGE, MODEL, index, policy_csv, questions};

const CONNECTIONS: usize = 32;
/// Questions cycled through by the check run.
const QUESTIONS: usize = 4096;

fn main() {
    // `cargo test --benches` lists benchmarks; there is nothing to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = std::env::var("MEMBERD_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let dir = tempfile::tempdir().unwrap();
    let csv = policy_csv(&LARGE);
    let model_path = dir.path().join("model.conf");
    let policy_path = dir.path().join("policy.csv");
    std::fs::write(&model_path, MODEL).unwrap();
    std::fs::write(&policy_path, &csv).unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("memberd.db").display());

    let started = Instant::now();
    let status = memberd(&database_url)
        .args(["casbin", "import", "--verify-seconds", "5", "--model"])
        .arg(&model_path)
        .arg("--policy")
        .arg(&policy_path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "memberd casbin import failed");
    println!(
        "imported the large policy in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let port = free_port();
    let _server = Server(
        memberd(&database_url)
            .arg("serve")
            .env("MEMBERD_BIND", format!("127.0.0.1:{port}"))
            .spawn()
            .unwrap(),
    );
    wait_ready(port);

    let index = index(&csv);
    let bodies: Vec<String> = questions(&index, &LARGE, QUESTIONS)
        .iter()
        .map(|q| {
            serde_json::json!({
                "subject": q.sub, "scope_type": "casbin", "scope_id": "default",
                "module": q.module, "action": q.action,
            })
            .to_string()
        })
        .collect();
    let check_script = dir.path().join("check.lua");
    let health_script = dir.path().join("healthz.lua");
    std::fs::write(&check_script, wrk_script("POST", "/v1/check", &bodies)).unwrap();
    std::fs::write(
        &health_script,
        wrk_script("GET", "/healthz", &[String::new()]),
    )
    .unwrap();

    // A short warm-up of each, then the measured runs.
    wrk(port, &health_script, "2", CONNECTIONS, true);
    wrk(port, &check_script, "2", CONNECTIONS, true);
    let health = wrk(port, &health_script, &seconds, CONNECTIONS, true);
    let check = wrk(port, &check_script, &seconds, CONNECTIONS, true);

    println!("wrk -t1 -c{CONNECTIONS} -d{seconds}s, keep-alive, loopback, large policy");
    println!("| route | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for (route, run) in [("GET /healthz", &health), ("POST /v1/check", &check)] {
        println!(
            "| `{route}` | {:.0} | {} | {} |",
            run.requests_per_second, run.p50, run.p99
        );
    }
    println!(
        "POST /v1/check sustains {:.0}% of GET /healthz's requests per second",
        100.0 * check.requests_per_second / health.requests_per_second
    );
}
