//! Running a stack's steps: `init`, `version`, `plan -out`, `show -json` for a plan, and
//! `init`, `version`, binding check, `apply` for an apply. Each step runs in the sandbox with
//! the runner's arguments, environment and limits; a failing step ends the run with an outcome
//! that carries the redacted stderr tail.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::artifact::{Binding, PlanArtifact, PlanKey};
use super::definition::{ExitMeaning, RunnerDef, StepKind};
use super::redact::{Redactor, Secret, redact_plan_json, sensitive_in_stack};
use super::sandbox::{
    self, Exit, Invocation, OutputPolicy, SandboxMode, SandboxSpec, SandboxTools, StepRun,
};
use super::summary::{PlanSummary, summarize};
use super::workspace::Workspace;
use super::{LogLine, RunStatus, Stream};

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
    /// Binding fields: the repository's name and the planned commit.
    pub repo: String,
    pub commit: String,
    pub key: PlanKey,
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
            .field("repo", &self.repo)
            .field("commit", &self.commit)
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
}

/// A step that ended the run.
#[derive(Debug)]
struct Stop {
    status: RunStatus,
    exit_code: Option<i32>,
    error: String,
}

impl Stop {
    fn failed(error: impl Into<String>) -> Stop {
        Stop {
            status: RunStatus::Failed,
            exit_code: None,
            error: error.into(),
        }
    }
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
    match job.apply(&req).await {
        Ok(code) => ApplyOutcome {
            status: RunStatus::Succeeded,
            exit_code: Some(code),
            error: None,
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
        }
    }
}

/// One run's resolved settings: paths, environment, binds and the redactor.
struct Job {
    def: RunnerDef,
    tools: SandboxTools,
    program: PathBuf,
    workspace: PathBuf,
    cwd: PathBuf,
    plan_file: PathBuf,
    env: Vec<(String, String)>,
    ro_binds: Vec<PathBuf>,
    redactor: Redactor,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
}

impl Job {
    fn prepare(
        req: &PlanRequest,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<Job, Stop> {
        let def = req.runner.clone();
        let cwd = stack_dir(&req.workspace.tree(), &req.stack)?;
        let tools = SandboxTools::find(req.sandbox).map_err(|e| Stop::failed(e.to_string()))?;
        if req.sandbox == SandboxMode::None {
            tracing::warn!(stack = %req.stack, "sandbox = \"none\": running steps unsandboxed");
        }
        let find = |name: &str| {
            sandbox::find_on_path(name).ok_or_else(|| {
                Stop::failed(format!(
                    "runner {:?}: binary {name:?} not found (set an absolute path in the runner definition or put it on PATH)",
                    def.name
                ))
            })
        };
        let program = find(&def.binary)?;
        let helpers = def
            .helpers
            .iter()
            .map(|h| find(h))
            .collect::<Result<Vec<_>, _>>()?;

        // The environment is built from nothing: the tool never sees Tidemark's own.
        let mut path_dirs: Vec<String> = Vec::new();
        for bin in std::iter::once(&program).chain(&helpers) {
            if let Some(dir) = bin.parent().map(|d| d.display().to_string())
                && !path_dirs.contains(&dir)
            {
                path_dirs.push(dir);
            }
        }
        path_dirs.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
        let mut env = vec![
            ("PATH".to_string(), path_dirs.join(":")),
            (
                "HOME".to_string(),
                req.workspace.home().display().to_string(),
            ),
            ("TMPDIR".to_string(), "/tmp".to_string()),
        ];
        // Inherited values first: what the definition sets explicitly wins over them.
        for name in &def.env_allow {
            if let Ok(value) = std::env::var(name) {
                env.push((name.clone(), value));
            }
        }
        env.extend(def.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(req.variables.iter().cloned());
        env.extend(
            req.secrets
                .iter()
                .map(|(k, s)| (k.clone(), s.expose().to_string())),
        );

        let mut ro_binds = vec![program.clone()];
        ro_binds.extend(helpers);
        if let Some(var) = &def.cli_config_env
            && let Some((_, file)) = env.iter().rev().find(|(k, _)| k == var)
        {
            ro_binds.extend(cli_config_binds(Path::new(file)));
        }

        let stack_secrets = sensitive_in_stack(&cwd);
        let mut redactor = Redactor::new(req.secrets.iter().map(|(_, s)| s.expose().to_string()));
        redactor.extend(stack_secrets.values);
        redactor.extend(req.variables.iter().filter_map(|(k, v)| {
            let name = k.strip_prefix("TF_VAR_")?;
            stack_secrets.names.contains(name).then(|| v.clone())
        }));

        Ok(Job {
            plan_file: req.workspace.out().join("plan.tfplan"),
            workspace: req.workspace.path().to_path_buf(),
            def,
            tools,
            program,
            cwd,
            env,
            ro_binds,
            redactor,
            logs,
            cancel,
        })
    }

    async fn plan(&mut self, req: &PlanRequest) -> Result<PlanOutcome, Stop> {
        self.run(StepKind::Init, false).await?;
        let tool_version = self.tool_version().await?;
        let (plan_run, _) = self.run(StepKind::Plan, false).await?;
        let plan_bytes = std::fs::read(&self.plan_file).map_err(|_| Stop {
            status: RunStatus::Failed,
            exit_code: code(&plan_run),
            error: format!(
                "plan wrote no plan file (exit code {:?}; a Go runtime crash also exits 2): {}",
                code(&plan_run),
                plan_run.stderr_tail
            ),
        })?;
        let (show, _) = self.run(StepKind::Show, true).await?;
        let mut json: serde_json::Value = serde_json::from_slice(&show.stdout.unwrap_or_default())
            .map_err(|e| Stop::failed(format!("show printed no plan JSON: {e}")))?;
        redact_plan_json(&mut json, &mut self.redactor);
        let summary = summarize(&json).map_err(|e| Stop::failed(e.to_string()))?;
        let json_bytes =
            serde_json::to_vec(&json).map_err(|e| Stop::failed(format!("plan JSON: {e}")))?;
        let binding = self.binding(req, tool_version);
        let artifact = PlanArtifact::seal(&req.key, binding, &plan_bytes, &json_bytes)
            .map_err(|e| Stop::failed(format!("sealing the plan artifact: {e}")))?;
        Ok(PlanOutcome {
            status: RunStatus::Succeeded,
            exit_code: code(&plan_run),
            error: None,
            summary: Some(summary),
            artifact: Some(artifact),
        })
    }

    async fn apply(&mut self, req: &ApplyRequest) -> Result<i32, Stop> {
        self.def
            .step(StepKind::Apply)
            .map_err(|e| Stop::failed(e.to_string()))?;
        self.run(StepKind::Init, false).await?;
        let tool_version = self.tool_version().await?;
        let binding = self.binding(&req.run, tool_version);
        let plan = req
            .artifact
            .open(&req.run.key, &binding)
            .map_err(|e| Stop::failed(format!("refusing to apply: {e}")))?;
        std::fs::write(&self.plan_file, plan)
            .map_err(|e| Stop::failed(format!("writing the plan file: {e}")))?;
        let (run, _) = self.run(StepKind::Apply, false).await?;
        Ok(code(&run).unwrap_or(0))
    }

    /// The tool's version from the `version` step: `terraform_version` of its JSON, else its
    /// first line.
    async fn tool_version(&mut self) -> Result<String, Stop> {
        let (run, _) = self.run(StepKind::Version, true).await?;
        let out = run.stdout.unwrap_or_default();
        let version = serde_json::from_slice::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.get("terraform_version")?.as_str().map(str::to_string))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&out)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            });
        Ok(version)
    }

    fn binding(&self, req: &PlanRequest, tool_version: String) -> Binding {
        let lock = std::fs::read(self.cwd.join(".terraform.lock.hcl")).unwrap_or_default();
        Binding {
            repo: req.repo.clone(),
            commit: req.commit.clone(),
            stack: normalize_stack(&req.stack),
            runner: self.def.name.clone(),
            tool_version,
            lock_hash: hex::encode(Sha256::digest(&lock)),
            vars_hash: req.key.vars_hash(&req.variables, &req.secrets),
        }
    }

    /// Runs one step; an exit code the definition does not call ok ends the run.
    async fn run(&mut self, kind: StepKind, capture: bool) -> Result<(StepRun, ExitMeaning), Stop> {
        let step = self
            .def
            .step(kind)
            .map_err(|e| Stop::failed(e.to_string()))?
            .clone();
        let plan_file = self.plan_file.display().to_string();
        let args: Vec<String> = step
            .args
            .iter()
            .map(|a| a.replace("{plan_file}", &plan_file))
            .collect();
        let spec = SandboxSpec {
            workspace: self.workspace.clone(),
            cwd: self.cwd.clone(),
            program: self.program.clone(),
            args: args.clone(),
            ro_binds: self.ro_binds.clone(),
            ro_binds_try: self.def.sandbox.ro_paths.clone(),
            network: step.network,
            limits: self.def.sandbox.limits.clone(),
        };
        let argv = sandbox::command_line(&self.tools.prlimit, self.tools.bwrap.as_deref(), &spec);
        let mut note = format!("$ {} {}", self.def.binary, args.join(" "));
        if self.tools.bwrap.is_none() {
            note.push_str("  [UNSANDBOXED: sandbox = \"none\"]");
        }
        self.system(kind, note).await;
        let policy = OutputPolicy {
            cap: self.def.sandbox.output_cap,
            capture_stdout: capture,
        };
        let invocation = Invocation {
            argv,
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            timeout: step.timeout,
        };
        let run = sandbox::run(
            kind.name(),
            &invocation,
            &policy,
            &self.redactor,
            &self.logs,
            &self.cancel,
        )
        .await
        .map_err(|e| Stop::failed(format!("starting step {}: {e}", kind.name())))?;
        let name = kind.name();
        let took = run.elapsed.as_millis();
        self.system(kind, format!("{name} ended: {} after {took} ms", run.exit))
            .await;
        let tail = |run: &StepRun| {
            if run.stderr_tail.is_empty() {
                String::new()
            } else {
                format!(":\n{}", run.stderr_tail)
            }
        };
        match run.exit {
            Exit::Code(c) => match step.meaning(c) {
                ExitMeaning::Failed => Err(Stop {
                    status: RunStatus::Failed,
                    exit_code: Some(c),
                    error: format!("step {name} failed with exit code {c}{}", tail(&run)),
                }),
                meaning => Ok((run, meaning)),
            },
            Exit::Signal(s) => Err(Stop {
                status: RunStatus::Failed,
                exit_code: None,
                error: format!("step {name} was killed by signal {s}{}", tail(&run)),
            }),
            Exit::TimedOut => Err(Stop {
                status: RunStatus::TimedOut,
                exit_code: None,
                error: format!(
                    "step {name} timed out after {}{}",
                    humantime::format_duration(step.timeout),
                    tail(&run)
                ),
            }),
            Exit::Cancelled => Err(Stop {
                status: RunStatus::Cancelled,
                exit_code: None,
                error: format!("step {name} was cancelled"),
            }),
        }
    }

    async fn system(&self, kind: StepKind, text: String) {
        let line = LogLine {
            step: kind.name().to_string(),
            stream: Stream::System,
            text: self.redactor.redact(&text).into_owned(),
        };
        let _ = self.logs.send(line).await;
    }

    /// Errors are redacted once more with everything learnt by the end of the run.
    fn redact_stop(&self, stop: Stop) -> Stop {
        Stop {
            error: self.redactor.redact(&stop.error).into_owned(),
            ..stop
        }
    }
}

fn code(run: &StepRun) -> Option<i32> {
    match run.exit {
        Exit::Code(c) => Some(c),
        _ => None,
    }
}

/// `stacks/net/` and `./stacks/net` are the same stack.
fn normalize_stack(stack: &str) -> String {
    let parts: Vec<&str> = stack
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    parts.join("/")
}

/// The stack's directory inside the exported tree; a path leaving the tree is refused.
fn stack_dir(tree: &Path, stack: &str) -> Result<PathBuf, Stop> {
    let rel = Path::new(stack);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Stop::failed(format!(
            "stack path {stack:?} must be relative and stay inside the repository"
        )));
    }
    let dir = tree.join(rel);
    if !dir.is_dir() {
        return Err(Stop::failed(format!(
            "stack {stack:?} is not a directory at this commit"
        )));
    }
    Ok(dir)
}

/// The CLI config file and the filesystem mirrors it names: the sandbox binds them read-only
/// so that `init` installs providers offline. `.terraform/providers` links into the mirror by
/// absolute path, so the mirror must appear at its own path.
fn cli_config_binds(file: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let mut binds = vec![file.to_path_buf()];
    let Ok(body) = hcl::parse(&text) else {
        return binds;
    };
    for install in body
        .blocks()
        .filter(|b| b.identifier() == "provider_installation")
    {
        for mirror in install
            .body()
            .blocks()
            .filter(|b| b.identifier() == "filesystem_mirror")
        {
            for attr in mirror.body().attributes().filter(|a| a.key() == "path") {
                if let hcl::Expression::String(path) = attr.expr() {
                    let path = PathBuf::from(path);
                    if path.is_absolute() && path.exists() {
                        binds.push(path);
                    }
                }
            }
        }
    }
    binds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_never_shows_values_in_debug() {
        let root = tempfile::tempdir().expect("tempdir");
        let set = super::super::RunnerSet::load(&[]).expect("shipped");
        let req = PlanRequest {
            workspace: Workspace::create(root.path()).expect("workspace"),
            stack: "s".into(),
            runner: set.get("terraform").expect("terraform").clone(),
            sandbox: SandboxMode::Bubblewrap,
            variables: vec![("TF_VAR_region".into(), "eu-west-1".into())],
            secrets: vec![("TF_VAR_pw".into(), Secret::new("hunter2"))],
            repo: "infra".into(),
            commit: "abc".into(),
            key: PlanKey::generate(),
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

    #[test]
    fn stack_paths_stay_inside_the_tree() {
        let tree = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tree.path().join("stacks/net")).expect("mkdir");
        assert!(stack_dir(tree.path(), "stacks/net").is_ok());
        assert!(stack_dir(tree.path(), "").is_ok());
        for bad in ["../x", "/etc", "stacks/../../x", "missing"] {
            assert!(stack_dir(tree.path(), bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_stack("./stacks//net/"), "stacks/net");
    }

    #[test]
    fn the_cli_config_and_its_mirrors_are_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mirror = dir.path().join("providers");
        std::fs::create_dir(&mirror).expect("mkdir");
        let rc = dir.path().join("terraform.rc");
        let text = format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n    include = [\"*/*\"]\n  }}\n  filesystem_mirror {{ path = \"/does/not/exist\" }}\n}}\n",
            mirror.display()
        );
        std::fs::write(&rc, text).expect("write");
        assert_eq!(cli_config_binds(&rc), vec![rc.clone(), mirror]);
        assert!(cli_config_binds(&dir.path().join("missing.rc")).is_empty());
    }
}
