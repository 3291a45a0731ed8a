//! One run's resolved settings (the tool's path, the environment built from nothing, the
//! read-only binds, the redactor) and the step sequences of a plan and an apply.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::artifact::{Binding, PlanArtifact};
use super::backend::{self, StackBackend, StateBackend};
use super::definition::{ExitMeaning, RunnerDef, StepKind};
use super::process::{self, Exit, Invocation, OutputPolicy, StepRun};
use super::provider_cache;
use super::redact::{Redactor, redact_plan_json, secret_file_values, sensitive_in_stack};
use super::sandbox::{self, SandboxMode, SandboxSpec, SandboxTools};
use super::steps::{ApplyRequest, PlanOutcome, PlanRequest};
use super::system::{self, SystemMount};
use super::{LogLine, RunStatus, Stream};
use crate::plan::summarize;

/// A step that ended the run.
#[derive(Debug)]
pub(super) struct Stop {
    pub(super) status: RunStatus,
    pub(super) exit_code: Option<i32>,
    pub(super) error: String,
}

impl Stop {
    pub(super) fn failed(error: impl Into<String>) -> Stop {
        Stop {
            status: RunStatus::Failed,
            exit_code: None,
            error: error.into(),
        }
    }
}

/// One run's resolved settings: paths, environment, binds and the redactor.
pub(super) struct Job {
    def: RunnerDef,
    tools: SandboxTools,
    program: PathBuf,
    workspace: PathBuf,
    cwd: PathBuf,
    plan_file: PathBuf,
    env: Vec<(String, String)>,
    ro_binds: Vec<PathBuf>,
    /// The read-only system view; empty without bubblewrap or with `system = false`.
    system: Vec<SystemMount>,
    redactor: Redactor,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
    /// What the stack declares; only a stack without a backend gets Tidemark's.
    backend: StackBackend,
    /// Set when the stack's state is kept in Tidemark: every step runs behind the state proxy.
    proxy: Option<StateBackend>,
    /// The shared provider cache and this run's private plugin cache directory.
    provider_cache: Option<(PathBuf, PathBuf)>,
    /// Tidemark's executable, whose `__lifeline` starts every step ([`super::lifeline`]).
    lifeline: Option<PathBuf>,
}

impl Job {
    pub(super) fn prepare(
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

        let provider_cache = match &req.provider_cache {
            Some(shared) if !env.iter().any(|(k, _)| k == "TF_PLUGIN_CACHE_DIR") => {
                let private = req.workspace.path().join("plugins");
                let linked = std::fs::create_dir_all(shared)
                    .and_then(|()| provider_cache::prepare(shared, &private))
                    .map_err(|e| {
                        Stop::failed(format!("provider cache {}: {e}", shared.display()))
                    })?;
                tracing::debug!(linked, "cached provider versions linked");
                env.push(("TF_PLUGIN_CACHE_DIR".into(), private.display().to_string()));
                Some((shared.clone(), private))
            }
            _ => None,
        };

        let mut ro_binds = vec![program.clone()];
        ro_binds.extend(provider_cache.as_ref().map(|(shared, _)| shared.clone()));
        ro_binds.extend(helpers);
        ro_binds.extend(req.files.iter().cloned());
        if let Some(var) = &def.cli_config_env
            && let Some((_, file)) = env.iter().rev().find(|(k, _)| k == var)
        {
            ro_binds.extend(cli_config_binds(Path::new(file)));
        }

        let system = if def.sandbox.system && tools.bwrap.is_some() {
            system::prepare(req.workspace.path(), &req.workspace.home())
                .map_err(|e| Stop::failed(format!("preparing the sandbox's system view: {e:#}")))?
        } else {
            Vec::new()
        };

        let stack_secrets = sensitive_in_stack(&cwd);
        let mut redactor = Redactor::new(req.secrets.iter().map(|(_, s)| s.expose().to_string()));
        redactor.extend(stack_secrets.values);
        for file in &req.files {
            redactor.extend(secret_file_values(file));
        }
        redactor.extend(req.variables.iter().filter_map(|(k, v)| {
            let name = k.strip_prefix("TF_VAR_")?;
            stack_secrets.names.contains(name).then(|| v.clone())
        }));

        let backend = backend::stack_backend(&cwd);
        // Without Tidemark's backend (a local plan), a stack with no backend block keeps a
        // local state, whose workspaces terraform supports.
        let own_backend = !matches!(backend, StackBackend::None) || req.state.is_none();
        let instance = req.instance.env(&req.workspace.tree(), own_backend);
        env.extend(instance.map_err(|e| Stop::failed(format!("stack {}: {e}", req.stack)))?);
        let proxy = match (&req.state, &backend) {
            (Some(state), StackBackend::None) => {
                write_override(req.workspace.path(), &cwd).map_err(|e| {
                    Stop::failed(format!(
                        "writing {} into stack {}: {e}",
                        backend::OVERRIDE_FILE,
                        req.stack
                    ))
                })?;
                // Credentials go through the environment, never into the tree, the backend
                // config saved by init, or the plan file.
                env.push(("TF_HTTP_USERNAME".into(), state.username.clone()));
                env.push((
                    "TF_HTTP_PASSWORD".into(),
                    state.password.expose().to_string(),
                ));
                redactor.extend([state.password.expose().to_string()]);
                ro_binds.push(state.exe.clone());
                Some(state.clone())
            }
            _ => None,
        };

        Ok(Job {
            backend,
            proxy,
            provider_cache,
            lifeline: req.lifeline.clone(),
            plan_file: req.workspace.out().join("plan.tfplan"),
            workspace: req.workspace.path().to_path_buf(),
            def,
            tools,
            program,
            cwd,
            env,
            ro_binds,
            system,
            redactor,
            logs,
            cancel,
        })
    }

    pub(super) async fn plan(&mut self, req: &PlanRequest) -> Result<PlanOutcome, Stop> {
        self.init().await?;
        let tool_version = self.tool_version().await?;
        let (plan_run, _) = self.run(StepKind::Plan, false).await?;
        let plan_bytes = match read_workspace_file(&self.workspace, &self.plan_file) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Stop {
                    status: RunStatus::Failed,
                    exit_code: code(&plan_run),
                    error: format!(
                        "plan wrote no plan file (exit code {:?}; a Go runtime crash also exits 2): {}",
                        code(&plan_run),
                        plan_run.stderr_tail
                    ),
                });
            }
            Err(err) => return Err(Stop::failed(format!("reading the plan file: {err}"))),
        };
        let (show, _) = self.run(StepKind::Show, true).await?;
        let mut json: serde_json::Value = serde_json::from_slice(&show.stdout.unwrap_or_default())
            .map_err(|e| Stop::failed(format!("show printed no plan JSON: {e}")))?;
        redact_plan_json(&mut json, &mut self.redactor);
        let summary = summarize(&json).map_err(|e| Stop::failed(e.to_string()))?;
        let json_bytes =
            serde_json::to_vec(&json).map_err(|e| Stop::failed(format!("plan JSON: {e}")))?;
        let binding = self.binding(req, tool_version)?;
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

    /// Applies the plan; for a stack with its own backend, also pulls the state it left.
    pub(super) async fn apply(
        &mut self,
        req: &ApplyRequest,
    ) -> Result<(i32, Option<Vec<u8>>), Stop> {
        self.def
            .step(StepKind::Apply)
            .map_err(|e| Stop::failed(e.to_string()))?;
        self.init().await?;
        let tool_version = self.tool_version().await?;
        let binding = self.binding(&req.run, tool_version)?;
        let plan = req
            .artifact
            .open(&req.run.key, &binding)
            .map_err(|e| Stop::failed(format!("refusing to apply: {e}")))?;
        write_workspace_file(&self.workspace, &self.plan_file, &plan)
            .map_err(|e| Stop::failed(format!("writing the plan file: {e}")))?;
        let (run, _) = self.run(StepKind::Apply, false).await?;
        let state = match (&self.backend, self.def.step(StepKind::StatePull)) {
            (StackBackend::Own(_), Ok(_)) => self.pull_state().await,
            _ => None,
        };
        Ok((code(&run).unwrap_or(0), state))
    }

    /// `init`, then the provider versions it downloaded go into the shared provider cache (a
    /// failure there is logged: the run has what it needs).
    async fn init(&mut self) -> Result<(), Stop> {
        self.run(StepKind::Init, false).await?;
        let Some((shared, private)) = self.provider_cache.clone() else {
            return Ok(());
        };
        let harvested =
            tokio::task::spawn_blocking(move || provider_cache::harvest(&private, &shared))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
        let text = match harvested {
            Ok(added) if added.is_empty() => return Ok(()),
            Ok(added) => format!("provider cache: added {}", added.join(", ")),
            Err(err) => format!("provider cache: keeping what init installed failed: {err}"),
        };
        let _ = self
            .logs
            .send(LogLine {
                step: "init".into(),
                stream: super::Stream::System,
                text,
            })
            .await;
        Ok(())
    }

    /// `state_pull` after an apply; a failure is logged, not fatal: the apply itself worked.
    async fn pull_state(&mut self) -> Option<Vec<u8>> {
        match self.run(StepKind::StatePull, true).await {
            Ok((run, _)) => run.stdout.filter(|out| !out.is_empty()),
            Err(stop) => {
                let note = format!(
                    "the state could not be pulled after the apply: {}",
                    stop.error
                );
                self.system(StepKind::StatePull, note).await;
                None
            }
        }
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

    fn binding(&self, req: &PlanRequest, tool_version: String) -> Result<Binding, Stop> {
        let lock = match read_workspace_file(&self.workspace, &self.cwd.join(".terraform.lock.hcl"))
        {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(Stop::failed(format!("reading .terraform.lock.hcl: {err}"))),
        };
        Ok(Binding {
            repo: req.repo.clone(),
            commit: req.commit.clone(),
            stack: normalize_stack(&req.stack),
            runner: self.def.name.clone(),
            tool_version,
            lock_hash: hex::encode(Sha256::digest(&lock)),
            vars_hash: terraform_inputs_hash(req),
        })
    }

    /// Runs one step; an exit code the definition does not call ok ends the run.
    pub(super) async fn run(
        &mut self,
        kind: StepKind,
        capture: bool,
    ) -> Result<(StepRun, ExitMeaning), Stop> {
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
        let mut ro_binds_try = self.def.sandbox.ro_paths.clone();
        let (program, argv_args) = match &self.proxy {
            Some(state) => {
                ro_binds_try.extend(backend::PROXY_LIBRARY_PATHS.iter().map(PathBuf::from));
                let argv =
                    super::proxy::proxy_argv(&state.socket, &state.path, &self.program, &args);
                (state.exe.clone(), argv)
            }
            None => (self.program.clone(), args.clone()),
        };
        let spec = SandboxSpec {
            workspace: self.workspace.clone(),
            cwd: self.cwd.clone(),
            program,
            args: argv_args,
            ro_binds: self.ro_binds.clone(),
            ro_binds_try,
            system: self.system.clone(),
            network: step.network,
            limits: self.def.sandbox.limits.clone(),
        };
        let mut argv =
            sandbox::command_line(&self.tools.prlimit, self.tools.bwrap.as_deref(), &spec);
        if let Some(exe) = &self.lifeline {
            argv = super::lifeline::lifeline_argv(exe, argv);
        }
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
        let run = process::run(
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
        crate::telemetry::phase(name, run.elapsed.as_secs_f64());
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

    /// Says in the log what the workspace holds of the commit (a system line of the `init`
    /// step, the first to read it).
    pub(super) async fn note_export(&self, workspace: &super::workspace::Workspace) {
        if let Some(exported) = workspace.exported() {
            self.system(StepKind::Init, exported.describe()).await;
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
    pub(super) fn redact_stop(&self, stop: Stop) -> Stop {
        Stop {
            error: self.redactor.redact(&stop.error).into_owned(),
            ..stop
        }
    }
}

pub(super) fn code(run: &StepRun) -> Option<i32> {
    match run.exit {
        Exit::Code(c) => Some(c),
        _ => None,
    }
}

/// Steps run code from the repository, which may replace any part of the workspace with a
/// symlink to a host path. Tidemark touches workspace files only between steps, when no
/// process of the run is alive any more, and refuses a path that does not stay where it
/// says (its directory must resolve inside the workspace; the file itself must not be a
/// link): otherwise a plan could make Tidemark read a host file into the artifact, or make an
/// apply write the plan over a host file.
fn check_parent(workspace: &Path, path: &Path) -> std::io::Result<()> {
    let escaped = || std::io::Error::other(format!("{} leaves the workspace", path.display()));
    let parent = path.parent().ok_or_else(escaped)?;
    if !parent
        .canonicalize()?
        .starts_with(workspace.canonicalize()?)
    {
        return Err(escaped());
    }
    Ok(())
}

/// Reads a regular file of the workspace (see [`check_parent`]); a symlink is refused.
fn read_workspace_file(workspace: &Path, path: &Path) -> std::io::Result<Vec<u8>> {
    check_parent(workspace, path)?;
    if !std::fs::symlink_metadata(path)?.is_file() {
        let msg = format!("{} is not a regular file", path.display());
        return Err(std::io::Error::other(msg));
    }
    std::fs::read(path)
}

/// Creates a new file in the workspace (see [`check_parent`]); `create_new` also refuses a
/// symlink planted at the path itself.
fn write_workspace_file(workspace: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    check_parent(workspace, path)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)
}

/// Writes Tidemark's backend override into the stack; one written by an earlier step of the
/// same run is kept, any other file of that name refused.
fn write_override(workspace: &Path, cwd: &Path) -> std::io::Result<()> {
    let path = cwd.join(backend::OVERRIDE_FILE);
    let text = backend::override_text().as_bytes();
    match read_workspace_file(workspace, &path) {
        Ok(existing) if existing == text => Ok(()),
        Ok(_) => Err(std::io::Error::other(
            "the repository has a file of that name; rename it",
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            write_workspace_file(workspace, &path, text)
        }
        Err(err) => Err(err),
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

/// The keyed hash of the values Terraform takes as input variables (`TF_VAR_*`), which the
/// plan file carries: an apply with other values would not be the reviewed plan. Other
/// variables (provider credentials, which a variable set may give plans and applies
/// differently) are not part of the plan and not bound.
fn terraform_inputs_hash(req: &PlanRequest) -> String {
    let input = |name: &String| name.starts_with("TF_VAR_");
    let variables: Vec<(String, String)> = req
        .variables
        .iter()
        .filter(|(k, _)| input(k))
        .cloned()
        .collect();
    let secrets: Vec<(String, crate::crypto::Secret)> = req
        .secrets
        .iter()
        .filter(|(k, _)| input(k))
        .cloned()
        .collect();
    req.key.vars_hash(&variables, &secrets)
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
    fn workspace_files_behind_symlinks_are_refused() {
        let ws = tempfile::tempdir().expect("tempdir");
        let host = tempfile::tempdir().expect("tempdir");
        std::fs::write(host.path().join("plan.tfplan"), "host secret").expect("write");
        let ws = ws.path();
        std::fs::create_dir(ws.join("out")).expect("mkdir");
        std::fs::write(ws.join("out/plan.tfplan"), "plan").expect("write");
        assert_eq!(
            read_workspace_file(ws, &ws.join("out/plan.tfplan")).expect("read"),
            b"plan"
        );
        // A file replaced by a link, a directory replaced by a link.
        std::os::unix::fs::symlink(host.path().join("plan.tfplan"), ws.join("out/link"))
            .expect("symlink");
        assert!(read_workspace_file(ws, &ws.join("out/link")).is_err());
        std::os::unix::fs::symlink(host.path(), ws.join("evil")).expect("symlink");
        assert!(read_workspace_file(ws, &ws.join("evil/plan.tfplan")).is_err());
        assert!(write_workspace_file(ws, &ws.join("evil/new"), b"x").is_err());
        assert!(!host.path().join("new").exists());
        assert!(write_workspace_file(ws, &ws.join("out/link"), b"x").is_err());
        assert_eq!(
            std::fs::read(host.path().join("plan.tfplan")).expect("read"),
            b"host secret"
        );
        write_workspace_file(ws, &ws.join("out/new"), b"x").expect("write");
        assert!(read_workspace_file(ws, Path::new("/etc/hostname")).is_err());
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
