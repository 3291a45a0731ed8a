//! The runner's entry points: [`plan`] (`init`, `version`, `plan -out`, `show -json`),
//! [`apply`] (`init`, `version`, binding check, `apply`) and [`run_step`], with their requests
//! and outcomes. Each step runs in the sandbox with the runner's arguments, environment and
//! limits (see `job.rs`); a failing step ends the run with an outcome that carries the
//! redacted stderr tail.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::artifact::PlanArtifact;
use super::backend::StateBackend;
use super::definition::{RunnerDef, StepKind};
use super::job::{Job, Stop, code};
use super::sandbox::SandboxMode;
use super::workspace::Workspace;
use super::{LogLine, RunStatus};
use crate::crypto::PlanKey;
use crate::crypto::Secret;
use crate::plan::PlanSummary;

/// Everything a plan needs. The workspace is consumed: it is removed when the plan ends.
pub struct PlanRequest {
    /// A workspace holding the commit's tree ([`Workspace::export`]).
    pub workspace: Workspace,
    /// The stack's directory, relative to the repository root (`""` or `.` for the root).
    pub stack: String,
    pub runner: RunnerDef,
    pub sandbox: SandboxMode,
    /// Plain environment variables for the steps (e.g. `TF_VAR_region`).
    pub variables: Vec<(String, String)>,
    /// Secret environment variables: passed to the steps, redacted from everything.
    pub secrets: Vec<(String, Secret)>,
    /// Secret files: bound read-only into the sandbox at their own path (a variable names
    /// them); their contents are redacted from everything.
    pub files: Vec<std::path::PathBuf>,
    /// Binding fields: the repository's name and the planned commit.
    pub repo: String,
    pub commit: String,
    pub key: PlanKey,
    /// Tidemark's state backend for this run; used when the stack declares no backend of its
    /// own ([`super::stack_backend`]).
    pub state: Option<StateBackend>,
    /// The instance's environment settings; the default for a stack without environments.
    pub instance: Instance,
    /// The shared provider cache ([`super::provider_cache`]); `None` downloads on every init.
    pub provider_cache: Option<std::path::PathBuf>,
    /// Tidemark's own executable: every step then starts behind its hidden `__lifeline`
    /// command, so no step outlives this process ([`super::lifeline`]). `None` when the
    /// caller is not the `tidemark` binary (library tests).
    pub lifeline: Option<std::path::PathBuf>,
}

/// What an environment adds to a run of its instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub environment: Option<String>,
    /// Variable files from the repository root: `-var-file` for the plan step.
    pub var_files: Vec<String>,
    /// The Terraform workspace to select (`TF_WORKSPACE`), for a stack with its own backend.
    pub workspace: Option<String>,
    /// `-backend-config` pairs for `init`, for a stack with its own backend.
    pub backend_config: std::collections::BTreeMap<String, String>,
    /// The workspace names the instance rather than asks for one (an `atlantis.yaml`
    /// project's): on Tidemark's backend, whose state is per instance already, it is not set.
    pub workspace_optional: bool,
}

impl Instance {
    /// The instance settings of a discovered stack instance.
    pub fn of(stack: &crate::stacks::Stack) -> Instance {
        Instance {
            environment: stack.environment.clone(),
            var_files: stack.var_files.clone(),
            workspace: stack.environment.as_ref().and(stack.workspace.clone()),
            backend_config: stack.backend_config.clone(),
            workspace_optional: stack.source == crate::stacks::StackSource::Atlantis,
        }
    }

    /// The environment variables that carry these settings to terraform (and OpenTofu, and
    /// Terragrunt, which passes them on): `TF_CLI_ARGS_plan` with each `-var-file` (absolute,
    /// under `tree`), `TF_CLI_ARGS_init` with each `-backend-config`, `TF_WORKSPACE`.
    /// `own_backend` says whether the stack keeps its own backend: Tidemark's `http` backend
    /// has no workspaces and its address is already per instance, so these two are refused.
    pub fn env(
        &self,
        tree: &std::path::Path,
        own_backend: bool,
    ) -> Result<Vec<(String, String)>, String> {
        let label = self.environment.as_deref().unwrap_or("default");
        let word = |arg: String| -> Result<String, String> {
            if arg.contains(['"', '\\', '\'', '\n']) {
                Err(format!(
                    "environment {label:?}: {arg:?} holds a quote, backslash or newline, which \
                     terraform's argument variables cannot carry"
                ))
            } else if arg.contains(' ') {
                Ok(format!("\"{arg}\""))
            } else {
                Ok(arg)
            }
        };
        let mut env = Vec::new();
        if !self.var_files.is_empty() {
            let args = self
                .var_files
                .iter()
                .map(|file| word(format!("-var-file={}", tree.join(file).display())))
                .collect::<Result<Vec<_>, _>>()?;
            env.push(("TF_CLI_ARGS_plan".to_string(), args.join(" ")));
        }
        let workspace = self
            .workspace
            .as_ref()
            .filter(|_| own_backend || !self.workspace_optional);
        if !own_backend && (workspace.is_some() || !self.backend_config.is_empty()) {
            return Err(format!(
                "environment {label:?} sets workspace or backend_config, but the stack uses \
                 Tidemark's state backend, which already keeps one state per environment: \
                 remove them, or give the stack a backend of its own"
            ));
        }
        if !self.backend_config.is_empty() {
            let args = self
                .backend_config
                .iter()
                .map(|(k, v)| word(format!("-backend-config={k}={v}")))
                .collect::<Result<Vec<_>, _>>()?;
            env.push(("TF_CLI_ARGS_init".to_string(), args.join(" ")));
        }
        if let Some(workspace) = workspace {
            env.push(("TF_WORKSPACE".to_string(), workspace.clone()));
        }
        Ok(env)
    }
}

/// Shows names, never values: variables may hold anything and requests end up in logs.
impl std::fmt::Debug for PlanRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |pairs: Vec<&String>| pairs.into_iter().cloned().collect::<Vec<_>>();
        f.debug_struct("PlanRequest")
            .field("workspace", &self.workspace.path())
            .field("stack", &self.stack)
            .field("runner", &self.runner.name)
            .field("sandbox", &self.sandbox)
            .field(
                "variables",
                &names(self.variables.iter().map(|(k, _)| k).collect()),
            )
            .field(
                "secrets",
                &names(self.secrets.iter().map(|(k, _)| k).collect()),
            )
            .field("files", &self.files)
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("state", &self.state.as_ref().map(|s| &s.path))
            .finish_non_exhaustive()
    }
}

/// How a plan ended and what it produced.
#[derive(Debug)]
pub struct PlanOutcome {
    pub status: RunStatus,
    /// The exit code of the plan step, or of the step that failed.
    pub exit_code: Option<i32>,
    /// Why the run did not succeed, with the redacted stderr tail.
    pub error: Option<String>,
    pub summary: Option<PlanSummary>,
    pub artifact: Option<PlanArtifact>,
}

/// Applies a stored plan: the same inputs as the plan it came from, plus the artifact.
#[derive(Debug)]
pub struct ApplyRequest {
    pub run: PlanRequest,
    pub artifact: PlanArtifact,
}

/// How an apply ended.
#[derive(Debug)]
pub struct ApplyOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// For a stack with its own backend: the state after the apply (`state_pull`'s stdout).
    /// NOT redacted: store it only encrypted ([`crate::store::Store::record_state`]).
    pub state: Option<Vec<u8>>,
}

/// Plans one stack. Logs stream into `logs` while the steps run; `cancel` stops the running
/// step (its process group is killed) and the plan ends as cancelled.
pub async fn plan(
    req: PlanRequest,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> PlanOutcome {
    let mut job = match Job::prepare(&req, logs, cancel) {
        Ok(job) => job,
        Err(stop) => return PlanOutcome::stopped(stop),
    };
    job.note_export(&req.workspace).await;
    let result = job.plan(&req).await;
    // The workspace (and with it the plan file) goes when `req` drops at the end of this call.
    match result {
        Ok(outcome) => outcome,
        Err(stop) => PlanOutcome::stopped(job.redact_stop(stop)),
    }
}

/// Applies a stored plan after checking that its binding matches what the stack is now.
pub async fn apply(
    req: ApplyRequest,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> ApplyOutcome {
    let mut job = match Job::prepare(&req.run, logs, cancel) {
        Ok(job) => job,
        Err(stop) => return ApplyOutcome::stopped(stop),
    };
    job.note_export(&req.run.workspace).await;
    match job.apply(&req).await {
        Ok((code, state)) => ApplyOutcome {
            status: RunStatus::Succeeded,
            exit_code: Some(code),
            error: None,
            state,
        },
        Err(stop) => ApplyOutcome::stopped(job.redact_stop(stop)),
    }
}

/// How a single step ended ([`run_step`]).
#[derive(Debug)]
pub struct StepOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The stdout of a data step (`version`, `show`, `state_pull`), as the tool printed it:
    /// NOT redacted (a state holds secrets). Other steps log their stdout instead.
    pub stdout: Option<Vec<u8>>,
}

/// Runs one step of the request's runner in its workspace, exactly as [`plan`] would (same
/// sandbox, environment, binds and redaction of the logs). The workspace is kept, so steps can
/// follow each other: `init` then `state_pull`, say.
pub async fn run_step(
    req: &PlanRequest,
    kind: StepKind,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> StepOutcome {
    let mut job = match Job::prepare(req, logs, cancel) {
        Ok(job) => job,
        Err(stop) => return StepOutcome::stopped(stop),
    };
    let capture = matches!(
        kind,
        StepKind::Version | StepKind::Show | StepKind::StatePull
    );
    match job.run(kind, capture).await {
        Ok((run, _)) => StepOutcome {
            status: RunStatus::Succeeded,
            exit_code: code(&run),
            error: None,
            stdout: run.stdout,
        },
        Err(stop) => StepOutcome::stopped(job.redact_stop(stop)),
    }
}

impl StepOutcome {
    fn stopped(stop: Stop) -> StepOutcome {
        StepOutcome {
            status: stop.status,
            exit_code: stop.exit_code,
            error: Some(stop.error),
            stdout: None,
        }
    }
}

impl PlanOutcome {
    fn stopped(stop: Stop) -> PlanOutcome {
        PlanOutcome {
            status: stop.status,
            exit_code: stop.exit_code,
            error: Some(stop.error),
            summary: None,
            artifact: None,
        }
    }
}

impl ApplyOutcome {
    fn stopped(stop: Stop) -> ApplyOutcome {
        ApplyOutcome {
            status: stop.status,
            exit_code: stop.exit_code,
            error: Some(stop.error),
            state: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_never_shows_values_in_debug() {
        let root = tempfile::tempdir().expect("tempdir");
        let set = super::super::RunnerSet::load(&[]).expect("shipped");
        let req = PlanRequest {
            instance: Default::default(),
            provider_cache: None,
            lifeline: None,
            workspace: Workspace::create(root.path()).expect("workspace"),
            stack: "s".into(),
            runner: set.get("terraform").expect("terraform").clone(),
            sandbox: SandboxMode::Bubblewrap,
            variables: vec![("TF_VAR_region".into(), "eu-west-1".into())],
            secrets: vec![("TF_VAR_pw".into(), Secret::new("hunter2"))],
            files: Vec::new(),
            repo: "infra".into(),
            commit: "abc".into(),
            key: PlanKey::generate(),
            state: None,
        };
        let text = format!("{req:?}");
        assert!(
            text.contains("TF_VAR_region") && text.contains("TF_VAR_pw"),
            "{text}"
        );
        assert!(
            !text.contains("eu-west-1") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
