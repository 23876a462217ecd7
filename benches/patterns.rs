//! Path-module patterns at their worst, memberd's matcher beside the
//! regular expression keyMatch2 compiled to before (issue 13).
//!
//! `cargo bench --bench patterns`; results in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

/// Path-module patterns at their worst: what an administrator could write
/// (issue 13), matched against the longest module, with memberd's own
/// matcher and with the regular expression keyMatch2 compiled to before.
fn patterns(c: &mut Criterion) {
    use memberd::authz::functions;
    use memberd::authz::pattern::ModulePattern;
    let long = format!("/{}", "a".repeat(255));
    let cases = [
        (
            "repetitions",
            "/.{0,2000}.{0,2000}x*".to_owned(),
            long.clone(),
        ),
        ("127 stars", format!("/{}", "*a".repeat(127)), long.clone()),
        (
            "a route, matching",
            "/api/users/:id/keys/*".to_owned(),
            "/api/users/42/keys/primary".to_owned(),
        ),
        (
            "a route, another path",
            "/api/users/:id/keys/*".to_owned(),
            "/api/orders/42".to_owned(),
        ),
    ];
    let mut group = c.benchmark_group("pattern module");
    for (name, pattern, path) in &cases {
        let ours = ModulePattern::parse(pattern).unwrap();
        group.bench_function(format!("{name}: memberd pattern"), |b| {
            b.iter(|| ours.matches(black_box(path)))
        });
        if let Ok(regex) = functions::compile(&functions::key_match2_regex(pattern)) {
            group.bench_function(format!("{name}: keyMatch2 regex (before)"), |b| {
                b.iter(|| regex.is_match(black_box(path)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, patterns);
criterion_main!(benches);
