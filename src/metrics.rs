//! Counters and latency histograms, rendered in Prometheus' text format at
//! `/metrics` by prometheus-client. One process-wide registry: what is
//! counted is scattered (extractors, services, background tasks) and
//! threading a handle to each would add a parameter to every layer for no
//! gain in clarity.
//!
//! A request's series is found under a read lock (prometheus-client's
//! family) with labels that borrow nothing per request: route templates
//! are interned once each, methods and statuses are copied.

use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// By route template, method and status: templates, not paths, so that the
/// number of series stays bounded and no subject lands in a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type Durations = Family<RequestLabels, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    checks: Family<DecisionLabel, Counter>,
    snapshots: Counter,
    logins: Family<OutcomeLabel, Counter>,
    api_key_cache: Family<ResultLabel, Counter>,
    jwks_refreshes: Counter,
    rate_limited: Counter,
    /// Set from [`Gauges`] when scraped, in the order of `GAUGES`.
    gauges: Vec<Gauge>,
}

/// The gauges' names and help, in the order [`Gauges::values`] gives them.
const GAUGES: [(&str, &str); 10] = [
    (
        "memberd_revision",
        "The policy revision the index has reached",
    ),
    ("memberd_index_users", "Users in the compiled index"),
    ("memberd_index_roles", "Roles in the compiled index"),
    (
        "memberd_index_direct_grants",
        "Direct grants in the compiled index",
    ),
    (
        "memberd_index_role_permissions",
        "Role permissions in the compiled index",
    ),
    (
        "memberd_index_assignments",
        "Role assignments in the compiled index",
    ),
    ("memberd_db_pool_connections", "Open database connections"),
    (
        "memberd_db_pool_idle_connections",
        "Idle database connections",
    ),
    (
        "memberd_policy_rows_skipped",
        "Stored policy rows the index left out because they do not compile",
    ),
    (
        "memberd_api_client_rows_remembered",
        "API client rows (or their absence) remembered for a second",
    ),
];

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let requests = Family::default();
    registry.register(
        "memberd_http_requests",
        "HTTP requests answered, by route template, method and status",
        Family::clone(&requests),
    );
    let durations: Durations = Family::new_with_constructor(|| Histogram::new(BUCKETS));
    registry.register(
        "memberd_http_request_duration_seconds",
        "Time to answer HTTP requests, by route template, method and status",
        durations.clone(),
    );
    let checks = Family::default();
    registry.register(
        "memberd_checks",
        "Permission checks decided, by decision",
        Family::clone(&checks),
    );
    let snapshots = Counter::default();
    registry.register(
        "memberd_snapshots",
        "Permission snapshots served",
        snapshots.clone(),
    );
    let logins = Family::default();
    registry.register(
        "memberd_logins",
        "Logins to memberd's own accounts, by outcome",
        Family::clone(&logins),
    );
    let api_key_cache = Family::default();
    registry.register(
        "memberd_api_key_cache",
        "API-key verifications answered from the cache (hit) or by hashing (miss)",
        Family::clone(&api_key_cache),
    );
    let jwks_refreshes = Counter::default();
    registry.register(
        "memberd_jwks_refreshes",
        "Fetches of the identity provider's JWKS",
        jwks_refreshes.clone(),
    );
    let rate_limited = Counter::default();
    registry.register(
        "memberd_rate_limited",
        "Requests refused with 429 by a rate limit",
        rate_limited.clone(),
    );
    let gauges = GAUGES
        .iter()
        .map(|(name, help)| {
            let gauge = Gauge::default();
            registry.register(*name, *help, gauge.clone());
            gauge
        })
        .collect();
    Metrics {
        registry,
        requests,
        durations,
        checks,
        snapshots,
        logins,
        api_key_cache,
        jwks_refreshes,
        rate_limited,
        gauges,
    }
});

#[derive(Debug, Clone, Copy)]
pub enum Login {
    Success,
    Failure,
    Lockout,
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

/// The route template as a label that lives as long as the process: each
/// template (a bounded set, the router's) is copied once.
fn route_label(route: &str) -> &'static str {
    static ROUTES: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(RwLock::default);
    if let Some(known) = ROUTES.read().unwrap_or_else(|p| p.into_inner()).get(route) {
        return known;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = routes.get(route) {
        return known;
    }
    let interned: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(interned);
    interned
}

pub fn request(route: &str, method: &str, status: u16, latency: Duration) {
    let labels = RequestLabels {
        route: route_label(route),
        method: method_label(method),
        status,
    };
    METRICS.requests.get_or_create(&labels).inc();
    METRICS
        .durations
        .get_or_create(&labels)
        .observe(latency.as_secs_f64());
}

pub fn checks(allowed: u64, denied: u64) {
    let decision = |decision| METRICS.checks.get_or_create(&DecisionLabel { decision });
    decision("allow").inc_by(allowed);
    decision("deny").inc_by(denied);
}

pub fn snapshot() {
    METRICS.snapshots.inc();
}

pub fn login(outcome: Login) {
    let outcome = match outcome {
        Login::Success => "success",
        Login::Failure => "failure",
        Login::Lockout => "lockout",
    };
    METRICS
        .logins
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

pub fn api_key_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    METRICS
        .api_key_cache
        .get_or_create(&ResultLabel { result })
        .inc();
}

pub fn jwks_refresh() {
    METRICS.jwks_refreshes.inc();
}

pub fn rate_limited() {
    METRICS.rate_limited.inc();
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

impl Gauges {
    /// The values, in the order of `GAUGES`.
    fn values(&self) -> [i64; 10] {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        [
            self.revision,
            count(self.index_users),
            count(self.index_roles),
            count(self.index_direct_grants),
            count(self.index_role_permissions),
            count(self.index_assignments),
            i64::from(self.db_pool_size),
            count(self.db_pool_idle),
            i64::try_from(self.policy_rows_skipped).unwrap_or(i64::MAX),
            count(self.api_client_rows_remembered),
        ]
    }
}

/// The whole registry in Prometheus' text exposition format (0.0.4).
pub fn render(gauges: &Gauges) -> String {
    let m = &*METRICS;
    for (gauge, value) in m.gauges.iter().zip(gauges.values()) {
        gauge.set(value);
    }
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_template_with_their_latency() {
        request("/test/{id}", "BREW", 418, Duration::from_millis(3));
        request("/test/{id}", "BREW", 418, Duration::from_secs(20));
        let text = render(&Gauges {
            revision: 7,
            index_users: 0,
            index_roles: 0,
            index_direct_grants: 0,
            index_role_permissions: 0,
            index_assignments: 0,
            db_pool_size: 0,
            db_pool_idle: 0,
            policy_rows_skipped: 0,
            api_client_rows_remembered: 0,
        });
        let labels = r#"route="/test/{id}",method="OTHER",status="418""#;
        for line in [
            format!("memberd_http_requests_total{{{labels}}} 2"),
            format!("memberd_http_request_duration_seconds_bucket{{{labels},le=\"0.0025\"}} 0"),
            format!("memberd_http_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1"),
            format!("memberd_http_request_duration_seconds_bucket{{{labels},le=\"10\"}} 1"),
            format!("memberd_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2"),
            "memberd_revision 7".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert_eq!(
            route_label("/test/{id}"),
            route_label(&String::from("/test/{id}"))
        );
    }
}
