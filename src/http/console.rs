//! The admin console: three files compiled into the binary and served here,
//! with a content security policy that lets the page load nothing but them
//! (and talk to nothing but this server).

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::openapi::{Api, Auth, Doc};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

/// Images only from here or inline (the captcha and the TOTP QR code are
/// data URLs); no inline script, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes() -> Api {
    Api::new("console")
        .route(
            "/",
            get(|| async { Redirect::to("/console") }),
            &[Doc::get("Redirects to the console", Auth::Public).redirects()],
        )
        .route(
            "/console",
            get(index),
            &[Doc::get("The admin console", Auth::Public).answers_text("text/html")],
        )
        .route(
            "/console/app.js",
            get(script),
            &[Doc::get("The console's script", Auth::Public).answers_text("text/javascript")],
        )
        .route(
            "/console/app.css",
            get(style),
            &[Doc::get("The console's style sheet", Auth::Public).answers_text("text/css")],
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
