//! `tidemark plan`: plans stacks of a local repository at a commit through the same runner
//! and sandbox as the server, and prints their summaries. What a platform engineer runs
//! before pushing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Format, print_json, runtime};
use crate::crypto::PlanKey;
use crate::plan::{Counts, OutputChange, ResourceChange};
use crate::runner::{
    self, LogLine, PlanRequest, RunStatus, RunnerDef, RunnerSet, SandboxMode, Stream, Workspace,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub local: LocalRunArgs,
    /// The revision to plan.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Where workspaces are created (default: a `tidemark-workspaces` dir in the temp dir).
    #[arg(long)]
    pub workspaces: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// What the commands that run stacks of a local repository without the service share: the
/// repository, which stacks, and how they run (`tidemark plan`, `tidemark drift check`).
#[derive(Debug, clap::Args)]
pub struct LocalRunArgs {
    /// The git repository (a working copy or a bare repository). Only committed files are
    /// read.
    #[arg(long)]
    pub repo: PathBuf,
    /// A stack directory relative to the repository root; repeat for several. Default: every
    /// stack discovery finds.
    #[arg(long = "stack")]
    pub stacks: Vec<String>,
    /// The runner definition to use.
    #[arg(long, default_value = "terraform")]
    pub runner: String,
    /// A directory of `*.hcl` runner definitions overriding the shipped ones.
    #[arg(long, env = "TIDEMARK_RUNNERS_DIR")]
    pub runners_dir: Option<PathBuf>,
    /// `none` runs steps without bubblewrap (limits still apply); every run warns.
    #[arg(long, value_enum, default_value_t = SandboxArg::Bubblewrap)]
    pub sandbox: SandboxArg,
}

impl LocalRunArgs {
    /// The chosen runner definition, with the overrides of `--runners-dir` applied.
    pub fn runner_def(&self) -> Result<RunnerDef> {
        let overrides = match &self.runners_dir {
            Some(dir) => RunnerSet::read_dir(dir)?,
            None => Vec::new(),
        };
        Ok(RunnerSet::load(&overrides)?.get(&self.runner)?.clone())
    }

    /// The stacks named with `--stack`, else every stack discovered at `commit` (discovery
    /// errors are printed as warnings).
    pub fn stacks_at(
        &self,
        repo: &git2::Repository,
        commit: git2::Oid,
        index: &mut crate::stacks::Index,
    ) -> Result<Vec<String>> {
        if !self.stacks.is_empty() {
            return Ok(self.stacks.clone());
        }
        let discovery = crate::stacks::discover(repo, commit, Some(index))?;
        for error in &discovery.errors {
            eprintln!(
                "warning: {}: {}: {}",
                error.stack, error.file, error.message
            );
        }
        Ok(discovery.stacks.into_iter().map(|s| s.path).collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxArg {
    Bubblewrap,
    None,
}

impl SandboxArg {
    pub fn mode(self) -> SandboxMode {
        match self {
            SandboxArg::Bubblewrap => SandboxMode::Bubblewrap,
            SandboxArg::None => SandboxMode::None,
        }
    }
}

/// The JSON document `--format json` prints.
#[derive(Debug, Serialize)]
struct Report {
    stacks: Vec<StackReport>,
}

/// One stack's entry in the output.
#[derive(Debug, Serialize)]
struct StackReport {
    path: String,
    status: RunStatus,
    summary: Option<Counts>,
    resources: Vec<ResourceChange>,
    outputs: Vec<OutputChange>,
    error: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let def = args.local.runner_def()?;
    let sandbox = args.local.sandbox.mode();
    let root = args
        .workspaces
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("tidemark-workspaces"));
    Workspace::sweep_stale(&root)?;

    let repo = crate::repo::open(&args.local.repo)?;
    let commit = crate::repo::resolve_commit(&repo, &args.rev)?;
    // One analysis of the commit for discovery and every stack's export, kept for the next call.
    let mut index = super::cached_index(&repo);
    let stacks = args.local.stacks_at(&repo, commit, &mut index)?;
    let repo_name = repo_name(&args.local.repo);
    let key = PlanKey::generate();
    let rt = runtime()?;
    let cancel = CancellationToken::new();
    rt.spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        }
    });

    let mut reports = Vec::new();
    for stack in stacks {
        let (workspace, instance) =
            Workspace::export_instance(&root, &repo, commit, &stack, Some(&mut index))?;
        let dir = instance
            .as_ref()
            .map_or(stack.clone(), |s| s.dir().to_string());
        let req = PlanRequest {
            instance: instance
                .as_ref()
                .map(runner::Instance::of)
                .unwrap_or_default(),
            provider_cache: None,
            lifeline: std::env::current_exe().ok(),
            workspace,
            stack: dir,
            runner: def.clone(),
            sandbox,
            variables: Vec::new(),
            secrets: Vec::new(),
            files: Vec::new(),
            repo: repo_name.clone(),
            commit: commit.to_string(),
            key: key.clone(),
            // `tidemark plan` is offline and keeps no state: stacks plan against an empty one.
            state: None,
        };
        let show_logs = args.format == Format::Text;
        let outcome = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<LogLine>(256);
            let printer = tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    if show_logs {
                        print_log(&line);
                    }
                }
            });
            let outcome = runner::plan(req, tx, cancel.clone()).await;
            let _ = printer.await;
            outcome
        });
        let summary = outcome.summary.unwrap_or_default();
        reports.push(StackReport {
            path: stack,
            status: outcome.status,
            summary: outcome.error.is_none().then_some(summary.summary),
            resources: summary.resources,
            outputs: summary.outputs,
            error: outcome.error,
        });
        if cancel.is_cancelled() {
            break;
        }
    }
    super::keep_index(&mut index);

    let ok = reports.iter().all(|r| r.status == RunStatus::Succeeded);
    let code = if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    match args.format {
        Format::Text => print_text(&reports),
        Format::Json => print_json(&Report { stacks: reports })?,
    }
    Ok(code)
}

fn print_log(line: &LogLine) {
    let marker = match line.stream {
        Stream::System => "#",
        Stream::Stdout | Stream::Stderr => "|",
    };
    eprintln!("{:>8} {marker} {}", line.step, line.text);
}

fn print_text(reports: &[StackReport]) {
    for report in reports {
        let status = serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match &report.summary {
            Some(c) => println!(
                "{}: {status}: {} to add, {} to change, {} to destroy, {} to replace",
                report.path, c.add, c.change, c.destroy, c.replace
            ),
            None => println!("{}: {status}", report.path),
        }
        for r in &report.resources {
            println!("  {} ({})", r.address, r.actions.join(", "));
        }
        for o in &report.outputs {
            println!("  output {} ({})", o.name, o.actions.join(", "));
        }
        if let Some(error) = &report.error {
            for line in error.lines() {
                println!("  ! {line}");
            }
        }
    }
}

/// The repository's directory name (without `.git`), the name a plan is bound to.
pub(super) fn repo_name(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".to_string());
    name.trim_end_matches(".git").to_string()
}
