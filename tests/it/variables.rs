//! Variable sets end to end, on the real binary with real terraform: a set reaches exactly the
//! stacks its globs select, plan-phase and apply-phase sets give the plan and the apply
//! different values, a secret shows up nowhere Tidemark writes, and a missing secret fails
//! only the stack that needs it. The runner is a shell wrapper around terraform, which also
//! proves the sandbox's default system view (`/bin/sh` runs without any `ro_paths`).

use std::path::{Path, PathBuf};

use tidemark::store::{Run, RunFilter, RunKind, RunStatus, Store};

use crate::support::{GitFixture, ServeProcess, Toolchain, eventually};

const TOKEN: &str = "prod-token-7f3e9a51c2";
const TOKEN_VAR: &str = "TIDEMARK_TEST_PROD_TOKEN";

/// One stack: `var.region` and `var.token` (not marked sensitive: only the redactor keeps the
/// token out of the plan) go into a null_resource; the apply runs a `local-exec`.
fn stack() -> String {
    r#"terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}
variable "region" {
  type    = string
  default = "default-region"
}
variable "token" {
  type    = string
  default = "no-token"
}
resource "null_resource" "this" {
  triggers = { region = var.region, token = var.token }
  provisioner "local-exec" {
    command = "echo \"local-exec sees mode=$CLOUD_MODE\""
  }
}
"#
    .to_string()
}

/// A terraform wrapper that prints the credential mode each step sees.
fn wrapper(dir: &Path) -> PathBuf {
    let script = dir.join("terraform-wrapper");
    let text = format!(
        "#!/bin/sh\necho \"step $1 sees mode=${{CLOUD_MODE:-none}}\" >&2\nexec {} \"$@\"\n",
        Toolchain::get().terraform().display()
    );
    std::fs::write(&script, text).expect("write wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn config(dir: &Path, repo_url: &str) -> PathBuf {
    let tools = Toolchain::get();
    let text = format!(
        r#"listen   = "127.0.0.1:0"
data_dir = "{data}"
workers  = 2

runner "terraform" {{
  binary  = "{wrapper}"
  helpers = ["{tf}"]
  env = {{
    TF_CLI_CONFIG_FILE = "{rc}"
    CHECKPOINT_DISABLE = "1"
    TF_IN_AUTOMATION   = "1"
  }}
}}

repo "infra" {{
  url           = "{repo_url}"
  poll_interval = "1s"
}}

variables "aws-prod" {{
  stacks     = ["stacks/prod/**"]
  terraform  = {{ region = "eu-west-1" }}
  secret_env = {{ TF_VAR_token = "{TOKEN_VAR}" }}
}}
variables "read-only" {{
  stacks = ["stacks/prod/app"]
  phases = ["plan"]
  env    = {{ CLOUD_MODE = "read-only" }}
}}
variables "read-write" {{
  stacks = ["stacks/prod/app"]
  phases = ["apply"]
  env    = {{ CLOUD_MODE = "read-write" }}
}}
variables "broken" {{
  stacks     = ["stacks/prod/broken"]
  secret_env = {{ API_KEY = "TIDEMARK_TEST_NEVER_SET" }}
}}
"#,
        data = dir.join("data").display(),
        wrapper = wrapper(dir).display(),
        tf = tools.terraform().display(),
        rc = tools.cli_config().display(),
    );
    let path = dir.join("tidemark.hcl");
    std::fs::write(&path, text).expect("write config");
    path
}

fn plan_json(artifact: &tidemark::store::StoredArtifact) -> serde_json::Value {
    let raw = tidemark::crypto::decompress(&artifact.plan_json).expect("gunzip plan json");
    serde_json::from_slice(&raw).expect("plan json")
}

fn triggers(plan: &serde_json::Value) -> (String, String) {
    let values = &plan["planned_values"]["root_module"]["resources"][0]["values"]["triggers"];
    let get = |k: &str| values[k].as_str().unwrap_or_default().to_string();
    (get("region"), get("token"))
}

/// Every file below `dir`, as bytes, with its path.
fn files_below(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_below(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_reach_only_their_stacks_and_phases_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/prod/app/main.tf", &stack())
        .write(
            "stacks/prod/app/stack.hcl",
            "stack {\n  auto_apply = true\n}\n",
        )
        .write("stacks/dev/app/main.tf", &stack())
        .write("stacks/dev/app/stack.hcl", "stack {}\n")
        .write("stacks/prod/broken/main.tf", &stack())
        .write("stacks/prod/broken/stack.hcl", "stack {}\n");
    git.commit_and_push("three stacks");
    let config = config(dir.path(), &git.url());
    let log = dir.path().join("serve.log");
    let _serve = ServeProcess::start(&config, &[(TOKEN_VAR, TOKEN)], &log);
    let db_url = format!("sqlite://{}", dir.path().join("data/tidemark.db").display());
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // The service picks its port; it prints the address it listens on.
    let addr: String = eventually(60, "the service to listen", || async {
        let text = serve_log();
        let rest = text.split("listening on http://").nth(1)?;
        Some(rest.split_whitespace().next()?.to_string())
    })
    .await;

    // Three plans and the auto-apply of prod/app, all final.
    let store = eventually(60, "the database", || async {
        Store::open(&db_url).await.ok()
    })
    .await;
    let mut runs: Vec<Run> = Vec::new();
    for _ in 0..2400 {
        runs = store.runs(&RunFilter::default()).await.expect("runs");
        if runs.len() >= 4 && runs.iter().all(|r| r.status.is_final()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        runs.len() >= 4 && runs.iter().all(|r| r.status.is_final()),
        "three plans and one apply did not finish: {runs:#?}\n{}",
        serve_log()
    );
    let find = |stack: &str, kind: RunKind| {
        runs.iter()
            .find(|r| r.stack == stack && r.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} of {stack}: {runs:#?}\n{}", serve_log()))
    };
    let logs_of = |id: i64| {
        let store = store.clone();
        async move {
            store
                .logs(id)
                .await
                .expect("logs")
                .iter()
                .map(|l| format!("{}\n", l.text))
                .collect::<String>()
        }
    };

    // prod/app: the prod set's region and token, the read-only mode in the plan, the
    // read-write mode in the apply (its local-exec ran under the default sandbox).
    let prod_plan = find("stacks/prod/app", RunKind::Plan);
    let prod_plan_log = logs_of(prod_plan.id).await;
    assert_eq!(prod_plan.status, RunStatus::Succeeded, "{prod_plan_log}");
    let artifact = store
        .artifact(prod_plan.id)
        .await
        .expect("artifact")
        .expect("stored");
    let (region, token) = triggers(&plan_json(&artifact));
    assert_eq!(region, "eu-west-1");
    assert_ne!(
        token, "no-token",
        "the secret reached the plan (and was redacted)"
    );
    assert!(
        prod_plan_log.contains("step plan sees mode=read-only"),
        "{prod_plan_log}"
    );
    assert!(!prod_plan_log.contains("read-write"), "{prod_plan_log}");
    assert!(
        prod_plan_log.contains(
            "variable sets for plan: aws-prod (TF_VAR_region, TF_VAR_token); read-only (CLOUD_MODE)"
        ),
        "{prod_plan_log}"
    );
    let apply = find("stacks/prod/app", RunKind::Apply);
    let apply_log = logs_of(apply.id).await;
    assert_eq!(apply.status, RunStatus::Succeeded, "{apply_log}");
    assert!(
        apply_log.contains("step apply sees mode=read-write"),
        "{apply_log}"
    );
    assert!(
        apply_log.contains("local-exec sees mode=read-write"),
        "{apply_log}"
    );

    // dev/app is outside every set: the defaults, no mode.
    let dev = find("stacks/dev/app", RunKind::Plan);
    let dev_log = logs_of(dev.id).await;
    assert_eq!(dev.status, RunStatus::Succeeded, "{dev_log}");
    let artifact = store
        .artifact(dev.id)
        .await
        .expect("artifact")
        .expect("stored");
    assert_eq!(
        triggers(&plan_json(&artifact)),
        ("default-region".to_string(), "no-token".to_string())
    );
    assert!(dev_log.contains("step plan sees mode=none"), "{dev_log}");

    // prod/broken: its set's secret is missing; the error names the set, the variable and
    // where it is read from, and only this stack failed.
    let broken = find("stacks/prod/broken", RunKind::Plan);
    assert_eq!(broken.status, RunStatus::Failed);
    let error = broken.error.clone().unwrap_or_default();
    assert!(
        error.contains("variable set \"broken\"")
            && error.contains("API_KEY")
            && error.contains("TIDEMARK_TEST_NEVER_SET")
            && error.contains("stacks/prod/broken"),
        "{error}"
    );

    // The token appears nowhere: not in any file of the data dir (the database included), not
    // in the service's log, not in any run's log, plan JSON or API answer.
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files = Vec::new();
    files_below(&dir.path().join("data"), &mut files);
    haystacks.extend(files.into_iter().map(|(p, b)| (p.display().to_string(), b)));
    haystacks.push(("serve log".into(), serve_log().into_bytes()));
    tidemark::install_crypto_provider();
    let client = reqwest::Client::new();
    let api = |path: String| {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            let response = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .expect("api request");
            assert!(response.status().is_success(), "{path}");
            response.bytes().await.expect("body").to_vec()
        }
    };
    haystacks.push(("GET /api/v1/runs".into(), api("/api/v1/runs".into()).await));
    haystacks.push(("GET /".into(), api("/".into()).await));
    for run in &runs {
        haystacks.push((
            format!("run {} log", run.id),
            logs_of(run.id).await.into_bytes(),
        ));
        for path in [
            format!("/api/v1/runs/{}", run.id),
            format!("/api/v1/runs/{}/logs", run.id),
        ] {
            let body = api(path.clone()).await;
            haystacks.push((path, body));
        }
        if let Some(artifact) = store.artifact(run.id).await.expect("artifact") {
            let json = tidemark::crypto::decompress(&artifact.plan_json).expect("gunzip");
            haystacks.push((format!("run {} plan json", run.id), json));
        }
    }
    assert!(haystacks.len() > 10);
    for (what, bytes) in &haystacks {
        assert!(
            !String::from_utf8_lossy(bytes).contains(TOKEN),
            "the secret was found in {what}"
        );
    }
}
