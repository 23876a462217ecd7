//! Authorization: the engine that answers "may this user do this?" and
//! "what may this user do?". Pure: no IO, no HTTP.

pub mod casbin;
pub mod functions;
pub mod index;
pub mod pattern;

#[cfg(test)]
mod tests;
