//! `POST /v1/check` over HTTP against `GET /healthz` on the same server, in
//! the same run: the large policy imported with `memberd casbin import`,
//! served by the release binary, loaded by wrk on loopback with keep-alive.
//!
//! `cargo bench --bench http` (needs wrk: `apt-get install wrk`).
//! `MEMBERD_BENCH_SECONDS` sets each run's length (default 10).

mod support;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{LARGE, MODEL, index, policy_csv, questions};

const SECRET: &str = "bench-internal-secret-0123456789";
const CONNECTIONS: &str = "32";
/// Questions cycled through by the check run.
const QUESTIONS: usize = 4096;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn memberd(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memberd"));
    command
        .env("MEMBERD_DATABASE_URL", database_url)
        .env("MEMBERD_INTERNAL_SECRETS", SECRET)
        .env("MEMBERD_LOG", "warn");
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request on a fresh connection; the status line's code.
fn status_of(port: u16, request: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_ready(port: u16) {
    let started = Instant::now();
    let request = "GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    while status_of(port, request) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "memberd did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// A wrk script that sends the given requests in turn, each formatted once
/// in `init`, so that both runs cost wrk the same per request.
fn wrk_script(method: &str, path: &str, bodies: &[String]) -> String {
    let mut lua = String::from("local bodies = {\n");
    for body in bodies {
        let _ = writeln!(lua, "  {},", lua_string(body));
    }
    let _ = write!(
        lua,
        r#"}}
local requests = {{}}
local i = 0
init = function(args)
  local headers = {{ ["X-Internal-Secret"] = {secret}, ["Content-Type"] = "application/json" }}
  for n, body in ipairs(bodies) do
    if body == "" then body = nil end
    requests[n] = wrk.format({method}, {path}, headers, body)
  end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
"#,
        secret = lua_string(SECRET),
        method = lua_string(method),
        path = lua_string(path),
    );
    lua
}

struct Run {
    requests_per_second: f64,
    p50: String,
    p99: String,
}

fn wrk(port: u16, script: &Path, seconds: &str) -> Run {
    let output = Command::new("wrk")
        .args([
            "-t1",
            "-c",
            CONNECTIONS,
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("wrk on PATH (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed:\n{text}");
    assert!(!text.contains("Non-2xx"), "some requests failed:\n{text}");
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
    };
    Run {
        requests_per_second: field("Requests/sec:").parse().unwrap(),
        p50: field("50%"),
        p99: field("99%"),
    }
}

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
    wrk(port, &health_script, "2");
    wrk(port, &check_script, "2");
    let health = wrk(port, &health_script, &seconds);
    let check = wrk(port, &check_script, &seconds);

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
