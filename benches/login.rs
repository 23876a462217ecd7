//! A login storm against the release binary: password logins per second at
//! the OWASP argon2id cost, `POST /v1/check`'s latency before and during the
//! storm, and the server's peak memory.
//!
//! `cargo bench --bench login` (needs wrk: `apt-get install wrk`).
//! `MEMBERD_BENCH_SECONDS` sets each run's length (default 10).

mod support;

use std::io::Write as _;
use std::process::Stdio;

use support::server::{Run, Server, free_port, memberd, memory, wait_ready, wrk, wrk_script};

const ACCOUNTS: usize = 16;
const PASSWORD: &str = "bench operator passphrase";
const LOGIN_CONNECTIONS: usize = 16;
/// Check loads run against the storm: moderate, then saturating.
const CHECK_CONNECTIONS: [usize; 2] = [2, 8];

fn row(what: &str, run: &Run) {
    println!(
        "| {what} | {:.1} | {} | {} |",
        run.requests_per_second, run.p50, run.p99
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = std::env::var("MEMBERD_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("memberd.db").display());

    for i in 0..ACCOUNTS {
        let mut child = memberd(&database_url)
            .args(["admin", "create", "--password-stdin", "--username"])
            .arg(format!("op{i:02}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        assert!(
            child.wait().unwrap().success(),
            "memberd admin create failed"
        );
    }

    let port = free_port();
    let server = Server(
        memberd(&database_url)
            .arg("serve")
            .env("MEMBERD_BIND", format!("127.0.0.1:{port}"))
            .env("MEMBERD_LOGIN_CAPTCHA", "never")
            // The storm comes from one address: lift the per-address limit on /auth/*.
            .env("MEMBERD_AUTH_RATE_LIMIT", "1000000")
            .spawn()
            .unwrap(),
    );
    wait_ready(port);
    let pid = server.0.id();
    let (_, rss_idle) = memory(pid);

    let logins: Vec<String> = (0..ACCOUNTS)
        .map(|i| {
            serde_json::json!({"username": format!("op{i:02}"), "password": PASSWORD}).to_string()
        })
        .collect();
    let checks: Vec<String> = (0..ACCOUNTS)
        .flat_map(|i| {
            ["read", "write", "delete"].map(|action| {
                serde_json::json!({
                    "subject": format!("local:op{i:02}"), "scope_type": "org", "scope_id": "1",
                    "module": "memberd", "action": action,
                })
                .to_string()
            })
        })
        .collect();
    let login_script = dir.path().join("login.lua");
    let check_script = dir.path().join("check.lua");
    std::fs::write(&login_script, wrk_script("POST", "/auth/login", &logins)).unwrap();
    std::fs::write(&check_script, wrk_script("POST", "/v1/check", &checks)).unwrap();

    // When wrk stops, the logins it leaves in flight still finish (they hold
    // attempts against the address's throttle until then): drain between runs.
    let drain = || std::thread::sleep(std::time::Duration::from_secs(2));
    wrk(port, &check_script, "2", 8, true);
    wrk(port, &login_script, "2", LOGIN_CONNECTIONS, true);
    drain();

    let logins_alone = wrk(port, &login_script, &seconds, LOGIN_CONNECTIONS, true);
    drain();
    let inside_storm = (seconds.parse::<u64>().expect("whole seconds") - 1).to_string();
    let mut rows = Vec::new();
    // A moderate check load (latency) and a saturating one (throughput).
    for connections in CHECK_CONNECTIONS {
        let alone = wrk(port, &check_script, &seconds, connections, true);
        let storm = {
            let script = login_script.clone();
            let seconds = seconds.clone();
            std::thread::spawn(move || wrk(port, &script, &seconds, LOGIN_CONNECTIONS, true))
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        // The checks end before the storm does, so all of them ran during it.
        let during = wrk(port, &check_script, &inside_storm, connections, true);
        let logins = storm.join().unwrap();
        drain();
        rows.push((connections, alone, during, logins));
    }
    let (peak, rss_after) = memory(pid);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{cores} cores; wrk -t1, keep-alive, loopback; {ACCOUNTS} accounts, argon2id m=19 MiB t=2 p=1"
    );
    println!("| run | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    row(
        &format!("`/auth/login` alone (-c{LOGIN_CONNECTIONS})"),
        &logins_alone,
    );
    for (connections, alone, during, logins) in &rows {
        row(&format!("`/v1/check` alone (-c{connections})"), alone);
        row(
            &format!("`/v1/check` (-c{connections}) during the storm"),
            during,
        );
        row(&format!("`/auth/login` during those checks"), logins);
    }
    println!(
        "logins per second per core: {:.1} alone",
        logins_alone.requests_per_second / cores as f64
    );
    println!("server memory: {rss_idle:.1} MiB idle, peak {peak:.1} MiB, {rss_after:.1} MiB after");
}
