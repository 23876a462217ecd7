//! Credentials: secrets that cannot be printed, API keys and their hashes,
//! and the shared secrets of service-to-service routes.

pub mod api_key;
pub mod internal;
mod secret;

pub use secret::Secret;
