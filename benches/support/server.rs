//! The release binary as a server, and wrk driving it over loopback.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const SECRET: &str = "bench-internal-secret-0123456789";

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn memberd(database_url: &str) -> Command {
    memberd_at(Path::new(env!("CARGO_BIN_EXE_memberd")), database_url)
}

/// A given memberd binary (another build, to compare against).
pub fn memberd_at(binary: &Path, database_url: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env("MEMBERD_DATABASE_URL", database_url)
        .env("MEMBERD_INTERNAL_SECRETS", SECRET)
        .env("MEMBERD_LOG", "warn");
    command
}

pub fn free_port() -> u16 {
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

pub fn wait_ready(port: u16) {
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
pub fn wrk_script(method: &str, path: &str, bodies: &[String]) -> String {
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

pub struct Run {
    pub requests_per_second: f64,
    pub p50: String,
    pub p99: String,
    /// wrk's report, for requests that failed.
    pub report: String,
}

/// wrk with one thread and `connections` keep-alive connections; with
/// `all_ok`, any non-2xx answer fails the benchmark.
pub fn wrk(port: u16, script: &Path, seconds: &str, connections: usize, all_ok: bool) -> Run {
    let output = Command::new("wrk")
        .args([
            "-t1",
            "-c",
            &connections.to_string(),
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
    assert!(
        !all_ok || !text.contains("Non-2xx"),
        "some requests failed:\n{text}"
    );
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
        report: text.into_owned(),
    }
}

/// A process's memory: peak and current resident set (`VmHWM`, `VmRSS`), in MiB.
pub fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
