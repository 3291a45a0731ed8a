//! `tidemark prs [--repo R]` and `tidemark pr REPO NUMBER`: the pull requests the service
//! follows, their plans per stack, and what their merge applied.

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{ConfigArg, Format, print_json};
use crate::engine::{PrView, pr_views};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this repository's pull requests.
    #[arg(long)]
    pub repo: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository's name in the server config.
    pub repo: String,
    /// The pull request's number.
    pub number: i64,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn list(args: ListArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let prs = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        pr_views(&store, args.repo.as_deref(), None).await
    })?;
    match args.format {
        Format::Json => print_json(&serde_json::json!({ "prs": prs }))?,
        Format::Text if prs.is_empty() => println!("no pull request is followed"),
        Format::Text => {
            for pr in &prs {
                println!(
                    "{}#{}  {:<6}  {}  {} stack(s)  {}",
                    pr.repo,
                    pr.number,
                    pr.state,
                    short(&pr.head),
                    pr.stacks.len(),
                    pr.title
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(args: ShowArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let prs = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        pr_views(&store, Some(&args.repo), Some(args.number)).await
    })?;
    let Some(pr) = prs.into_iter().next() else {
        bail!(
            "pull request #{} of repo {} is not followed (is the repo's github block set, and has it been polled?)",
            args.number,
            args.repo
        );
    };
    match args.format {
        Format::Json => print_json(&pr)?,
        Format::Text => print_text(&pr),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(pr: &PrView) {
    println!(
        "{}#{}: {} ({}, by {})",
        pr.repo, pr.number, pr.title, pr.state, pr.author
    );
    println!("head {}", pr.head);
    if let Some(commit) = &pr.planned_commit {
        println!("planned on {commit}");
    }
    if let Some(skipped) = &pr.skipped {
        println!("not planned: {skipped}");
    }
    if let Some(merge) = &pr.merge_commit_sha {
        println!("merged as {merge}");
    }
    for stack in &pr.stacks {
        let counts = stack
            .summary
            .as_ref()
            .map(|s| format!("+{} ~{} -{} ±{}", s.add, s.change, s.destroy, s.replace))
            .unwrap_or_default();
        println!(
            "  {}  run {} {}  {}",
            stack.stack, stack.run_id, stack.status, counts
        );
        if let Some(merge) = &stack.merge {
            println!("    merge: {merge}");
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
