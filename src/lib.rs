//! Tidemark: a GitOps runner for Terraform and OpenTofu.

pub mod repo;
pub mod cli;
