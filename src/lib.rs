//! Tidemark: a GitOps runner for Terraform and OpenTofu.

// Listed from the top of the layering down: a module uses only modules listed below it
// (ARCHITECTURE.md, "Layers"; `tests/it/layers.rs` checks it).
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod drift;
pub mod engine;
pub mod forge;
pub mod gate;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod repo;
pub mod review;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod stacks;
pub mod state_backend;
pub mod statefile;
pub mod store;
pub mod telemetry;
pub mod variables;

/// Installs ring as rustls's crypto provider for this process: reqwest is built without a
/// default one (to keep aws-lc out of the build) and panics on its first client otherwise.
/// Calling it again is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
