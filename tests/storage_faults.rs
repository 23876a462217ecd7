//! Storage faults (issue 14, fault 2): with the disk full every SQLite write
//! was a 500 logged as "attempted to call begin_with at non-zero transaction
//! depth", and writes kept failing for about 30 s after space was freed.
//!
//! The disk is a tmpfs of the test's own, a few MiB, filled by a file the
//! test writes and removes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{INTERNAL_SECRET, TestDb, error_code, spawn_on};
use memberd::authn::Secret;
use memberd::config::Settings;
use reqwest::StatusCode;
use serde_json::json;

const PASSWORD: &str = "a long and unusual passphrase 42";

/// A small filesystem mounted for one test, unmounted (lazily: the server's
/// connections may still hold files) when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where mounting is not permitted (outside CI: skipped).
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { dir }),
            other if !common::in_ci() => {
                eprintln!("skipping: cannot mount a tmpfs here ({other:?})");
                None
            }
            other => panic!("mounting a tmpfs is required under CI: {other:?}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // The last partial chunk: fill to the last byte.
        while file.write_all(&[0u8]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn user(n: usize) -> serde_json::Value {
    // Wide enough that a handful of writes outgrow any page SQLite has free.
    json!({"authentik_sub": format!("user-{n}"), "display_name": "x".repeat(200)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_writes_recover_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let db = TestDb::sqlite_in(disk.path());
    let mut settings = Settings::with_database(&db.url);
    settings.bind = "127.0.0.1:0".parse().unwrap();
    settings.internal_secrets = vec![Secret::new(INTERNAL_SECRET)];
    let app = spawn_on(db, settings).await;
    app.create_account("rita", PASSWORD).await;
    let login = || app.login("rita", PASSWORD);

    let mut n = 0;
    for _ in 0..10 {
        n += 1;
        assert_eq!(app.upsert(user(n)).await.status(), StatusCode::OK);
    }

    let filler = disk.fill();
    let mut unavailable = 0;
    for _ in 0..200 {
        n += 1;
        let response = app.upsert(user(n)).await;
        match response.status() {
            StatusCode::OK => continue,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key("retry-after"));
                assert_eq!(error_code(response).await, "storage_unavailable");
                unavailable += 1;
                if unavailable == 20 {
                    break;
                }
            }
            other => panic!(
                "with the disk full a write answered {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    assert_eq!(unavailable, 20, "the disk never filled");
    // Reads still work on a full disk.
    assert_eq!(
        app.snapshot("user-1").await.status(),
        StatusCode::OK,
        "a read on a full disk"
    );
    // A login, which writes, is refused at once rather than hanging on a lock.
    let started = Instant::now();
    let r = login().await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await, "storage_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    loop {
        n += 1;
        let status = app.upsert(user(n)).await.status();
        if status == StatusCode::OK {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(2),
            "writes still fail ({status}) after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every connection in the pool works again, not only the first one tried.
    let writes = (0..32).map(|i| app.upsert(user(100_000 + i)));
    for response in futures_util::future::join_all(writes).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        app.snapshot(&format!("user-{n}")).await.status(),
        StatusCode::OK
    );
    let started = Instant::now();
    assert_eq!(login().await.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// PostgreSQL restarted under memberd: every connection it held is ended
/// (here by `pg_terminate_backend`, which a restart amounts to for memberd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ending_every_connection_is_retryable_and_recovers_by_itself() {
    let Some(app) = common::spawn_app(common::Backend::Postgres).await else {
        return;
    };
    let writes = (0..16).map(|i| app.upsert(user(i)));
    for response in futures_util::future::join_all(writes).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    common::tamper(
        &common::postgres_admin_url(),
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ),
    )
    .await;
    let mut n = 1_000;
    let ended = Instant::now();
    let mut ok = 0;
    while ok < 32 {
        n += 1;
        let r = app.upsert(user(n)).await;
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(error_code(r).await, "storage_unavailable");
                assert!(
                    ended.elapsed() < Duration::from_secs(5),
                    "writes still fail"
                );
            }
            other => panic!(
                "after a restart a write answered {other}: {}",
                r.text().await.unwrap()
            ),
        }
    }
    assert_eq!(
        app.snapshot(&format!("user-{n}")).await.status(),
        StatusCode::OK
    );
}
