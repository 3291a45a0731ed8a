//! GitHub: the REST client behind the `Forge` trait (github.com or GitHub Enterprise Server at
//! a configurable API URL), its authentication (a token, or a GitHub App installation whose
//! token is minted from the App's key and cached), and its webhooks.

mod auth;
mod client;
mod payload;
pub mod webhook;

pub use auth::Auth;
pub use client::GitHub;
pub use webhook::{parse_event, verify_signature};
