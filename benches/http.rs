//! `POST /v1/check` over HTTP against `GET /healthz` on the same server, in
//! the same run: the large policy imported with `memberd casbin import`,
//! served by the release binary, loaded by wrk on loopback with keep-alive.
//!
//! `cargo bench --bench http` (needs wrk: `apt-get install wrk`).
//! `MEMBERD_BENCH_SECONDS` sets each run's length (default 10);
//! `MEMBERD_BENCH_BASELINE` names another memberd binary (an older build) to
//! measure in the same run, side by side; `MEMBERD_BENCH_BINARY` one to
//! measure instead of the bench profile's build of this code.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use support::server::{Run, Server, free_port, memberd_at, wait_ready, wrk, wrk_script};
use support::{LARGE, MODEL, index, policy_csv, questions};

const CONNECTIONS: usize = 32;
/// Questions cycled through by the check run.
const QUESTIONS: usize = 4096;

/// A binary serving the large policy, imported by itself into a database
/// of its own (an older build need not read a newer schema).
struct Served {
    name: &'static str,
    port: u16,
    _server: Server,
}

fn serve(name: &'static str, binary: &Path, dir: &Path, model: &Path, policy: &Path) -> Served {
    let database_url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    let started = Instant::now();
    let status = memberd_at(binary, &database_url)
        .args(["casbin", "import", "--verify-seconds", "5", "--model"])
        .arg(model)
        .arg("--policy")
        .arg(policy)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "memberd casbin import failed ({name})");
    println!(
        "{name}: imported the large policy in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = free_port();
    let server = Server(
        memberd_at(binary, &database_url)
            .arg("serve")
            .env("MEMBERD_BIND", format!("127.0.0.1:{port}"))
            .spawn()
            .unwrap(),
    );
    wait_ready(port);
    Served {
        name,
        port,
        _server: server,
    }
}

fn main() {
    // `cargo test --benches` lists benchmarks; there is nothing to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = std::env::var("MEMBERD_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    // Another build of this code instead of the bench profile's (which
    // compiles the dependencies with the dev-dependencies' features), to
    // compare two binaries built the same way.
    let current = std::env::var("MEMBERD_BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_memberd").to_owned());
    let mut binaries: Vec<(&'static str, PathBuf)> = vec![("this build", current.into())];
    if let Ok(baseline) = std::env::var("MEMBERD_BENCH_BASELINE") {
        binaries.push(("baseline", baseline.into()));
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = policy_csv(&LARGE);
    let model_path = dir.path().join("model.conf");
    let policy_path = dir.path().join("policy.csv");
    std::fs::write(&model_path, MODEL).unwrap();
    std::fs::write(&policy_path, &csv).unwrap();
    let servers: Vec<Served> = binaries
        .iter()
        .map(|(name, binary)| serve(name, binary, dir.path(), &model_path, &policy_path))
        .collect();

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

    // A short warm-up of each, then the measured runs: with a baseline,
    // in turn and then in the other order, so that a drift of the
    // machine's speed during the run weighs on both alike.
    for served in &servers {
        wrk(served.port, &health_script, "2", CONNECTIONS, true);
        wrk(served.port, &check_script, "2", CONNECTIONS, true);
    }
    let mut runs: Vec<(&str, Vec<Run>, Vec<Run>)> =
        servers.iter().map(|s| (s.name, vec![], vec![])).collect();
    let rounds = if servers.len() > 1 { 2 } else { 1 };
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let port = servers[i].port;
            runs[i]
                .1
                .push(wrk(port, &health_script, &seconds, CONNECTIONS, true));
            runs[i]
                .2
                .push(wrk(port, &check_script, &seconds, CONNECTIONS, true));
        }
    }

    println!("wrk -t1 -c{CONNECTIONS} -d{seconds}s, keep-alive, loopback, large policy");
    println!("| binary | route | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mean =
        |runs: &[Run]| runs.iter().map(|r| r.requests_per_second).sum::<f64>() / runs.len() as f64;
    for (name, health, check) in &runs {
        for (route, runs) in [("GET /healthz", health), ("POST /v1/check", check)] {
            let p50: Vec<&str> = runs.iter().map(|r| r.p50.as_str()).collect();
            let p99: Vec<&str> = runs.iter().map(|r| r.p99.as_str()).collect();
            println!(
                "| {name} | `{route}` | {:.0} | {} | {} |",
                mean(runs),
                p50.join(" / "),
                p99.join(" / ")
            );
        }
    }
    for (name, health, check) in &runs {
        println!(
            "{name}: POST /v1/check sustains {:.0}% of GET /healthz's requests per second",
            100.0 * mean(check) / mean(health)
        );
    }
    if let [(_, _, current), (_, _, baseline)] = runs.as_slice() {
        println!(
            "this build answers {:.2}x the baseline's checks per second",
            mean(current) / mean(baseline)
        );
    }
}
