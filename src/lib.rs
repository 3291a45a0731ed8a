//! Tidemark: a GitOps runner for Terraform and OpenTofu.

pub mod cli;
pub mod repo;
pub mod stacks;
