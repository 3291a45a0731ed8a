//! `tidemark stacks`: the stacks at a commit and their settings.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{Format, print_json};
use crate::{repo, stacks};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any git repository: a working copy or a bare one.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The commit to read (anything git resolves).
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Exit non-zero when any stack has a configuration error.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let repo = repo::open(&args.repo)?;
    let commit = repo::resolve_commit(&repo, &args.rev)?;
    let found = super::discover_cached(&repo, commit)?;
    match args.format {
        Format::Json => print_json(&found)?,
        Format::Text => {
            for stack in &found.stacks {
                let kind = match stack.kind {
                    stacks::StackKind::Terraform => "terraform",
                    stacks::StackKind::Terragrunt => "terragrunt",
                };
                let name = if stack.name == stack.path {
                    String::new()
                } else {
                    format!(" ({})", stack.name)
                };
                println!(
                    "{}{name} [{kind}] from {}",
                    stack.path,
                    stack.source.as_str()
                );
                if let Some(environment) = &stack.environment {
                    print!("  environment {environment}");
                    if !stack.var_files.is_empty() {
                        print!(", var files {}", stack.var_files.join(", "));
                    }
                    println!();
                }
                if let Some(workspace) = &stack.workspace {
                    println!(
                        "  workspace {workspace} (selected when the stack keeps its own backend)"
                    );
                }
                if let Some(version) = &stack.terraform_version {
                    println!("  terraform_version {version} (reported only: the runner decides)");
                }
                if !stack.autoplan {
                    println!("  autoplan disabled: changes are not planned on their own");
                }
                if !stack.depends_on.is_empty() {
                    println!("  depends on {}", stack.depends_on.join(", "));
                }
                for input in &stack.unresolved_inputs {
                    println!(
                        "  unresolved input {}:{} {} (changes to it are not detected; add a watch)",
                        input.file, input.line, input.expression
                    );
                }
            }
            print_errors(&found.errors);
        }
    }
    Ok(exit_code(found.order().err(), &found.errors, args.strict))
}

/// Errors in the text format, after the data.
pub(super) fn print_errors(errors: &[stacks::StackError]) {
    if errors.is_empty() {
        return;
    }
    println!("errors:");
    for e in errors {
        let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
        println!("  {}: {}{line}: {}", e.stack, e.file, e.message);
    }
}

/// 1 on a dependency cycle (named on stderr) or, with `--strict`, on any configuration error.
pub(super) fn exit_code(
    cycle: Option<Vec<String>>,
    errors: &[stacks::StackError],
    strict: bool,
) -> ExitCode {
    if let Some(cycle) = cycle {
        eprintln!("error: dependency cycle among stacks: {}", cycle.join(", "));
        return ExitCode::from(1);
    }
    if strict && !errors.is_empty() {
        eprintln!("error: {} configuration error(s) (--strict)", errors.len());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
