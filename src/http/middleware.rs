//! Per-request context: the request id (echoed in `X-Request-Id`, in every
//! error body and on every log line of the request) and one access-log line.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use super::extract::caller_ip;
use crate::audit;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, for error bodies.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A caller's id is kept only if it is short and plain, so it cannot forge
/// log lines or headers.
fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub async fn request_context(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    // The route template, not the path: paths carry subjects, which need not be in logs.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // Changes are attributed to an anonymous caller until an extractor
    // authenticates someone.
    let origin = audit::Origin {
        actor: audit::Actor::anonymous(),
        ip: caller_ip(&parts, &state).map(|ip| ip.to_string()),
        request_id: Some(id.clone()),
    };
    let nul = carries_nul(parts.uri.path()) || parts.uri.query().is_some_and(carries_nul);
    // SCIM clients read SCIM's error shape, under SCIM's media type.
    let scim = parts.uri.path().starts_with("/scim/");
    let request = Request::from_parts(parts, body);
    let handled = async move {
        if nul && scim {
            return super::scim::nul_refused();
        }
        if nul {
            return nul_refused().into_response();
        }
        next.run(request).await
    };

    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            audit::scope(origin, handled.instrument(span.clone())),
        )
        .await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::request(&route, method.as_str(), status, elapsed);
    if status == 429 {
        crate::metrics::rate_limited();
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::info!(status, latency_ms, "served"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A NUL (`%00`) in a path or query: no text memberd keeps may hold one
/// (PostgreSQL refuses it in text), so it is refused at the edge, once for
/// every route, as the client's mistake.
fn carries_nul(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

pub fn nul_refused() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_text",
        "text may not contain NUL characters",
    )
}

/// Turns a panic in a handler into the generic 500; the request id still applies.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal(&"a handler panicked").into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_escapes_are_found() {
        assert!(super::carries_nul("/admin/clients/mbc_%00x"));
        assert!(super::carries_nul("q=a%00"));
        assert!(!super::carries_nul("/admin/users/a%20b"));
        assert!(!super::carries_nul("/x/%0A"));
    }

    #[test]
    fn only_plain_ids_are_kept() {
        assert!(super::is_sane("abc-123_x.y"));
        assert!(!super::is_sane(""));
        assert!(!super::is_sane("a b"));
        assert!(!super::is_sane("a\nb"));
        assert!(!super::is_sane(&"a".repeat(129)));
    }
}
