//! Tidemark: a GitOps runner for Terraform and OpenTofu.

pub mod cli;
pub mod config;
pub mod repo;
pub mod store;
pub mod api;
pub mod app;
pub mod engine;
