//! Tidemark: a GitOps runner for Terraform and OpenTofu.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod notify;
pub mod policy;
pub mod repo;
pub mod runner;
pub mod stacks;
pub mod store;

/// Installs ring as rustls's crypto provider for this process: reqwest is built without a
/// default one (to keep aws-lc out of the build) and panics on its first client otherwise.
/// Calling it again is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
