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
