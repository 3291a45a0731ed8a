//! The runner: runner definitions, workspaces, the sandbox, running a stack's steps, and what
//! comes out of a plan (the redacted plan JSON, its summary, the encrypted plan artifact).
//!
//! Only this module starts processes. A failed step is an outcome ([`RunStatus`]), never a
//! Rust error: callers record it and carry on.
//!
//! How a caller plans a stack:
//!
//! ```text
//! at start:   RunnerSet::load(&[RunnerSource::in_config(config_path, config_text)])
//!             PlanKey::load(Some("TIDEMARK_PLAN_KEY"), &data_dir.join("plan.key"))
//!             Workspace::sweep_stale(&workspaces_root)
//! per stack:  let ws = Workspace::export(&workspaces_root, &repo, commit)?;   // blocking git
//!             let outcome = runner::plan(PlanRequest { workspace: ws, .. }, log_tx, cancel).await;
//!             // store outcome.status / error / summary / artifact; log_rx got redacted lines
//! to apply:   runner::apply(ApplyRequest { run: <same inputs, fresh workspace>, artifact }, ..)
//! ```
//!
//! Invariants:
//! - Every process runs under prlimit and (unless the config says `sandbox = "none"`)
//!   bubblewrap, with an environment built from nothing ([`RunnerDef::env_allow`], the runner's
//!   `env`, the request's variables and secrets).
//! - Nothing leaves this module unredacted: log lines, error tails, the stored plan JSON and
//!   the summary. The one exception is the stdout of a data step from [`run_step`] (a
//!   `state pull` is the caller's to protect), and the binary plan, which is only ever stored
//!   encrypted.
//! - A step's processes never outlive it: timeout, cancellation and normal exit all end with
//!   the process group killed (and with bubblewrap, the PID namespace gone).

mod artifact;
mod backend;
mod definition;
mod job;
mod lifeline;
mod process;
pub mod provider_cache;
mod proxy;
mod redact;
mod sandbox;
mod steps;
mod system;
mod workspace;

pub use artifact::{ArtifactError, Binding, PlanArtifact, digest};
pub use backend::{OVERRIDE_FILE, StackBackend, StateBackend, stack_backend};
pub use definition::{
    DefinitionError, ExitMeaning, Limits, Origin, RunnerDef, RunnerSet, RunnerSource,
    SandboxSettings, StepDef, StepKind,
};
pub use lifeline::{LIFELINE_COMMAND, run_lifeline};
pub use proxy::{PROXY_COMMAND, run_state_proxy};
pub use redact::{
    PLAN_FORMAT_KEYS, PLAN_WORD_FIELDS, Redactor, StackSensitives, redact_plan_json,
    sensitive_in_stack,
};
pub use sandbox::{
    SandboxError, SandboxMode, SandboxSpec, SandboxTools, command_line, find_on_path,
};
pub use steps::{
    ApplyOutcome, ApplyRequest, Instance, PlanOutcome, PlanRequest, StepOutcome, apply, plan,
    run_step,
};
pub use system::{SystemMount, accounts, system_view};
pub use workspace::Workspace;

use serde::Serialize;

/// Which output a log line came from; `System` lines are Tidemark's own notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

/// One line of a step's output, already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub step: String,
    pub stream: Stream,
    pub text: String,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}
