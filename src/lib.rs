//! memberd: the one source of truth for an organisation's users and what each
//! of them may do.
//!
//! Requests flow one way: `http` (and `cli`) → `service` → `store`.

pub mod app;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod model;
pub mod png;
pub mod ratelimit;
pub mod redis_link;
pub mod service;
pub mod store;
pub mod telemetry;
