//! Checks, snapshots and incremental updates, against the floor (a HashMap of
//! precomputed answers) and the `casbin` crate, on the same policies.
//!
//! `cargo bench --bench engine`; results and what they mean are in BENCHMARKS.md.

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use casbin::DefaultCache;
use casbin::prelude::{
    CachedApi, CachedEnforcer, CoreApi, DefaultModel, MemoryAdapter, MgmtApi, RbacApi,
};
use criterion::{Criterion, criterion_group, criterion_main};
use memberd::authz::index::Index;
use memberd::model::{Effect, UserId};
use support::{LARGE, MODEL, Question, SMALL, Size, WIDE_USER, index, policy_csv, questions};

const CASBIN_QUESTIONS: usize = 256;

/// The policy's `p` and `g` rows, as the casbin crate takes them.
fn rows(csv: &str) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut rules = Vec::new();
    let mut links = Vec::new();
    for line in csv.lines() {
        let fields: Vec<String> = line.split(", ").map(str::to_owned).collect();
        match fields[0].as_str() {
            "p" => rules.push(fields[1..].to_vec()),
            _ => links.push(fields[1..].to_vec()),
        }
    }
    (rules, links)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn casbin_cached(csv: &str) -> CachedEnforcer {
    runtime().block_on(async {
        let model = DefaultModel::from_str(MODEL).await.unwrap();
        let mut e = CachedEnforcer::new(model, MemoryAdapter::default())
            .await
            .unwrap();
        let (rules, links) = rows(csv);
        e.add_policies(rules).await.unwrap();
        e.add_grouping_policies(links).await.unwrap();
        // Its default cache holds 200 answers: fewer than the questions
        // asked, which would make every "hit" a miss.
        e.set_cache(Box::new(DefaultCache::new(4 * CASBIN_QUESTIONS)));
        e
    })
}

fn casbin_plain(csv: &str) -> casbin::Enforcer {
    runtime().block_on(async {
        let model = DefaultModel::from_str(MODEL).await.unwrap();
        let mut e = casbin::Enforcer::new(model, MemoryAdapter::default())
            .await
            .unwrap();
        let (rules, links) = rows(csv);
        e.add_policies(rules).await.unwrap();
        e.add_grouping_policies(links).await.unwrap();
        e
    })
}

fn key(sub: &str, module: &str, action: &str, into: &mut String) {
    into.clear();
    into.push_str(sub);
    into.push('\u{0}');
    into.push_str(module);
    into.push('\u{0}');
    into.push_str(action);
}

/// The hot floor: the answers to the questions asked, precomputed, looked up
/// by keys built beforehand. 4096 entries stay in the CPU's caches, which no
/// structure answering any question about the whole policy can.
fn hot_floor(index: &Index, qs: &[Question]) -> (HashMap<String, bool>, Vec<String>) {
    let keys: Vec<String> = qs
        .iter()
        .map(|q| {
            let mut k = String::new();
            key(&q.sub, &q.module, &q.action, &mut k);
            k
        })
        .collect();
    let answers = qs
        .iter()
        .zip(&keys)
        .map(|(q, k)| (k.clone(), index.check_sub(&q.sub, &q.request()).unwrap()))
        .collect();
    (answers, keys)
}

/// The floor for any request: every allowed (user, module, action) of the
/// policy precomputed in one map (absent: denied), looked up by the request's
/// strings, as a cache in front of a decision service would be.
fn full_floor(index: &Index, size: &Size) -> HashMap<String, bool> {
    let mut allowed = HashMap::new();
    let subs = (0..size.users)
        .map(|u| format!("user{u}"))
        .chain([WIDE_USER.to_owned()]);
    for sub in subs {
        let snapshot = index.snapshot(index.user_by_sub(&sub).unwrap()).unwrap();
        for p in snapshot.permissions.iter() {
            let mut k = String::new();
            key(&sub, p.module, p.action, &mut k);
            allowed.insert(k, true);
        }
    }
    allowed
}

fn checks(c: &mut Criterion, name: &str, size: &Size, with_casbin: bool) {
    let csv = policy_csv(size);
    let index = index(&csv);
    let qs = questions(&index, size, 4096);
    let (answers, keys) = hot_floor(&index, &qs);
    let allowed = full_floor(&index, size);
    for q in &qs {
        let mut k = String::new();
        key(&q.sub, &q.module, &q.action, &mut k);
        assert_eq!(
            allowed.get(&k).copied().unwrap_or(false),
            index.check_sub(&q.sub, &q.request()).unwrap()
        );
    }
    let mut group = c.benchmark_group(format!("check/{name}"));

    let mut i = 0;
    group.bench_function(
        "hot floor: 4096 precomputed answers, keys built beforehand",
        |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(answers.get(black_box(&keys[i])))
            })
        },
    );
    let mut i = 0;
    let mut buffer = String::new();
    group.bench_function(
        format!(
            "floor: all {} allowed answers precomputed, key from the request",
            allowed.len()
        ),
        |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                let q = &qs[i];
                key(
                    black_box(&q.sub),
                    black_box(&q.module),
                    black_box(&q.action),
                    &mut buffer,
                );
                black_box(allowed.get(buffer.as_str()).copied().unwrap_or(false))
            })
        },
    );
    drop(allowed);
    let mut i = 0;
    group.bench_function("memberd index", |b| {
        b.iter(|| {
            i = (i + 1) % qs.len();
            let q = &qs[i];
            black_box(index.check_sub(black_box(&q.sub), &q.request()).unwrap())
        })
    });
    if with_casbin {
        // Every cache miss costs Casbin a full enforce (0.1-0.3 s here), so it
        // gets the first 256 questions only: a smaller, hotter working set
        // than memberd's 4096, which favours Casbin.
        let qs = &qs[..CASBIN_QUESTIONS];
        let enforcer = casbin_cached(&csv);
        for q in qs {
            let casbin_says = enforcer
                .enforce((q.sub.as_str(), q.module.as_str(), q.action.as_str()))
                .unwrap();
            assert_eq!(
                casbin_says,
                index.check_sub(&q.sub, &q.request()).unwrap(),
                "{} {} {}",
                q.sub,
                q.module,
                q.action
            );
        }
        let mut i = 0;
        group.bench_function("casbin CachedEnforcer, cache hits", |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                let q = &qs[i];
                black_box(
                    enforcer
                        .enforce((q.sub.as_str(), q.module.as_str(), q.action.as_str()))
                        .unwrap(),
                )
            })
        });
        let plain = casbin_plain(&csv);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20));
        let mut i = 0;
        group.bench_function("casbin Enforcer, uncached", |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                let q = &qs[i];
                black_box(
                    plain
                        .enforce((q.sub.as_str(), q.module.as_str(), q.action.as_str()))
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn check_small(c: &mut Criterion) {
    checks(c, "small", &SMALL, false);
}

fn check_large(c: &mut Criterion) {
    checks(c, "large", &LARGE, true);
}

fn snapshots(c: &mut Criterion) {
    let csv = policy_csv(&LARGE);
    let index = index(&csv);
    let wide = index.user_by_sub(WIDE_USER).unwrap();
    let permissions = index.snapshot(wide).unwrap().permissions.len();
    let mut group = c.benchmark_group(format!(
        "snapshot/large, user with {permissions} permissions"
    ));
    group.bench_function("memberd index", |b| {
        b.iter(|| black_box(index.snapshot(black_box(wide)).unwrap()))
    });
    let enforcer = casbin_plain(&csv);
    group.sample_size(10);
    group.bench_function("casbin get_implicit_permissions_for_user", |b| {
        b.iter(|| black_box(enforcer.get_implicit_permissions_for_user(black_box(WIDE_USER), None)))
    });
    group.finish();
}

fn incremental(c: &mut Criterion) {
    let csv = policy_csv(&LARGE);
    let mut index = index(&csv);
    let user: UserId = index.user_by_sub("user1").unwrap();
    let mut group = c.benchmark_group("update/large");
    group.bench_function("grant then revoke one direct permission", |b| {
        b.iter(|| {
            index
                .set_direct(
                    user,
                    uuid::Uuid::nil(),
                    "casbin",
                    "*",
                    "bench-module",
                    "read",
                    Effect::Allow,
                )
                .unwrap();
            index.remove_direct(user, "casbin", "*", "bench-module", "read");
        })
    });
    group.bench_function("add then remove one role permission", |b| {
        b.iter(|| {
            index
                .set_role_permission("role5", "bench-module", "read", None, Effect::Allow)
                .unwrap();
            index.remove_role_permission("role5", "bench-module", "read", None);
        })
    });
    group.finish();
}

criterion_group!(benches, check_small, check_large, snapshots, incremental);
criterion_main!(benches);
