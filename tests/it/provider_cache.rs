//! The runner with real terraform: the shared provider cache (a first plan fills it, a second
//! links the provider from it and still plans, and the sandbox cannot write it), and an
//! environment's settings (its variable file reaches the plan; `workspace` on Tidemark's own
//! backend is refused with an error naming the environment).

use std::path::{Path, PathBuf};

use tidemark::crypto::PlanKey;
use tidemark::runner::{
    self, Instance, LogLine, PlanOutcome, PlanRequest, RunStatus, RunnerSet, RunnerSource,
    SandboxMode, Workspace,
};
use tokio_util::sync::CancellationToken;

use crate::support::{GitFixture, Toolchain, null_stack};

const NULL: &str = "registry.terraform.io/hashicorp/null/2.1.2";

struct Fixture {
    git: GitFixture,
    commit: String,
    root: tempfile::TempDir,
}

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Fixture {
        let git = GitFixture::new();
        for (path, content) in files {
            git.write(path, content);
        }
        let commit = git.commit("stack");
        Fixture {
            git,
            commit,
            root: tempfile::tempdir().expect("root"),
        }
    }

    fn request(&self, cache: Option<&Path>, instance: Instance) -> PlanRequest {
        let tf = Toolchain::get().terraform();
        let text = format!(
            "runner \"terraform\" {{\n  binary = \"{}\"\n}}\n",
            tf.display()
        );
        let set = RunnerSet::load(&[RunnerSource::new("test.hcl", text)]).expect("definitions");
        let repo = tidemark::repo::open(&self.git.work()).expect("open");
        let oid = git2::Oid::from_str(&self.commit).expect("oid");
        PlanRequest {
            instance,
            provider_cache: cache.map(Path::to_path_buf),
            lifeline: None,
            workspace: Workspace::export(self.root.path(), &repo, oid).expect("export"),
            stack: "stacks/s".into(),
            runner: set.get("terraform").expect("terraform").clone(),
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
}

async fn plan(req: PlanRequest) -> (PlanOutcome, String) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<LogLine>(1024);
    let collector = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(line) = rx.recv().await {
            text.push_str(&line.text);
            text.push('\n');
        }
        text
    });
    let outcome = runner::plan(req, tx, CancellationToken::new()).await;
    (outcome, collector.await.expect("collector"))
}

fn trigger(outcome: &PlanOutcome) -> String {
    let artifact = outcome.artifact.as_ref().expect("artifact");
    let json: serde_json::Value =
        serde_json::from_slice(&artifact.plan_json().expect("json")).expect("plan json");
    json["planned_values"]["root_module"]["resources"][0]["values"]["triggers"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_first_plan_fills_the_provider_cache_and_the_next_links_it() {
    let fixture = Fixture::new(&[("stacks/s/main.tf", &null_stack("cached"))]);
    let cache_dir = tempfile::tempdir().expect("cache");
    let cache: PathBuf = cache_dir.path().join("provider-cache");

    let (first, log) = plan(fixture.request(Some(&cache), Instance::default())).await;
    assert_eq!(
        first.status,
        RunStatus::Succeeded,
        "{:?}\n{log}",
        first.error
    );
    assert!(
        log.contains(&format!("provider cache: added {NULL}")),
        "{log}"
    );
    let cached = cache.join(NULL).join("linux_amd64");
    assert!(
        std::fs::read_dir(&cached).expect("cached provider").count() > 0,
        "the provider is in the shared cache"
    );

    // The second run links the cached version (nothing to add) and plans the same.
    let (second, log) = plan(fixture.request(Some(&cache), Instance::default())).await;
    assert_eq!(
        second.status,
        RunStatus::Succeeded,
        "{:?}\n{log}",
        second.error
    );
    assert!(!log.contains("provider cache: added"), "{log}");
    assert_eq!(trigger(&second), "cached");
    let versions = std::fs::read_dir(cache.join("registry.terraform.io/hashicorp/null"))
        .expect("versions")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect::<Vec<_>>();
    assert_eq!(versions, ["2.1.2"], "one copy, no leftovers");
}

#[tokio::test]
async fn an_environment_gives_the_plan_its_var_file_and_refuses_workspaces_on_tidemarks_backend() {
    let main = r#"variable "value" {}
resource "null_resource" "this" {
  triggers = { value = var.value }
}
terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}
"#;
    let fixture = Fixture::new(&[
        ("stacks/s/main.tf", main),
        ("stacks/s/env/prod.tfvars", "value = \"from-prod-tfvars\"\n"),
    ]);
    let prod = Instance {
        environment: Some("prod".into()),
        var_files: vec!["stacks/s/env/prod.tfvars".into()],
        ..Instance::default()
    };
    let (outcome, log) = plan(fixture.request(None, prod.clone())).await;
    assert_eq!(
        outcome.status,
        RunStatus::Succeeded,
        "{:?}\n{log}",
        outcome.error
    );
    assert_eq!(trigger(&outcome), "from-prod-tfvars");

    // With Tidemark's backend (a state for this run), `workspace` is refused.
    let mut req = fixture.request(
        None,
        Instance {
            workspace: Some("prod".into()),
            ..prod
        },
    );
    let dir = tempfile::tempdir().expect("dir");
    req.state = Some(runner::StateBackend {
        socket: dir.path().join("state.sock"),
        path: "/state/infra/stacks/s/prod".into(),
        username: "u".into(),
        password: tidemark::crypto::Secret::new("p"),
        exe: PathBuf::from("/bin/false"),
    });
    let (outcome, _) = plan(req).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("environment \"prod\"") && error.contains("workspace"),
        "{error}"
    );
}
