//! A run's workspace holds the stack's closure, not the commit's tree: a stack reaching
//! `../../modules/x` plans with real terraform while an unrelated directory stays out of the
//! workspace; `export = "full"` brings everything back.

use tidemark::crypto::PlanKey;
use tidemark::runner::{
    self, LogLine, PlanRequest, RunStatus, RunnerSet, RunnerSource, SandboxMode, Workspace,
};
use tokio_util::sync::CancellationToken;

use crate::support::{GitFixture, Toolchain, null_stack};

fn module_stack() -> String {
    "module \"x\" {\n  source = \"../../modules/x\"\n}\n\noutput \"value\" {\n  value = module.x.value\n}\n"
        .to_string()
}

/// A repository with `stacks/s` using `modules/x`, and `big/` with many unrelated files.
fn fixture(stack_hcl: Option<&str>) -> (GitFixture, String) {
    let fixture = GitFixture::new();
    fixture.write("stacks/s/main.tf", &module_stack());
    if let Some(text) = stack_hcl {
        fixture.write("stacks/s/stack.hcl", text);
    }
    fixture.write("stacks/s/files/data.json", "{}");
    fixture.write("modules/x/main.tf", &null_stack("from-module"));
    fixture.write("shared/settings.json", "{\"a\": 1}");
    for i in 0..200 {
        fixture.write(&format!("big/d{}/f{i}.txt", i % 10), "unrelated");
    }
    fixture.write("stacks/other/main.tf", &null_stack("other"));
    let commit = fixture.commit("stacks");
    (fixture, commit)
}

fn workspace(fixture: &GitFixture, commit: &str, root: &std::path::Path) -> Workspace {
    let repo = tidemark::repo::open(&fixture.work()).expect("open");
    let oid = git2::Oid::from_str(commit).expect("oid");
    Workspace::export_stack(root, &repo, oid, "stacks/s", None).expect("export")
}

async fn plan(ws: Workspace, commit: &str) -> (runner::PlanOutcome, Vec<LogLine>) {
    let tf = Toolchain::get().terraform();
    let text = format!(
        "runner \"terraform\" {{\n  binary = \"{}\"\n}}\n",
        tf.display()
    );
    let set = RunnerSet::load(&[RunnerSource::new("test.hcl", text)]).expect("runner");
    let req = PlanRequest {
        instance: Default::default(),
        provider_cache: None,
        lifeline: None,
        workspace: ws,
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
        commit: commit.to_string(),
        key: PlanKey::generate(),
        state: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let outcome = runner::plan(req, tx, CancellationToken::new()).await;
    (outcome, collect.await.expect("collector"))
}

#[tokio::test]
async fn a_stack_plans_from_its_closure_and_unrelated_files_stay_out() {
    let (fixture, commit) = fixture(Some("stack {\n  watch = [\"../../shared/*.json\"]\n}\n"));
    let root = tempfile::tempdir().expect("root");
    let ws = workspace(&fixture, &commit, root.path());
    let tree = ws.tree();
    assert!(tree.join("modules/x/main.tf").is_file());
    assert!(tree.join("stacks/s/files/data.json").is_file());
    assert!(
        tree.join("shared/settings.json").is_file(),
        "watched files are exported"
    );
    assert!(
        !tree.join("big").exists(),
        "an unrelated directory was exported"
    );
    assert!(
        !tree.join("stacks/other").exists(),
        "another stack was exported"
    );
    let exported = ws.exported().expect("exported").clone();
    assert_eq!(exported.files, 5, "{exported:?}");
    assert_eq!(exported.top, ["modules", "shared", "stacks"]);

    let (outcome, logs) = plan(ws, &commit).await;
    let text: String = logs.iter().map(|l| format!("{}\n", l.text)).collect();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:?}\n{text}");
    assert!(
        text.contains("exported the stack's closure: 5 files under modules, shared, stacks"),
        "{text}"
    );
    let summary = outcome.summary.expect("summary");
    assert_eq!(summary.summary.add, 1, "{text}");
}

#[tokio::test]
async fn export_full_exports_the_whole_tree() {
    let (fixture, commit) = fixture(Some("stack {\n  export = \"full\"\n}\n"));
    let root = tempfile::tempdir().expect("root");
    let ws = workspace(&fixture, &commit, root.path());
    assert!(ws.tree().join("big/d3/f13.txt").is_file());
    assert!(ws.tree().join("stacks/other/main.tf").is_file());
    let exported = ws.exported().expect("exported").clone();
    assert!(exported.full);
    let (outcome, logs) = plan(ws, &commit).await;
    let text: String = logs.iter().map(|l| format!("{}\n", l.text)).collect();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:?}\n{text}");
    assert!(
        text.contains("exported the whole tree (206 files)"),
        "{text}"
    );
}
