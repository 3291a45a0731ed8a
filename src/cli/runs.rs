//! `tidemark runs`: the run history, newest first.

use std::process::ExitCode;

use anyhow::Result;

use super::{ConfigArg, Format, print_json};
use crate::api::RunView;
use crate::store::{RunFilter, RunKind, RunStatus, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only runs of this repository.
    #[arg(long)]
    pub repo: Option<String>,
    /// Only runs of this stack (its path from the repository root).
    #[arg(long)]
    pub stack: Option<String>,
    /// Only runs with this status.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<RunStatus>,
    /// Only runs of this kind (plan, apply, drift).
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<RunKind>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Only runs older than this run id (the next page after a page ending at it).
    #[arg(long)]
    pub before: Option<i64>,
    /// Only runs of this commit (a sha or its prefix).
    #[arg(long)]
    pub commit: Option<String>,
    /// Only runs of this pull request.
    #[arg(long)]
    pub pr: Option<i64>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<RunKind, String> {
    s.parse()
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = args.config.load()?;
    let runs = super::runtime()?.block_on(async {
        let store = Store::open(&config.database).await?;
        let filter = RunFilter {
            repo: args.repo,
            stack: args.stack,
            status: args.status,
            kind: args.kind,
            limit: args.limit,
            before: args.before,
            commit: args.commit,
            pr: args.pr,
        };
        store.runs(&filter).await
    })?;
    match args.format {
        Format::Json => {
            let runs: Vec<RunView> = runs.into_iter().map(RunView::from).collect();
            print_json(&serde_json::json!({ "runs": runs }))?;
        }
        Format::Text => {
            println!(
                "{:>6}  {:<10} {:<28} {:<10} {:<6} {:<12} {:<19} created",
                "id", "repo", "stack", "commit", "kind", "status", "+add ~chg -del ±rep"
            );
            for run in runs {
                let summary = run
                    .change_summary()
                    .map(|s| format!("+{} ~{} -{} ±{}", s.add, s.change, s.destroy, s.replace))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>6}  {:<10} {:<28} {:<10} {:<6} {:<12} {:<19} {}",
                    run.id,
                    run.repo,
                    run.stack,
                    &run.commit[..run.commit.len().min(10)],
                    run.kind.as_str(),
                    run.status.as_str(),
                    summary,
                    run.created_at.format("%Y-%m-%d %H:%M:%S")
                );
                if let Some(error) = run.error.filter(|_| run.status != RunStatus::Succeeded) {
                    println!("        {}", error.lines().last().unwrap_or(""));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
