//! Credentials: secrets that cannot be printed, API keys and their hashes,
//! and the shared secrets of service-to-service routes.

pub mod api_key;
pub mod captcha;
pub mod frontend;
pub mod hashing;
pub mod internal;
pub mod password;
mod secret;
pub mod tokens;
pub mod totp;

pub use secret::Secret;
