//! The sandboxed runner against real terraform 1.0.3 and the null provider: isolation,
//! redaction, timeouts, crashes, cancellation, apply's binding check, and `tidemark plan`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tidemark::crypto::{PlanKey, Secret};
use tidemark::runner::{
    self, ApplyRequest, LogLine, PlanOutcome, PlanRequest, RunStatus, RunnerDef, RunnerSet,
    RunnerSource, SandboxMode, Workspace,
};
use tokio_util::sync::CancellationToken;

use crate::support::{GitFixture, Toolchain, null_stack};

/// The shipped terraform definition with the toolchain's binary (tests cannot change their own
/// PATH: `set_var` is unsafe) and `extra` HCL inside the override block.
fn terraform_def(extra: &str) -> RunnerDef {
    let tf = Toolchain::get().terraform();
    let text = format!(
        "runner \"terraform\" {{\n  binary = \"{}\"\n{extra}\n}}\n",
        tf.display()
    );
    let set = RunnerSet::load(&[RunnerSource::new("test.hcl", text)]).expect("runner definitions");
    set.get("terraform").expect("terraform").clone()
}

/// A runner whose binary is a shell script (in its own temp dir, outside every workspace).
/// The sandbox binds the host's /usr and libraries so that /bin/sh can run.
fn script_def(dir: &Path, script: &str, sandbox: &str) -> RunnerDef {
    let bin = dir.join("tool.sh");
    std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).expect("write script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = format!(
        r#"runner "script" {{
  binary = "{}"
  step "init" {{ args = ["init"] }}
  step "version" {{ args = ["version"] }}
  step "plan" {{
    args = ["plan", "{{plan_file}}"]
    exit_codes = {{ "0" = "ok", "2" = "changes" }}
  }}
  step "show" {{ args = ["show", "{{plan_file}}"] }}
  sandbox {{
    ro_paths = ["/usr", "/bin", "/lib", "/lib64"]
    {sandbox}
  }}
}}
"#,
        bin.display()
    );
    let set = RunnerSet::load(&[RunnerSource::new(dir.join("script.hcl"), text)])
        .expect("script runner definition");
    set.get("script").expect("script").clone()
}

/// A committed repository with one stack at `stacks/s`, exported into a workspace.
struct Stack {
    fixture: GitFixture,
    commit: String,
    root: tempfile::TempDir,
}

impl Stack {
    fn new(files: &[(&str, &str)]) -> Stack {
        let fixture = GitFixture::new();
        for (path, content) in files {
            fixture.write(path, content);
        }
        let commit = fixture.commit("stack");
        Stack {
            fixture,
            commit,
            root: tempfile::tempdir().expect("workspaces root"),
        }
    }

    fn workspace(&self) -> Workspace {
        let repo = tidemark::repo::open(&self.fixture.work()).expect("open");
        let oid = git2::Oid::from_str(&self.commit).expect("oid");
        Workspace::export(self.root.path(), &repo, oid).expect("export")
    }

    fn request(&self, runner: RunnerDef) -> PlanRequest {
        PlanRequest {
            instance: Default::default(),
            provider_cache: None,
            lifeline: Some(env!("CARGO_BIN_EXE_tidemark").into()),
            workspace: self.workspace(),
            stack: "stacks/s".into(),
            runner,
            sandbox: SandboxMode::Bubblewrap,
            variables: vec![(
                "TF_CLI_CONFIG_FILE".into(),
                Toolchain::get().cli_config().display().to_string(),
            )],
            secrets: Vec::new(),
            files: Vec::new(),
            repo: "infra".into(),
            commit: self.commit.clone(),
            key: PlanKey::generate(),
            state: None,
        }
    }

    fn assert_no_workspace_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.root.path())
            .expect("read root")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "workspaces left behind: {left:?}");
    }
}

/// Runs a plan and collects its log lines.
async fn plan(req: PlanRequest, cancel: CancellationToken) -> (PlanOutcome, Vec<LogLine>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let collector = tokio::spawn(collect(rx));
    let outcome = runner::plan(req, tx, cancel).await;
    (outcome, collector.await.expect("collector"))
}

/// Every log line a run sends, once it is done.
async fn collect(mut rx: tokio::sync::mpsc::Receiver<LogLine>) -> Vec<LogLine> {
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    lines
}

fn log_text(lines: &[LogLine]) -> String {
    lines.iter().map(|l| format!("{}\n", l.text)).collect()
}

fn plan_json(outcome: &PlanOutcome) -> serde_json::Value {
    let artifact = outcome.artifact.as_ref().expect("artifact");
    serde_json::from_slice(&artifact.plan_json().expect("decompress")).expect("plan json")
}

/// Waits (up to 10 s) until no process has `marker` in its command line.
fn assert_no_process_with(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(marker))
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left: {alive:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn require_bwrap() {
    assert!(
        runner::find_on_path("bwrap").is_some(),
        "bubblewrap is required: run scripts/install-deps.sh"
    );
}

const OUTSIDE_STACK: &str = r#"
variable "planted" { type = string }
output "planted_exists" { value = fileexists(var.planted) }
output "shadow_exists" { value = fileexists("/etc/shadow") }
output "passwd" { value = fileexists("/etc/passwd") ? file("/etc/passwd") : "" }
"#;

#[tokio::test]
async fn a_plan_cannot_see_files_outside_the_workspace() {
    require_bwrap();
    let outside = tempfile::tempdir().expect("tempdir");
    let planted = outside.path().join("planted.txt");
    std::fs::write(&planted, "host data").expect("plant");
    let stack = Stack::new(&[("stacks/s/main.tf", OUTSIDE_STACK)]);
    let outputs = |sandbox: SandboxMode| {
        let mut req = stack.request(terraform_def(""));
        req.sandbox = sandbox;
        req.variables
            .push(("TF_VAR_planted".into(), planted.display().to_string()));
        async move {
            let (outcome, lines) = plan(req, CancellationToken::new()).await;
            assert_eq!(
                outcome.status,
                RunStatus::Succeeded,
                "{:?}\n{}",
                outcome.error,
                log_text(&lines)
            );
            let json = plan_json(&outcome);
            let value = |name: &str| json["planned_values"]["outputs"][name]["value"].clone();
            let passwd = value("passwd").as_str().unwrap_or_default().to_string();
            (value("planted_exists"), value("shadow_exists"), passwd)
        }
    };
    // The system view shows a generated /etc/passwd naming only the run's user.
    let (planted, shadow, passwd) = outputs(SandboxMode::Bubblewrap).await;
    assert_eq!((planted, shadow), (false.into(), false.into()));
    assert!(passwd.contains(":Tidemark run:"), "{passwd}");
    assert_eq!(passwd.lines().count(), 2, "{passwd}");
    // The same plan without the sandbox sees the host's files: the check above is not vacuous.
    let (planted, shadow, passwd) = outputs(SandboxMode::None).await;
    assert_eq!((planted, shadow), (true.into(), true.into()));
    assert!(!passwd.contains(":Tidemark run:"), "{passwd}");
    stack.assert_no_workspace_left();
}

#[test]
fn a_plan_cannot_see_the_environment_of_tidemark() {
    require_bwrap();
    let fixture = GitFixture::new();
    fixture.write(
        "stacks/s/main.tf",
        "variable \"x\" { default = \"not-passed\" }\noutput \"x\" { value = var.x }\n",
    );
    fixture.commit("stack");
    let tools = Toolchain::get();
    let path = format!(
        "{}:{}",
        tools.terraform().parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let workspaces = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["plan", "--repo"])
        .arg(fixture.work())
        .arg("--workspaces")
        .arg(workspaces.path())
        .env("PATH", path)
        .env("TF_CLI_CONFIG_FILE", tools.cli_config())
        .env("TF_VAR_x", "leaked-from-tidemark")
        .output()
        .expect("run tidemark plan");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("+ x = \"not-passed\""), "{stderr}");
    assert!(!stderr.contains("leaked-from-tidemark"), "{stderr}");
}

/// Prints the sandbox's network interfaces from the init step, then fails the run.
const NET_SCRIPT: &str =
    r#"if [ "$1" = init ]; then cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '; fi; exit 3"#;

#[tokio::test]
async fn without_network_only_loopback_exists() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let interfaces = |network: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let def = script_def(dir.path(), NET_SCRIPT, &format!("network = {network}"));
        let req = stack.request(def);
        async move {
            let (outcome, lines) = plan(req, CancellationToken::new()).await;
            assert_eq!(outcome.status, RunStatus::Failed);
            drop(dir);
            lines
                .iter()
                .filter(|l| l.step == "init" && l.stream == runner::Stream::Stdout)
                .map(|l| l.text.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(interfaces(false).await, ["lo"]);
    // With the network shared the host's interfaces appear (when the host has any but lo).
    let host = std::fs::read_to_string("/proc/net/dev").expect("net/dev");
    if host
        .lines()
        .skip(2)
        .any(|l| !l.trim_start().starts_with("lo:"))
    {
        assert!(interfaces(true).await.iter().any(|i| i != "lo"));
    }
}

const SECRET_DEFAULT: &str = "default-secret-8d1f";
const SECRET_ENV: &str = "env-secret-5c2a";

fn secret_stack() -> String {
    format!(
        r#"terraform {{
  required_providers {{
    null = {{ source = "hashicorp/null", version = "2.1.2" }}
  }}
}}
variable "password" {{
  type      = string
  sensitive = true
  default   = "{SECRET_DEFAULT}"
}}
variable "token" {{
  type      = string
  sensitive = true
}}
resource "null_resource" "db" {{
  triggers = {{ password = var.password, token = var.token, name = "db" }}
}}
output "password" {{
  value     = var.password
  sensitive = true
}}
output "name" {{ value = null_resource.db.triggers.name }}
"#
    )
}

#[tokio::test]
async fn secrets_appear_nowhere_and_the_plan_applies_only_where_it_was_bound() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", &secret_stack())]);
    let make = || {
        let mut req = stack.request(terraform_def(""));
        req.secrets = vec![("TF_VAR_token".into(), Secret::new(SECRET_ENV))];
        req
    };
    let req = make();
    let key = req.key.clone();
    let (outcome, lines) = plan(req, CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let summary = outcome.summary.clone().expect("summary");
    assert_eq!(summary.summary.add, 1);
    assert!(summary.has_changes);

    let artifact = outcome.artifact.clone().expect("artifact");
    let json = String::from_utf8(artifact.plan_json().expect("json")).expect("utf-8");
    // The plan really had the values: they were replaced, not missing.
    assert!(json.contains("\"password\":\"(sensitive)\""), "{json}");
    let mut haystacks = vec![
        ("logs", log_text(&lines)),
        ("plan json", json),
        (
            "summary",
            serde_json::to_string(&summary).expect("summary json"),
        ),
        (
            "binding",
            serde_json::to_string(&artifact.binding).expect("binding json"),
        ),
    ];
    let raw = String::from_utf8_lossy(&artifact.plan_encrypted).into_owned();
    haystacks.push(("encrypted plan", raw));
    for (what, text) in &haystacks {
        for secret in [SECRET_DEFAULT, SECRET_ENV] {
            assert!(!text.contains(secret), "{secret} found in {what}");
        }
    }

    // Apply: the same inputs open the plan; a changed secret (vars hash) does not.
    let mut apply_req = make();
    apply_req.key = key.clone();
    let applied = runner::apply(
        ApplyRequest {
            run: apply_req,
            artifact: artifact.clone(),
        },
        tokio::sync::mpsc::channel(1024).0,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(applied.status, RunStatus::Succeeded, "{:?}", applied.error);
    let mut changed = make();
    changed.key = key;
    changed.secrets = vec![("TF_VAR_token".into(), Secret::new("another-token"))];
    let refused = runner::apply(
        ApplyRequest {
            run: changed,
            artifact,
        },
        tokio::sync::mpsc::channel(1024).0,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(refused.status, RunStatus::Failed);
    let error = refused.error.expect("error");
    assert!(
        error.contains("refusing to apply") && error.contains("vars_hash"),
        "{error}"
    );
    stack.assert_no_workspace_left();
}

#[test]
fn tidemark_plan_output_holds_no_secret() {
    require_bwrap();
    let fixture = GitFixture::new();
    let mut text = secret_stack();
    text = text.replace(
        "  sensitive = true\n}\nresource",
        "  sensitive = true\n  default = \"x-token\"\n}\nresource",
    );
    fixture.write("stacks/s/main.tf", &text);
    fixture.commit("secret stack");
    for format in ["json", "text"] {
        let output = tidemark_plan(&fixture, &["--format", format]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(SECRET_DEFAULT), "{format}: {text}");
        }
    }
}

/// Runs `tidemark plan --repo <fixture>` with the toolchain on PATH.
fn tidemark_plan(fixture: &GitFixture, args: &[&str]) -> std::process::Output {
    let tools = Toolchain::get();
    let path = format!(
        "{}:{}",
        tools.terraform().parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let workspaces = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["plan", "--repo"])
        .arg(fixture.work())
        .arg("--workspaces")
        .arg(workspaces.path())
        .args(args)
        .env("PATH", path)
        .env("TF_CLI_CONFIG_FILE", tools.cli_config())
        .output()
        .expect("run tidemark plan");
    let left = std::fs::read_dir(workspaces.path()).expect("read").count();
    assert_eq!(left, 0, "workspaces left behind by tidemark plan");
    output
}

#[test]
fn tidemark_plan_prints_a_summary_per_stack() {
    require_bwrap();
    let fixture = GitFixture::new();
    fixture.write("stacks/one/main.tf", &null_stack("a"));
    fixture.write("stacks/two/main.tf", &null_stack("b"));
    fixture.write("stacks/broken/main.tf", "resource \"null_resource\" {\n");
    fixture.write("README.md", "not a stack");
    fixture.commit("three stacks");
    let output = tidemark_plan(&fixture, &["--format", "json"]);
    assert_eq!(output.status.code(), Some(1), "one stack fails");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let stacks = json["stacks"].as_array().expect("stacks");
    let paths: Vec<_> = stacks
        .iter()
        .map(|s| s["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(paths, ["stacks/broken", "stacks/one", "stacks/two"]);
    for stack in &stacks[1..] {
        assert_eq!(stack["status"], "succeeded", "{stack}");
        assert_eq!(
            stack["summary"],
            serde_json::json!({"add": 1, "change": 0, "destroy": 0, "replace": 0})
        );
        assert_eq!(
            stack["resources"],
            serde_json::json!([{"address": "null_resource.this", "actions": ["create"]}])
        );
        assert_eq!(
            stack["outputs"],
            serde_json::json!([{"name": "value", "actions": ["create"]}])
        );
        assert!(stack["error"].is_null());
    }
    let broken = &stacks[0];
    assert_eq!(broken["status"], "failed");
    assert!(broken["summary"].is_null());
    let error = broken["error"].as_str().expect("error");
    assert!(
        error.contains("step init failed") && error.contains("main.tf line 1"),
        "{error}"
    );

    // --stack narrows the set.
    let output = tidemark_plan(&fixture, &["--format", "json", "--stack", "stacks/two"]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["stacks"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["stacks"][0]["path"], "stacks/two");
}

#[test]
fn bad_runner_definitions_are_reported_with_file_and_line() {
    let fixture = GitFixture::new();
    fixture.write("main.tf", &null_stack("a"));
    fixture.commit("stack");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("custom.hcl");
    std::fs::write(
        &file,
        "runner \"terraform\" {\n  sandbox {\n    cpu_seconds = \"lots\"\n  }\n}\n",
    )
    .expect("write");
    let output = tidemark_plan(
        &fixture,
        &["--runners-dir", &dir.path().display().to_string()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "{}:3: `cpu_seconds` must be a whole number",
            file.display()
        )),
        "{stderr}"
    );
    let output = tidemark_plan(&fixture, &["--runner", "pulumi"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown runner \"pulumi\""));
}

#[tokio::test]
async fn a_hanging_step_is_killed_at_its_timeout() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    // A child in the background and one in the foreground: both must die.
    let def = script_def(
        dir.path(),
        "echo starting; sleep 987651 & sleep 987652; echo never",
        "timeout = \"1s\"",
    );
    let started = Instant::now();
    let (outcome, lines) = plan(stack.request(def), CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::TimedOut, "{:?}", outcome.error);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        outcome
            .error
            .expect("error")
            .contains("step init timed out after 1s")
    );
    assert!(log_text(&lines).contains("starting"));
    assert_no_process_with("987651");
    assert_no_process_with("987652");
    stack.assert_no_workspace_left();
}

#[tokio::test]
async fn a_cancelled_step_stops_at_once() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let def = script_def(dir.path(), "sleep 987653", "timeout = \"60s\"");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (outcome, _) = plan(stack.request(def), cancel).await;
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_no_process_with("987653");
    stack.assert_no_workspace_left();
}

#[tokio::test]
async fn a_crash_fails_with_the_stderr_tail() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let def = script_def(
        dir.path(),
        "echo 'fatal: crashing on purpose' >&2; sleep 987654 & kill -SEGV $$",
        "",
    );
    let (outcome, _) = plan(stack.request(def), CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.expect("error");
    assert!(
        error.contains("step init failed with exit code 139"),
        "{error}"
    );
    assert!(error.contains("fatal: crashing on purpose"), "{error}");
    assert_no_process_with("987654");
    stack.assert_no_workspace_left();
}

/// Terraform's `-detailed-exitcode` 2 also means "the Go runtime crashed": without a plan
/// file there is no plan, whatever the exit code says.
#[tokio::test]
async fn exit_code_2_without_a_plan_is_a_failure() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let script = r#"case "$1" in
  version) echo '{"terraform_version": "9.9.9"}' ;;
  plan) echo 'panic: runtime error: invalid memory address' >&2; exit 2 ;;
esac"#;
    let def = script_def(dir.path(), script, "");
    let (outcome, _) = plan(stack.request(def), CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.summary.is_none() && outcome.artifact.is_none());
    let error = outcome.error.expect("error");
    assert!(
        error.contains("plan wrote no plan file") && error.contains("panic: runtime error"),
        "{error}"
    );
    stack.assert_no_workspace_left();
}

/// Terraform hides sensitive values in its human output, but a tool (or `TF_LOG`) may print
/// them: the redactor replaces secrets and sensitive defaults in every streamed line and in
/// the error tail.
#[tokio::test]
async fn values_a_tool_prints_are_redacted_from_logs_and_errors() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", &secret_stack())]);
    let dir = tempfile::tempdir().expect("tempdir");
    let script =
        r#"echo "token=$TF_VAR_token"; cat main.tf; echo "stderr token=$TF_VAR_token" >&2; exit 1"#;
    let mut req = stack.request(script_def(dir.path(), script, ""));
    req.secrets = vec![("TF_VAR_token".into(), Secret::new(SECRET_ENV))];
    let (outcome, lines) = plan(req, CancellationToken::new()).await;
    let logs = log_text(&lines);
    let error = outcome.error.expect("error");
    assert!(logs.contains("token=(sensitive)"), "{logs}");
    assert!(logs.contains("default   = \"(sensitive)\""), "{logs}");
    assert!(error.contains("stderr token=(sensitive)"), "{error}");
    for secret in [SECRET_DEFAULT, SECRET_ENV] {
        assert!(!logs.contains(secret) && !error.contains(secret));
    }
}

/// Without bubblewrap there is no PID namespace to tear down: a process the tool leaves
/// behind (holding its output pipes) is killed with the tool's process group, and every run
/// says loudly that it was not sandboxed.
#[tokio::test]
async fn without_the_sandbox_leftovers_are_killed_and_each_run_warns() {
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let def = script_def(dir.path(), "sleep 987656 & exit 7", "timeout = \"60s\"");
    let mut req = stack.request(def);
    req.sandbox = SandboxMode::None;
    let started = Instant::now();
    let (outcome, lines) = plan(req, CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.error.expect("error").contains("exit code 7"));
    assert!(log_text(&lines).contains("UNSANDBOXED"));
    assert_no_process_with("987656");
    stack.assert_no_workspace_left();
}

/// Without bubblewrap a plan is refused, unless the sandbox is switched off explicitly.
#[test]
fn a_missing_bubblewrap_refuses_to_run_unless_sandbox_none() {
    let fixture = GitFixture::new();
    fixture.write("stacks/s/main.tf", &null_stack("a"));
    fixture.commit("stack");
    let tools = Toolchain::get();
    // A PATH with terraform and prlimit but no bwrap.
    let bin = tempfile::tempdir().expect("tempdir");
    let prlimit = runner::find_on_path("prlimit").expect("prlimit on PATH");
    std::os::unix::fs::symlink(prlimit, bin.path().join("prlimit")).expect("symlink");
    let path = format!(
        "{}:{}",
        tools.terraform().parent().expect("bin dir").display(),
        bin.path().display()
    );
    let run = |extra: &[&str]| {
        let workspaces = tempfile::tempdir().expect("tempdir");
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["plan", "--format", "json", "--repo"])
            .arg(fixture.work())
            .arg("--workspaces")
            .arg(workspaces.path())
            .args(extra)
            .env("PATH", &path)
            .env("TF_CLI_CONFIG_FILE", tools.cli_config())
            .output()
            .expect("run tidemark plan")
    };
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&refused.stdout).expect("json");
    let error = json["stacks"][0]["error"].as_str().expect("error");
    assert!(
        error.contains("bubblewrap (bwrap) is not installed"),
        "{error}"
    );

    let unsandboxed = run(&["--sandbox", "none"]);
    let stderr = String::from_utf8_lossy(&unsandboxed.stderr);
    assert!(unsandboxed.status.success(), "{stderr}");
    assert!(stderr.contains("running steps unsandboxed"), "{stderr}");
}

/// The runner's limits reach the tool through prlimit: a file past `file_size_mib` and a
/// busy loop past `cpu_seconds` both fail the step.
#[tokio::test]
async fn resource_limits_apply_inside_the_sandbox() {
    require_bwrap();
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let big = script_def(
        dir.path(),
        "head -c 3000000 /dev/zero > big.bin && echo wrote-it",
        "file_size_mib = 1",
    );
    let (outcome, lines) = plan(stack.request(big), CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Failed, "{}", log_text(&lines));
    assert!(!log_text(&lines).contains("wrote-it"));

    let dir = tempfile::tempdir().expect("tempdir");
    let busy = script_def(
        dir.path(),
        "while :; do :; done",
        "cpu_seconds = 1\n    timeout = \"60s\"",
    );
    let started = Instant::now();
    let (outcome, _) = plan(stack.request(busy), CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Failed, "{:?}", outcome.error);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    stack.assert_no_workspace_left();
}

/// A caller that aborts the task running a plan (instead of cancelling it) still leaves no
/// process behind, even without bubblewrap's PID namespace.
#[tokio::test]
async fn an_aborted_plan_leaves_no_process() {
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let def = script_def(
        dir.path(),
        "sleep 987657 & sleep 987658",
        "timeout = \"60s\"",
    );
    let mut req = stack.request(def);
    req.sandbox = SandboxMode::None;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let task = tokio::spawn(runner::plan(req, tx, CancellationToken::new()));
    // The first log line (the command) means the step is starting.
    rx.recv().await.expect("a log line");
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    assert_no_process_with("987657");
    assert_no_process_with("987658");
    stack.assert_no_workspace_left();
}

/// Repository code runs inside the sandbox and may turn any part of the workspace into a
/// symlink; on the host that link would point at the host's files. Tidemark must not read a
/// host file into the plan artifact through it.
#[tokio::test]
async fn a_plan_cannot_smuggle_a_host_file_into_the_artifact() {
    require_bwrap();
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("plan.tfplan"), "host-only-content").expect("write");
    let stack = Stack::new(&[("stacks/s/main.tf", "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        r#"case "$1" in
  version) echo '{{"terraform_version": "9.9.9"}}' ;;
  plan) out=$(dirname "$2"); rm -rf "$out" && ln -s "{}" "$out" ;;
  show) echo '{{"format_version": "0.2"}}' ;;
esac"#,
        host.path().display()
    );
    let def = script_def(dir.path(), &script, "");
    let (outcome, lines) = plan(stack.request(def), CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Failed, "{}", log_text(&lines));
    assert!(outcome.artifact.is_none());
    let error = outcome.error.expect("error");
    assert!(error.contains("leaves the workspace"), "{error}");
    stack.assert_no_workspace_left();
    assert!(
        host.path().join("plan.tfplan").exists(),
        "cleanup must not follow the link"
    );
}

/// A `local-exec` runs under the shipped runner's default system view: `/bin/sh` and the
/// host's tools work, yet a planted host file, `/etc/shadow` and the host's accounts stay
/// invisible.
#[tokio::test]
async fn local_exec_runs_under_the_system_view_and_host_files_stay_hidden() {
    require_bwrap();
    let outside = tempfile::tempdir_in("/var/tmp").expect("tempdir outside /tmp");
    let planted = outside.path().join("planted.txt");
    std::fs::write(&planted, "host-data-4b7c").expect("plant");
    let command = format!(
        "echo tools-ok $(printf abc | tr a-c x-z); \
         cat {} || echo planted-hidden; \
         test -e /etc/shadow && echo shadow-visible || echo shadow-hidden; \
         echo uid=$(id -u) user=$(id -un) home-writable=$(touch $HOME/w && echo yes); \
         grep -c : /etc/passwd",
        planted.display()
    );
    let main = format!(
        r#"{}
resource "null_resource" "tools" {{
  provisioner "local-exec" {{
    command = "{}"
  }}
}}
"#,
        null_stack("v"),
        command.replace('"', "\\\"")
    );
    let stack = Stack::new(&[("stacks/s/main.tf", &main)]);
    let req = stack.request(terraform_def(""));
    let key = req.key.clone();
    let (outcome, lines) = plan(req, CancellationToken::new()).await;
    assert_eq!(
        outcome.status,
        RunStatus::Succeeded,
        "{:?}\n{}",
        outcome.error,
        log_text(&lines)
    );
    let mut apply_req = stack.request(terraform_def(""));
    apply_req.key = key;
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let collector = tokio::spawn(collect(rx));
    let applied = runner::apply(
        ApplyRequest {
            run: apply_req,
            artifact: outcome.artifact.expect("artifact"),
        },
        tx,
        CancellationToken::new(),
    )
    .await;
    let log = log_text(&collector.await.expect("collector"));
    assert_eq!(
        applied.status,
        RunStatus::Succeeded,
        "{:?}\n{log}",
        applied.error
    );
    assert!(log.contains("tools-ok xyz"), "{log}");
    assert!(log.contains("planted-hidden"), "{log}");
    assert!(!log.contains("host-data-4b7c"), "{log}");
    assert!(log.contains("shadow-hidden"), "{log}");
    // Not root, even when Tidemark is: the namespace's unprivileged user, which owns its HOME.
    assert!(
        log.contains("uid=1000 user=tidemark home-writable=yes"),
        "{log}"
    );
    assert!(log.contains("(local-exec): 2"), "two accounts only: {log}");
    stack.assert_no_workspace_left();
}

/// `system = false` turns the view off: the same `local-exec` finds no shell, as before.
#[tokio::test]
async fn without_the_system_view_a_local_exec_has_no_shell() {
    require_bwrap();
    let main = format!(
        "{}\nresource \"null_resource\" \"tools\" {{\n  provisioner \"local-exec\" {{\n    command = \"echo hi\"\n  }}\n}}\n",
        null_stack("v")
    );
    let stack = Stack::new(&[("stacks/s/main.tf", &main)]);
    let def = || terraform_def("  sandbox {\n    system = false\n  }\n");
    let req = stack.request(def());
    let key = req.key.clone();
    let (outcome, lines) = plan(req, CancellationToken::new()).await;
    assert_eq!(outcome.status, RunStatus::Succeeded, "{}", log_text(&lines));
    let mut apply_req = stack.request(def());
    apply_req.key = key;
    let applied = runner::apply(
        ApplyRequest {
            run: apply_req,
            artifact: outcome.artifact.expect("artifact"),
        },
        tokio::sync::mpsc::channel(1024).0,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(applied.status, RunStatus::Failed);
    let error = applied.error.unwrap_or_default();
    assert!(error.contains("/bin/sh"), "{error}");
}
