//! A check storm from many API clients whose keys are argon2-hashed: the
//! server's peak memory and `/v1/check`'s latency while their keys are
//! verified, against the same storm from clients with SHA-256-hashed keys.
//!
//! `cargo bench --bench key_storm` (needs wrk: `apt-get install wrk`).
//! `MEMBERD_BENCH_SECONDS` sets each run's length (default 10);
//! `MEMBERD_BENCH_BASELINE` names another memberd binary (an older build) to
//! run the same storms against, side by side.
//!
//! Each run starts a fresh server on its own database. With the key cache
//! at one second, each of the 64 clients misses once a second: about 64
//! argon2 verifications a second, the most two cores can do, for the whole
//! run. That is the worst case; with the default cache each key is hashed
//! once and then again in the background every five minutes.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use support::server::{Server, free_port, memberd_at, memory, wait_ready};

const CLIENTS: usize = 64;
const CONNECTIONS: usize = 8;

/// Creates `CLIENTS` clients with keys hashed by `hash`; their credentials.
fn clients(binary: &Path, database_url: &str, hash: &str) -> Vec<(String, String)> {
    (0..CLIENTS)
        .map(|i| {
            let output = memberd_at(binary, database_url)
                .args(["client", "create", "--json", "--hash", hash, "--name"])
                .arg(format!("storm-{i}"))
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            (
                created["client_key"].as_str().unwrap().to_owned(),
                created["api_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Checks sent by each client in turn.
fn script(credentials: &[(String, String)]) -> String {
    let body = serde_json::json!({
        "subject": "nobody", "scope_type": "org", "scope_id": "1",
        "module": "billing", "action": "read",
    })
    .to_string();
    let mut lua = String::from("local clients = {\n");
    for (client_key, api_key) in credentials {
        let _ = writeln!(lua, "  {{ {client_key:?}, {api_key:?} }},");
    }
    let _ = write!(
        lua,
        r#"}}
local requests = {{}}
local i = 0
init = function(args)
  for n, c in ipairs(clients) do
    local headers = {{ ["X-Client-Key"] = c[1], ["X-API-Key"] = c[2], ["Content-Type"] = "application/json" }}
    requests[n] = wrk.format("POST", "/v1/check", headers, {body:?})
  end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
"#
    );
    lua
}

struct Outcome {
    idle: f64,
    peak: f64,
    after: f64,
    requests_per_second: String,
    p50: String,
    p99: String,
    refused: String,
}

fn storm(binary: &Path, hash: &str, cache_seconds: &str, seconds: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("memberd.db").display());
    let credentials = clients(binary, &database_url, hash);
    let lua = dir.path().join("storm.lua");
    std::fs::write(&lua, script(&credentials)).unwrap();
    let port = free_port();
    let server = Server(
        memberd_at(binary, &database_url)
            .arg("serve")
            .env("MEMBERD_BIND", format!("127.0.0.1:{port}"))
            .env("MEMBERD_API_KEY_CACHE_SECONDS", cache_seconds)
            .spawn()
            .unwrap(),
    );
    wait_ready(port);
    let pid = server.0.id();
    let (_, idle) = memory(pid);
    let output = Command::new("wrk")
        .args([
            "-t1",
            "-c",
            &CONNECTIONS.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&lua)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("wrk on PATH (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed:\n{text}");
    let (peak, after) = memory(pid);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
    };
    Outcome {
        idle,
        peak,
        after,
        requests_per_second: field("Requests/sec:").unwrap_or_default(),
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
        refused: field("Non-2xx or 3xx responses:").unwrap_or_else(|| "0".into()),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = std::env::var("MEMBERD_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let current = Path::new(env!("CARGO_BIN_EXE_memberd")).to_path_buf();
    let mut binaries = vec![("this build", current)];
    if let Ok(baseline) = std::env::var("MEMBERD_BENCH_BASELINE") {
        binaries.push(("baseline", baseline.into()));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{cores} cores; {CLIENTS} clients cycled by wrk -t1 -c{CONNECTIONS} for {seconds} s; argon2 at the default cost (m=19 MiB)"
    );
    println!(
        "| binary | keys | key cache | RSS idle | peak RSS | after | checks/s | p50 | p99 | refused |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, binary) in &binaries {
        for (hash, cache) in [("sha256", "1"), ("argon2", "1"), ("argon2", "600")] {
            let o = storm(binary, hash, cache, &seconds);
            println!(
                "| {name} | {hash} | {cache} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {} | {} | {} |",
                o.idle, o.peak, o.after, o.requests_per_second, o.p50, o.p99, o.refused
            );
        }
    }
}
