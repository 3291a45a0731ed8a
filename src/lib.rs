//! Tidemark: a GitOps runner for Terraform and OpenTofu.

pub mod repo;
pub mod stacks;
pub mod cli;
