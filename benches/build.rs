//! Sizes and build times that criterion does not measure well: the index's
//! heap for the large set, and compiling the index from SQL for a million
//! direct grants (time and peak RSS).
//!
//! `cargo bench --bench build` (SQLite in a temporary file; set
//! `MEMBERD_BENCH_DATABASE_URL` to a postgres:// URL of an empty database to
//! measure PostgreSQL instead).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use memberd::authz::casbin::import::{ImportPlan, compile, plan};
use memberd::model::{Action, AuthentikSub, Effect, Module, Permission, ScopeId};
use memberd::service::access::Engine;
use support::{LARGE, enforcer, policy_csv, scope_type};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Peak resident memory since the last reset, from /proc (Linux).
fn peak_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<usize>()
        .ok()
        .map(|kb| kb * 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn large_index_heap() {
    let csv = policy_csv(&LARGE);
    let plan = plan(&enforcer(&csv), &scope_type()).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let (index, ids) = compile(&plan).unwrap();
    let elapsed = started.elapsed();
    drop(ids);
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let stats = index.stats();
    println!(
        "large set: {} users, {} roles, {} role permissions, {} direct grants, {} assignments",
        stats.users, stats.roles, stats.role_permissions, stats.direct_grants, stats.assignments
    );
    println!(
        "  index heap: {:.1} MiB (compiled in {:.0} ms from memory)",
        mib(heap),
        elapsed.as_secs_f64() * 1000.0
    );
}

/// 10,000 users with 100 direct grants each.
fn million_grants() -> ImportPlan {
    let mut plan = ImportPlan::default();
    let scope = ScopeId::parse("*").unwrap();
    for u in 0..10_000 {
        let sub = AuthentikSub::parse(format!("user{u}")).unwrap();
        plan.users.insert(sub.clone());
        for g in 0..100 {
            let permission = Permission {
                scope_type: scope_type(),
                scope_id: scope.clone(),
                module: Module::parse(format!("m{}", (u * 7 + g * 13) % 5000)).unwrap(),
                action: Action::parse(format!("a{}", g % 10)).unwrap(),
            };
            plan.grants.insert((sub.clone(), permission), Effect::Allow);
        }
    }
    plan
}

fn database_url() -> String {
    std::env::var("MEMBERD_BENCH_DATABASE_URL").unwrap_or_else(|_| {
        format!(
            "sqlite://{}/bench-1m-grants.db",
            env!("CARGO_TARGET_TMPDIR")
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes the million grants once; later runs reuse the database.
fn populate() {
    runtime().block_on(async {
        let store = memberd::app::open_store(&database_url()).await.unwrap();
        if store.current_revision().await.unwrap().0 == 0 {
            let plan = million_grants();
            let started = Instant::now();
            store.import_policy(&plan).await.unwrap();
            println!(
                "  (wrote 1,000,000 grants in {:.1} s, once)",
                started.elapsed().as_secs_f64()
            );
        }
        store.close().await;
    });
}

/// In a process of its own, so that its peak RSS is the load's alone.
fn load() {
    runtime().block_on(async {
        let store = memberd::app::open_store(&database_url()).await.unwrap();
        let before = peak_rss();
        reset_peak_rss();
        let started = Instant::now();
        let engine = Engine::load(&store).await.unwrap();
        let elapsed = started.elapsed();
        let peak = peak_rss();
        let heap = LIVE.load(Ordering::Relaxed);
        println!(
            "build from SQL ({:?}), 1,000,000 direct grants: {:.2} s, peak RSS {} (process before loading: {}), heap after {:.0} MiB",
            store.backend(),
            elapsed.as_secs_f64(),
            peak.map_or("unknown".into(), |p| format!("{:.0} MiB", mib(p))),
            before.map_or("unknown".into(), |p| format!("{:.0} MiB", mib(p))),
            mib(heap),
        );
        drop(engine);
        store.close().await;
    });
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("MEMBERD_BENCH_LOAD_ONLY").is_some() {
        load();
        return;
    }
    large_index_heap();
    populate();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MEMBERD_BENCH_LOAD_ONLY", "1")
        .status()
        .unwrap();
    assert!(status.success());
}
