//! The one integration-test binary: real git repositories in temp dirs, real terraform, real
//! SQLite files and (when `TIDEMARK_TEST_POSTGRES_URL` is set) real PostgreSQL.

mod access;
mod browser;
mod cli;
mod controls;
mod dashboard;
mod drift;
mod drift_store;
mod engine;
mod environments;
mod export;
mod forge;
mod gate;
mod github_mock;
mod github_mock_routes;
mod layers;
mod metrics;
mod notify;
mod policy;
mod policy_builtins;
mod provider_cache;
mod pulls;
mod pulls_commands;
mod pulls_harness;
mod pulls_store;
mod recovery;
mod retention;
mod runner;
mod scale;
mod stacks;
mod state;
mod state_readonly;
mod store;
mod support;
mod variables;
mod worker;
