//! Stacks: discovery, HCL analysis, the stack graph, and the affected set between two commits
//! with the reason for each stack. Everything is read from git objects at a commit; this module
//! does no network or database IO; its only file is the index on disk (`index/disk.rs`).
//!
//! Flow: [`Index`] lists a commit's trees and analyses files by blob id (`hcl`, `eval`);
//! `discovery` resolves that into a snapshot (stacks, module closures, includes, edges);
//! [`affected`] attributes the changed paths to stacks and walks downstream.
//!
//! Choices worth knowing:
//! - A stack's files include its subdirectories, minus nested stacks and directories of
//!   Terraform files it does not call as modules; Markdown never counts, except through `watch`.
//!   A local module is only its Terraform files (`paths::module_file`), the modules it calls,
//!   and the files its expressions name (`reads`): its README images, CI files and uncalled
//!   sub-modules are not inputs of the stacks using it.
//! - Files named by `file()`, `templatefile()`, `fileset()`, `"${path.module}/..."` strings and
//!   Terragrunt's file functions are inputs of the stack reading them; a path computed from
//!   variables is read as far as it is known, and one not known at all is an unresolved input.
//! - Relative paths in Terragrunt files resolve against the file's own directory;
//!   `get_terragrunt_dir()` and `find_in_parent_folders()` against the stack's directory.
//! - A stack without a `backend` block writes `terraform.tfstate` in its directory (Terraform's
//!   default), so a `local` remote state pointing there is an edge.
//! - A repository without `stack.hcl` or `terragrunt.hcl` but with a root `atlantis.yaml`
//!   (version 3) takes its stacks from the projects there (`atlantis`).
//! - `.tf.json`/`.tofu.json` files are rewritten into the HCL that says the same (`json`), so
//!   their modules, backends and remote states give the same edges.
//! - Not analysed: Terragrunt `remote_state` blocks (no remote-state edges to Terragrunt
//!   stacks), `terragrunt.stack.hcl` files (`tgstack`: units not generated and committed are
//!   reported by name, and their local templates are not stacks), and expressions beyond the small set in `eval` (such paths are reported
//!   as unresolved inputs where they are inputs, never guessed). A `terragrunt.hcl` that others
//!   include and that has no `terraform` block is their configuration, not a stack.

mod affected;
mod atlantis;
mod discovery;
mod environment;
mod eval;
mod graph;
mod hash;
mod hcl;
mod index;
mod inputs;
mod instances;
mod json;
mod paths;
mod reads;
mod resolve;
mod state;
pub mod synth;
mod tgstack;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Result;
use git2::{Oid, Repository};
use serde::Serialize;

pub use affected::{Affected, AffectedError, AffectedStack, Reason, ReasonKind, affected};
pub use environment::{instance_path, split_instance};
pub use index::Index;
pub use inputs::{RunInputs, export_of, run_inputs};

use discovery::Snapshot;

/// The backend one Terraform file declares (`backend "s3" {}` gives `s3`; a `cloud` block
/// gives `remote`), or why the file cannot be read as HCL.
pub fn declared_backend(bytes: &[u8]) -> Result<Option<String>, String> {
    let facts = hcl::analyze(bytes, hcl::Role::Terraform);
    if let Some(error) = facts.errors.first() {
        return Err(error.message.clone());
    }
    Ok(facts.backend.map(|backend| backend.kind))
}

/// How a stack is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    Terraform,
    Terragrunt,
}

/// A directory Tidemark plans and applies as one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    /// From the repository root, `/`-separated, no trailing slash; `"."` for the root.
    pub path: String,
    /// `stack { name }`, or the path.
    pub name: String,
    pub kind: StackKind,
    pub runner: Option<String>,
    /// Every upstream stack (explicit `depends_on`, Terragrunt dependencies, remote state),
    /// resolved to paths and sorted.
    pub depends_on: Vec<String>,
    /// The `watch` globs as written.
    pub watch: Vec<String>,
    pub drift_schedule: Option<String>,
    pub auto_apply: bool,
    pub tags: Vec<String>,
    /// What a drift check does about drift it finds.
    pub drift_remediation: DriftRemediation,
    /// Inputs written as expressions Tidemark cannot evaluate (a path computed from
    /// variables): a change to what they name is not detected, so add a `watch` for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved_inputs: Vec<UnresolvedInput>,
    /// Where the stack came from.
    pub source: StackSource,
    /// The Terraform workspace: an `environment`'s `workspace` (runs select it, for stacks
    /// whose own backend has workspaces), or the one an `atlantis.yaml` project names (reported
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The environment this instance deploys (`environment "prod" {}` in `stack.hcl`); `path` is
    /// then `DIR@prod`. `None` for a stack without environments: its one instance is the
    /// directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The environment's variable files, from the repository root: `-var-file` for its plans.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub var_files: Vec<String>,
    /// The environment's `-backend-config` pairs, for a stack with its own backend.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub backend_config: std::collections::BTreeMap<String, String>,
    /// `false` for an `atlantis.yaml` project with `autoplan.enabled: false`: the poller never
    /// queues its plans on its own.
    #[serde(skip_serializing_if = "is_true")]
    pub autoplan: bool,
    /// The `terraform_version` an `atlantis.yaml` project asks for. Reported only: the runner
    /// definition decides the binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terraform_version: Option<String>,
}

fn is_true(value: &bool) -> bool {
    *value
}

impl Stack {
    /// The stack's directory: `path` without the `@environment` of an instance.
    pub fn dir(&self) -> &str {
        match &self.environment {
            Some(env) => self
                .path
                .strip_suffix(env.as_str())
                .and_then(|p| p.strip_suffix('@'))
                .unwrap_or(&self.path),
            None => &self.path,
        }
    }
}

/// Where a stack's definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum StackSource {
    /// A `stack.hcl` in its directory.
    #[serde(rename = "stack.hcl")]
    StackHcl,
    /// A `terragrunt.hcl` in its directory.
    #[serde(rename = "terragrunt.hcl")]
    Terragrunt,
    /// A project of the root `atlantis.yaml`.
    #[serde(rename = "atlantis.yaml")]
    Atlantis,
    /// A directory of Terraform files that no other uses as a module.
    #[serde(rename = "autodiscovery")]
    Autodiscovery,
}

impl StackSource {
    /// The name printed and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StackHcl => "stack.hcl",
            Self::Terragrunt => "terragrunt.hcl",
            Self::Atlantis => "atlantis.yaml",
            Self::Autodiscovery => "autodiscovery",
        }
    }
}

/// One input of a stack that cannot be evaluated, where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct UnresolvedInput {
    pub file: String,
    pub line: u32,
    /// The expression as written (`source = var.x ? ... : ...`).
    pub expression: String,
}

/// Where something is written: a file from the repository root and a line in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
}

/// `drift_remediation` in `stack.hcl`: what to do about drift beyond recording and reporting
/// it (`none`), by queueing a plan of the head (`plan`), or an apply through the apply gate
/// (`apply`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DriftRemediation {
    #[default]
    None,
    Plan,
    Apply,
}

impl DriftRemediation {
    /// The setting as written and stored: `none`, `plan` or `apply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Plan => "plan",
            Self::Apply => "apply",
        }
    }
}

impl std::str::FromStr for DriftRemediation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Self::None),
            "plan" => Ok(Self::Plan),
            "apply" => Ok(Self::Apply),
            other => Err(format!(
                "{other:?} is not one of \"none\", \"plan\", \"apply\""
            )),
        }
    }
}

/// A problem with one stack's configuration: broken input is data, reported next to the
/// stacks that could still be computed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StackError {
    pub stack: String,
    pub file: String,
    pub line: Option<u32>,
    pub message: String,
}

/// How an edge between two stacks arose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    DependsOn,
    Dependency,
    RemoteState,
}

/// An edge of the stack graph: `to` depends on `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
}

/// The stacks at one commit and the graph between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub commit: String,
    /// Sorted by path. A stack with environments is listed once per environment, as its
    /// instances (`stacks/app@prod`).
    pub stacks: Vec<Stack>,
    /// Sorted by downstream, then upstream.
    pub edges: Vec<Edge>,
    pub errors: Vec<StackError>,
}

impl Discovery {
    /// Stack paths in dependency order (upstreams first), or the stacks on a cycle.
    pub fn order(&self) -> Result<Vec<String>, Vec<String>> {
        let position: hash::Map<&str, usize> = self
            .stacks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.as_str(), i))
            .collect();
        let nodes: Vec<usize> = (0..self.stacks.len()).collect();
        let upstreams = |i: usize| {
            self.stacks[i]
                .depends_on
                .iter()
                .filter_map(|p| position.get(p.as_str()).copied())
                .collect()
        };
        let name = |v: Vec<usize>| v.into_iter().map(|i| self.stacks[i].path.clone()).collect();
        graph::order(&nodes, &upstreams).map(name).map_err(name)
    }

    /// The stacks `path` depends on directly.
    pub fn upstreams(&self, path: &str) -> &[String] {
        self.stacks
            .binary_search_by(|s| s.path.as_str().cmp(path))
            .map(|i| self.stacks[i].depends_on.as_slice())
            .unwrap_or(&[])
    }
}

/// Discovers the stacks at a commit. Pass the repository's [`Index`] to reuse earlier work.
pub fn discover(repo: &Repository, commit: Oid, index: Option<&mut Index>) -> Result<Discovery> {
    let mut scratch = Index::new();
    let index = index.unwrap_or(&mut scratch);
    let tree = crate::repo::commit_tree(repo, commit)?;
    let snap = snapshot(repo, tree, index)?;
    let instances = &snap.instances;
    let mut edges = Vec::new();
    for (i, ups) in instances.upstreams.iter().enumerate() {
        for (up, kind) in ups {
            edges.push(Edge {
                from: instances.stacks[*up].path.clone(),
                to: instances.stacks[i].path.clone(),
                kind: *kind,
            });
        }
    }
    Ok(Discovery {
        commit: commit.to_string(),
        stacks: instances.stacks.clone(),
        edges,
        errors: snap.errors.clone(),
    })
}

/// The resolved snapshot of a root tree, from the index when it has one.
fn snapshot(repo: &Repository, tree: Oid, index: &mut Index) -> Result<Arc<Snapshot>> {
    if let Some(snap) = index.snapshot(tree) {
        return Ok(snap);
    }
    let snap = Arc::new(discovery::build(repo, tree, index)?);
    index.keep_snapshot(tree, snap.clone());
    Ok(snap)
}
