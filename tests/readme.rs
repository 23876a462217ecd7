//! The README, run as written (issue 14: a newcomer following it hit about
//! ten wrong or missing steps).
//!
//! Every ```sh block of README.md runs, in order, in one bash session,
//! against a fresh `memberd serve` started the way the README starts it (in
//! an empty directory, on the default SQLite file), except a block right
//! after an HTML comment `<!-- not run by tests/readme.rs: WHY -->`. Each
//! command must exit 0; the `#` comment lines right after a command are its
//! output, compared with what it printed on standard output:
//!
//! - whitespace is not compared (the README wraps long JSON);
//! - `…` stands for anything, lines included.
//!
//! What the test changes, and only this: the server listens on a free port
//! rather than 8080 (`127.0.0.1:8080` in commands is replaced), and a
//! placeholder a reader fills in (`export SECRET='mbs_…'`) is filled with
//! the value of that prefix the server printed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const SKIP: &str = "<!-- not run by tests/readme.rs:";
const DONE: &str = "@@readme-command-done@@";

/// One command of the README and the output it shows.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The runnable commands of the README's `sh` blocks, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = readme.lines().enumerate().peekable();
    let mut skip_next_block = false;
    while let Some((_, line)) = lines.next() {
        if line.starts_with(SKIP) {
            skip_next_block = true;
            continue;
        }
        if !line.starts_with("```") {
            continue;
        }
        let runnable = line.trim() == "```sh" && !skip_next_block;
        skip_next_block = false;
        let mut block = Vec::new();
        for (n, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            block.push((n + 1, line));
        }
        if !runnable {
            continue;
        }
        let mut current: Option<Step> = None;
        let mut continued = false;
        for (n, line) in block {
            if continued {
                let step = current.as_mut().unwrap();
                step.command.push('\n');
                step.command.push_str(line);
                continued = unfinished(&step.command);
                continue;
            }
            if let Some(output) = line.strip_prefix('#') {
                if let Some(step) = current.as_mut() {
                    step.expected.push(output.to_owned());
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            steps.extend(current.take());
            continued = unfinished(line);
            current = Some(Step {
                line: n,
                command: line.to_owned(),
                expected: Vec::new(),
            });
        }
        steps.extend(current);
    }
    steps
}

/// Whether a command goes on past this line: a trailing backslash, or a
/// quote still open.
fn unfinished(command: &str) -> bool {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut quote = Quote::None;
    let mut chars = command.chars();
    let mut after_space = true;
    while let Some(c) = chars.next() {
        if quote == Quote::None && c == '#' && after_space {
            // A comment, to the end of its line.
            chars.by_ref().take_while(|&c| c != '\n').for_each(drop);
            after_space = true;
            continue;
        }
        after_space = c.is_whitespace();
        match (&quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, _) => {}
            (_, '\\') => {
                chars.next();
            }
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::Double, '"') => quote = Quote::None,
            _ => {}
        }
    }
    quote != Quote::None || command.ends_with('\\')
}

/// Whether `actual` is what `expected` shows: whitespace ignored, `…` for anything.
fn shows(expected: &[String], actual: &str) -> bool {
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let expected = squeeze(&expected.join("\n"));
    let actual = squeeze(actual);
    let parts: Vec<&str> = expected.split('…').collect();
    let (first, rest) = parts.split_first().unwrap();
    let Some(mut remaining) = actual.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// A bash session that runs one command at a time.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Shell {
    fn start(dir: &Path, path: &str, stderr_log: &Path) -> Shell {
        let mut child = Command::new("bash")
            .arg("--noprofile")
            .arg("--norc")
            .current_dir(dir)
            .env("PATH", path)
            .env_remove("MEMBERD_DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_log).unwrap())
            .spawn()
            .expect("bash");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Shell {
            child,
            stdin,
            lines,
        }
    }

    /// The command's standard output and exit status.
    fn run(&mut self, command: &str) -> (String, i32) {
        writeln!(self.stdin, "{command}\nprintf '\\n{DONE} %d\\n' $?").unwrap();
        self.stdin.flush().unwrap();
        let mut output = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no end to `{command}` within a minute:\n{output}"));
            if let Some(status) = line.strip_prefix(DONE) {
                // The line break printed before the marker is not the command's.
                if output.ends_with('\n') {
                    output.pop();
                }
                return (output, status.trim().parse().unwrap());
            }
            output.push_str(&line);
            output.push('\n');
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tools the README's commands use, besides memberd.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["bash", "curl", "jq", "oathtool"]
        .into_iter()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !common::in_ci(),
        "the README test needs {missing:?} under CI"
    );
    eprintln!("skipping: the README's commands need {missing:?}");
    false
}

/// The value a placeholder such as `mbs_…` stands for: the last token with
/// that prefix printed so far.
fn fill(prefix: &str, printed: &str) -> Option<String> {
    let at = printed.rfind(prefix)?;
    let token: String = printed[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    (token.len() > prefix.len()).then_some(token)
}

#[test]
fn the_readme_works_as_written() {
    if !tools_present() {
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() > 40, "only {} commands found", steps.len());

    let dir = tempfile::tempdir().unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_memberd"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let server_log = dir.path().join("server.log");
    let mut server = Command::new(binary)
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("MEMBERD_DATABASE_URL")
        .env("MEMBERD_BIND", &address)
        .env("MEMBERD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    struct Stop<'a>(&'a mut Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Stop(&mut server);
    // The secret is printed once the server listens.
    let started = Instant::now();
    let mut printed = String::new();
    while fill("mbs_", &printed).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server printed no secret:\n{printed}"
        );
        std::thread::sleep(Duration::from_millis(50));
        printed = std::fs::read_to_string(&server_log).unwrap_or_default();
    }

    let shell_log = dir.path().join("commands.stderr");
    let mut shell = Shell::start(dir.path(), &path, &shell_log);
    let mut mismatches = Vec::new();
    for step in &steps {
        let mut command = step.command.replace("127.0.0.1:8080", &address);
        while let Some(at) = command.find("…'") {
            let start = command[..at].rfind('\'').unwrap() + 1;
            let prefix = command[start..at].to_owned();
            let value = fill(&prefix, &printed).unwrap_or_else(|| {
                panic!(
                    "README.md:{}: nothing printed starts with {prefix:?}",
                    step.line
                )
            });
            command.replace_range(start..at + "…".len(), &value);
        }
        let (output, status) = shell.run(&command);
        let stderr = || std::fs::read_to_string(&shell_log).unwrap_or_default();
        assert_eq!(
            status,
            0,
            "README.md:{}: `{}` failed; it printed:\n{output}\nstandard error so far:\n{}",
            step.line,
            step.command,
            stderr()
        );
        if !step.expected.is_empty() && !shows(&step.expected, &output) {
            mismatches.push(format!(
                "README.md:{}: `{}` printed\n{output}\nwhere the README shows\n{}\n",
                step.line,
                step.command,
                step.expected.join("\n")
            ));
        }
        printed.push_str(&output);
        printed.push('\n');
    }
    assert!(
        mismatches.is_empty(),
        "{} outputs differ from the README:\n\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn outputs_match_with_wildcards_and_without_whitespace() {
    let expected = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    assert!(shows(
        &expected(&[r#" {"a":1,"#, r#"  "b":"…"}"#]),
        r#"{"a":1,"b":"x y"}"#
    ));
    assert!(!shows(&expected(&[r#" {"a":1}"#]), r#"{"a":2}"#));
    assert!(!shows(
        &expected(&[r#" {"a":1}"#]),
        r#"{"a":1}{"more":true}"#
    ));
    assert!(shows(
        &expected(&[" HTTP/1.1 200 OK", " …", " etag: \"….2\"", " …"]),
        "HTTP/1.1 200 OK\ncontent-type: x\netag: \"ab.2\"\n\n{}"
    ));
    assert!(!shows(&expected(&[" etag: \"….2\""]), "etag: \"ab.3\""));
}

#[test]
fn commands_go_on_while_a_quote_is_open_or_a_line_ends_in_a_backslash() {
    assert!(unfinished("curl -d '{\"a\":"));
    assert!(!unfinished("curl -d '{\"a\":1}'"));
    assert!(unfinished("curl \\"));
    assert!(!unfinished(r#"echo "it's" done"#));
    assert!(!unfinished(r#"curl -d "{\"a\":\"$X\"}""#));
    assert!(!unfinished("memberd export   # it's the backup"));
}
