//! `tidemark graph`: the stack graph at a commit, as Graphviz dot or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::ValueEnum;

use super::print_json;
use super::stacks::exit_code;
use crate::{repo, stacks};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    #[default]
    Dot,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any git repository: a working copy or a bare one.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The commit to read (anything git resolves).
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
    /// Exit non-zero when any stack has a configuration error.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let repo = repo::open(&args.repo)?;
    let commit = repo::resolve_commit(&repo, &args.rev)?;
    let found = super::discover_cached(&repo, commit)?;
    match args.format {
        GraphFormat::Json => print_json(&found)?,
        GraphFormat::Dot => print!("{}", dot(&found)),
    }
    Ok(exit_code(found.order().err(), &found.errors, args.strict))
}

/// Graphviz: one node per stack (labelled with its name), edges from upstream to downstream.
fn dot(found: &stacks::Discovery) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph stacks {\n");
    for stack in &found.stacks {
        out.push_str(&format!(
            "  {} [label={}];\n",
            quote(&stack.path),
            quote(&stack.name)
        ));
    }
    for edge in &found.edges {
        let kind = serde_json::to_value(edge.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quote(&edge.from),
            quote(&edge.to),
            quote(&kind)
        ));
    }
    out.push_str("}\n");
    out
}
