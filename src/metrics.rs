//! Counters and latency histograms, rendered in Prometheus' text format at
//! `/metrics`. One process-wide registry: what is counted is scattered
//! (extractors, services, background tasks) and threading a handle to each
//! would add a parameter to every layer for no gain in clarity.
//!
//! Counting is a relaxed atomic add; a request's series is found under a
//! mutex held for one map lookup.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, bucket) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// By route template, then `(method, status)`: templates, not paths, so
/// that the number of series stays bounded and no subject lands in a label.
/// Nested so that counting a known series allocates nothing.
type Requests = BTreeMap<String, BTreeMap<(&'static str, u16), Histogram>>;

pub struct Metrics {
    requests: Mutex<Requests>,
    checks_allowed: AtomicU64,
    checks_denied: AtomicU64,
    snapshots: AtomicU64,
    logins: [AtomicU64; 3],
    api_key_cache: [AtomicU64; 2],
    jwks_refreshes: AtomicU64,
    rate_limited: AtomicU64,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: Mutex::default(),
    checks_allowed: AtomicU64::new(0),
    checks_denied: AtomicU64::new(0),
    snapshots: AtomicU64::new(0),
    logins: Default::default(),
    api_key_cache: Default::default(),
    jwks_refreshes: AtomicU64::new(0),
    rate_limited: AtomicU64::new(0),
});

#[derive(Debug, Clone, Copy)]
pub enum Login {
    Success = 0,
    Failure = 1,
    Lockout = 2,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A method as a label; any other than the usual ones is `OTHER`, so that a
/// caller cannot mint series.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

pub fn request(route: &str, method: &str, status: u16, latency: Duration) {
    let key = (method_label(method), status);
    let mut requests = METRICS.requests.lock().unwrap_or_else(|p| p.into_inner());
    let series = match requests.get_mut(route) {
        Some(series) => series,
        None => requests.entry(route.to_owned()).or_default(),
    };
    series
        .entry(key)
        .or_default()
        .observe(latency.as_secs_f64());
}

pub fn checks(allowed: u64, denied: u64) {
    add(&METRICS.checks_allowed, allowed);
    add(&METRICS.checks_denied, denied);
}

pub fn snapshot() {
    add(&METRICS.snapshots, 1);
}

pub fn login(outcome: Login) {
    add(&METRICS.logins[outcome as usize], 1);
}

pub fn api_key_cache(hit: bool) {
    add(&METRICS.api_key_cache[usize::from(!hit)], 1);
}

pub fn jwks_refresh() {
    add(&METRICS.jwks_refreshes, 1);
}

pub fn rate_limited() {
    add(&METRICS.rate_limited, 1);
}

/// Values read when scraped rather than counted as they change.
pub struct Gauges {
    pub revision: i64,
    pub index_users: usize,
    pub index_roles: usize,
    pub index_direct_grants: usize,
    pub index_role_permissions: usize,
    pub index_assignments: usize,
    pub db_pool_size: u32,
    pub db_pool_idle: usize,
    pub policy_rows_skipped: u64,
    pub api_client_rows_remembered: usize,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, series: &[(&str, &AtomicU64)]) {
    family(out, name, "counter", help);
    for (labels, value) in series {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}{labels} {}", value.load(Ordering::Relaxed));
    }
}

/// The whole registry in Prometheus' text exposition format (0.0.4).
pub fn render(gauges: &Gauges) -> String {
    let m = &*METRICS;
    let mut out = String::with_capacity(8192);
    {
        let requests = m.requests.lock().unwrap_or_else(|p| p.into_inner());
        family(
            &mut out,
            "memberd_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for (route, series) in requests.iter() {
            for ((method, status), h) in series {
                let _ = writeln!(
                    out,
                    "memberd_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {}",
                    escape(route),
                    h.count
                );
            }
        }
        family(
            &mut out,
            "memberd_http_request_duration_seconds",
            "histogram",
            "Time to answer HTTP requests, by route template, method and status.",
        );
        for ((route, method, status), h) in requests
            .iter()
            .flat_map(|(route, series)| series.iter().map(move |((m, s), h)| ((route, m, s), h)))
        {
            let labels = format!(
                "route=\"{}\",method=\"{method}\",status=\"{status}\"",
                escape(route)
            );
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "memberd_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "memberd_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 memberd_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 memberd_http_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum_seconds, h.count
            );
        }
    }
    counter(
        &mut out,
        "memberd_checks_total",
        "Permission checks decided, by decision.",
        &[
            ("decision=\"allow\"", &m.checks_allowed),
            ("decision=\"deny\"", &m.checks_denied),
        ],
    );
    counter(
        &mut out,
        "memberd_snapshots_total",
        "Permission snapshots served.",
        &[("", &m.snapshots)],
    );
    counter(
        &mut out,
        "memberd_logins_total",
        "Logins to memberd's own accounts, by outcome.",
        &[
            ("outcome=\"success\"", &m.logins[Login::Success as usize]),
            ("outcome=\"failure\"", &m.logins[Login::Failure as usize]),
            ("outcome=\"lockout\"", &m.logins[Login::Lockout as usize]),
        ],
    );
    counter(
        &mut out,
        "memberd_api_key_cache_total",
        "API-key verifications answered from the cache (hit) or by hashing (miss).",
        &[
            ("result=\"hit\"", &m.api_key_cache[0]),
            ("result=\"miss\"", &m.api_key_cache[1]),
        ],
    );
    counter(
        &mut out,
        "memberd_jwks_refreshes_total",
        "Fetches of the identity provider's JWKS.",
        &[("", &m.jwks_refreshes)],
    );
    counter(
        &mut out,
        "memberd_rate_limited_total",
        "Requests refused with 429 by a rate limit.",
        &[("", &m.rate_limited)],
    );
    let gauges_list: [(&str, &str, f64); 10] = [
        (
            "memberd_revision",
            "The policy revision the index has reached.",
            gauges.revision as f64,
        ),
        (
            "memberd_index_users",
            "Users in the compiled index.",
            gauges.index_users as f64,
        ),
        (
            "memberd_index_roles",
            "Roles in the compiled index.",
            gauges.index_roles as f64,
        ),
        (
            "memberd_index_direct_grants",
            "Direct grants in the compiled index.",
            gauges.index_direct_grants as f64,
        ),
        (
            "memberd_index_role_permissions",
            "Role permissions in the compiled index.",
            gauges.index_role_permissions as f64,
        ),
        (
            "memberd_index_assignments",
            "Role assignments in the compiled index.",
            gauges.index_assignments as f64,
        ),
        (
            "memberd_db_pool_connections",
            "Open database connections.",
            f64::from(gauges.db_pool_size),
        ),
        (
            "memberd_db_pool_idle_connections",
            "Idle database connections.",
            gauges.db_pool_idle as f64,
        ),
        (
            "memberd_policy_rows_skipped",
            "Stored policy rows the index left out because they do not compile.",
            gauges.policy_rows_skipped as f64,
        ),
        (
            "memberd_api_client_rows_remembered",
            "API client rows (or their absence) remembered for a second.",
            gauges.api_client_rows_remembered as f64,
        ),
    ];
    for (name, help, value) in gauges_list {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_histogram_counts_each_observation_in_every_bucket_it_fits() {
        let mut h = super::Histogram::default();
        h.observe(0.003);
        h.observe(20.0);
        assert_eq!(h.count, 2);
        assert_eq!(h.buckets[0], 0, "0.5 ms");
        assert_eq!(h.buckets[3], 1, "5 ms");
        assert_eq!(h.buckets[13], 1, "10 s: the 20 s one is only in +Inf");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
