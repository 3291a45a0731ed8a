//! `tidemark affected`: the stacks a change affects between two commits, and why.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::stacks::{exit_code, print_errors};
use super::{Format, print_json};
use crate::stacks::{AffectedError, Reason, ReasonKind};
use crate::{repo, stacks};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any git repository: a working copy or a bare one.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The commit the change starts from.
    #[arg(long)]
    pub base: String,
    /// The commit the change ends at.
    #[arg(long)]
    pub head: String,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Exit non-zero when any stack has a configuration error.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let repo = repo::open(&args.repo)?;
    let base = repo::resolve_commit(&repo, &args.base)?;
    let head = repo::resolve_commit(&repo, &args.head)?;
    let mut index = super::cached_index(&repo);
    let result = stacks::affected(&repo, Some(base), head, Some(&mut index));
    super::keep_index(&mut index);
    let result = match result {
        Ok(result) => result,
        Err(AffectedError::Cycle { stacks, .. }) => return Ok(exit_code(Some(stacks), &[], false)),
        Err(AffectedError::Git(e)) => return Err(e),
    };
    match args.format {
        Format::Json => print_json(&result)?,
        Format::Text => {
            if result.stacks.is_empty() {
                println!("no stacks affected");
            }
            for stack in &result.stacks {
                let name = if stack.name == stack.path {
                    String::new()
                } else {
                    format!(" ({})", stack.name)
                };
                println!("{}{name}", stack.path);
                for reason in &stack.reasons {
                    println!("  {}", describe(reason));
                }
            }
            print_errors(&result.errors);
        }
    }
    Ok(exit_code(None, &result.errors, args.strict))
}

/// One reason in words: the *why* a person reads.
fn describe(reason: &Reason) -> String {
    let file = reason.file.as_deref().unwrap_or_default();
    match reason.kind {
        ReasonKind::Added => "stack added".to_string(),
        ReasonKind::Removed => "stack removed (not destroyed automatically)".to_string(),
        ReasonKind::File => match &reason.read_by {
            Some(at) => format!("changed {file}, read at {}:{}", at.file, at.line),
            None => format!("changed {file}"),
        },
        ReasonKind::Module => format!(
            "changed {file} in local module {}",
            reason.module.as_deref().unwrap_or_default()
        ),
        ReasonKind::Include => format!("changed included file {file}"),
        ReasonKind::Watch => format!("changed watched file {file}"),
        ReasonKind::Dependency => format!(
            "depends on affected stack {}",
            reason.stack.as_deref().unwrap_or_default()
        ),
    }
}
