//! `tidemark stacks|affected|graph` run as the real binary on real git repositories, working
//! copies and bare remotes alike, with their exact JSON.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::support::GitFixture;

fn tidemark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env("TIDEMARK_LOG", "warn")
        // No index kept between calls, except where a test asks for one.
        .env("TIDEMARK_CACHE_DIR", "")
        .output()
        .expect("run tidemark")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "tidemark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json on stdout")
}

/// Two stacks with a shared module and an explicit edge, then a change to the module.
fn two_commits(fixture: &GitFixture) -> (String, String) {
    fixture
        .write("stacks/net/stack.hcl", "stack {\n  name = \"net\"\n}\n")
        .write(
            "stacks/net/main.tf",
            "module \"vpc\" {\n  source = \"../../modules/vpc\"\n}\n",
        )
        .write(
            "stacks/app/stack.hcl",
            "stack {\n  name = \"app\"\n  depends_on = [\"net\"]\n}\n",
        )
        .write("stacks/app/main.tf", "")
        .write("stacks/lone/stack.hcl", "stack {}\n")
        .write("modules/vpc/main.tf", "")
        .write("modules/vpc/README.md", "docs");
    let base = fixture.commit_and_push("base");
    fixture
        .write("modules/vpc/main.tf", "# changed\n")
        .write("modules/vpc/README.md", "more docs")
        .write("stacks/lone/stack.hcl", "stack {\n  colour = \"blue\"\n}\n");
    let head = fixture.commit_and_push("head");
    (base, head)
}

fn expected_affected(base: &str, head: &str) -> Value {
    json!({
        "base": base,
        "head": head,
        "stacks": [
            {"path": "stacks/lone", "name": "stacks/lone", "direct": true,
             "reasons": [{"kind": "file", "file": "stacks/lone/stack.hcl"}]},
            {"path": "stacks/net", "name": "net", "direct": true,
             "reasons": [{"kind": "module", "file": "modules/vpc/main.tf", "module": "modules/vpc"}]},
            {"path": "stacks/app", "name": "app", "direct": false,
             "reasons": [{"kind": "dependency", "stack": "stacks/net"}]},
        ],
        "errors": [
            {"stack": "stacks/lone", "file": "stacks/lone/stack.hcl", "line": 2,
             "message": "unknown attribute \"colour\" in stack block"}
        ]
    })
}

#[test]
fn affected_json_on_a_working_copy() {
    let fixture = GitFixture::new();
    let (base, head) = two_commits(&fixture);
    let work = fixture.work();
    let output = tidemark(&[
        "affected",
        "--repo",
        work.to_str().expect("utf-8"),
        "--base",
        &base,
        "--head",
        "HEAD",
        "--format",
        "json",
    ]);
    assert_eq!(json_of(&output), expected_affected(&base, &head));
}

#[test]
fn a_second_call_reads_the_index_the_first_kept_and_a_damaged_one_is_rebuilt() {
    let fixture = GitFixture::new();
    let (base, head) = two_commits(&fixture);
    let work = fixture.work();
    let cache = tempfile::tempdir().expect("tempdir");
    let call = || {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["affected", "--repo", work.to_str().expect("utf-8")])
            .args(["--base", &base, "--head", "HEAD", "--format", "json"])
            .env("TIDEMARK_LOG", "warn")
            .env("TIDEMARK_CACHE_DIR", cache.path())
            .output()
            .expect("run tidemark")
    };
    let first = call();
    assert_eq!(json_of(&first), expected_affected(&base, &head));
    let files: Vec<_> = std::fs::read_dir(cache.path().join("index"))
        .expect("the index directory")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = std::fs::metadata(&files[0])
        .expect("index")
        .modified()
        .expect("mtime");

    let second = call();
    assert_eq!(json_of(&second), expected_affected(&base, &head));
    assert!(
        second.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let after = std::fs::metadata(&files[0])
        .expect("index")
        .modified()
        .expect("mtime");
    assert_eq!(
        kept, after,
        "a warm call learns nothing and rewrites nothing"
    );

    std::fs::write(&files[0], b"TIDEMARK-INDEX\0\0 garbage").expect("damage it");
    let third = call();
    assert_eq!(json_of(&third), expected_affected(&base, &head));
    let warning = String::from_utf8_lossy(&third.stderr);
    assert!(
        warning.contains(&files[0].display().to_string()) && warning.contains("rebuilt"),
        "{warning}"
    );
    assert!(
        std::fs::metadata(&files[0]).expect("index").len() > 100,
        "rewritten"
    );
}

#[test]
fn affected_json_on_a_bare_repository_and_strict_exit() {
    let fixture = GitFixture::new();
    let (base, head) = two_commits(&fixture);
    let remote = fixture.remote();
    let remote = remote.to_str().expect("utf-8");
    let args = [
        "affected", "--repo", remote, "--base", "main~1", "--head", "main", "--format", "json",
    ];
    assert_eq!(json_of(&tidemark(&args)), expected_affected(&base, &head));

    let mut strict = args.to_vec();
    strict.push("--strict");
    let output = tidemark(&strict);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn affected_text_says_why() {
    let fixture = GitFixture::new();
    two_commits(&fixture);
    let work = fixture.work();
    let output = tidemark(&[
        "affected",
        "--repo",
        work.to_str().expect("utf-8"),
        "--base",
        "HEAD~1",
        "--head",
        "HEAD",
    ]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "stacks/lone\n  changed stacks/lone/stack.hcl\n\
         stacks/net (net)\n  changed modules/vpc/main.tf in local module modules/vpc\n\
         stacks/app (app)\n  depends on affected stack stacks/net\n\
         errors:\n  stacks/lone: stacks/lone/stack.hcl:2: unknown attribute \"colour\" in stack block\n"
    );
}

#[test]
fn stacks_and_graph_json_and_dot() {
    let fixture = GitFixture::new();
    let (_, head) = two_commits(&fixture);
    let work = fixture.work();
    let work = work.to_str().expect("utf-8");
    let stack = |path: &str, name: &str, depends_on: Value| {
        json!({"path": path, "name": name, "kind": "terraform", "runner": null,
               "depends_on": depends_on, "watch": [], "drift_schedule": null,
               "auto_apply": false, "tags": [], "drift_remediation": "none",
               "source": "stack.hcl"})
    };
    let expected = json!({
        "commit": head,
        "stacks": [
            stack("stacks/app", "app", json!(["stacks/net"])),
            stack("stacks/lone", "stacks/lone", json!([])),
            stack("stacks/net", "net", json!([])),
        ],
        "edges": [{"from": "stacks/net", "to": "stacks/app", "kind": "depends_on"}],
        "errors": [{"stack": "stacks/lone", "file": "stacks/lone/stack.hcl", "line": 2,
                    "message": "unknown attribute \"colour\" in stack block"}]
    });
    let stacks = tidemark(&["stacks", "--repo", work, "--format", "json"]);
    assert_eq!(json_of(&stacks), expected);
    let graph = tidemark(&["graph", "--repo", work, "--rev", "HEAD", "--format", "json"]);
    assert_eq!(json_of(&graph), expected);

    let dot = tidemark(&["graph", "--repo", work, "--format", "dot"]);
    assert!(dot.status.success());
    assert_eq!(
        String::from_utf8_lossy(&dot.stdout),
        "digraph stacks {\n  \"stacks/app\" [label=\"app\"];\n  \"stacks/lone\" [label=\"stacks/lone\"];\n  \"stacks/net\" [label=\"net\"];\n  \"stacks/net\" -> \"stacks/app\" [label=\"depends_on\"];\n}\n"
    );
}

#[test]
fn cycle_exits_non_zero_naming_every_stack_on_it() {
    let fixture = GitFixture::new();
    fixture
        .write("a/stack.hcl", "stack {}\n")
        .write("b/stack.hcl", "stack {\n  depends_on = [\"../a\"]\n}\n")
        .write("c/stack.hcl", "stack {\n  depends_on = [\"../b\"]\n}\n")
        .write("free/stack.hcl", "stack {}\n");
    fixture.commit("base");
    fixture.write("a/stack.hcl", "stack {\n  depends_on = [\"../c\"]\n}\n");
    fixture.commit("cycle");
    let work = fixture.work();
    let work = work.to_str().expect("utf-8");
    for args in [
        vec![
            "affected", "--repo", work, "--base", "HEAD~1", "--head", "HEAD", "--format", "json",
        ],
        vec!["graph", "--repo", work, "--format", "dot"],
        vec!["stacks", "--repo", work],
    ] {
        let output = tidemark(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("dependency cycle among stacks: a, b, c\n"),
            "{stderr}"
        );
    }
}

#[test]
fn malformed_file_is_reported_and_exit_is_zero() {
    let fixture = GitFixture::new();
    fixture
        .write("a/stack.hcl", "stack {}\n")
        .write("b/stack.hcl", "stack {}\n");
    let base = fixture.commit("base");
    fixture
        .write("a/main.tf", "module \"x\" {\n  source = \n}\n")
        .write("b/main.tf", "");
    let head = fixture.commit("broken");
    let work = fixture.work();
    let output = tidemark(&[
        "affected",
        "--repo",
        work.to_str().expect("utf-8"),
        "--base",
        &base,
        "--head",
        &head,
        "--format",
        "json",
    ]);
    let value = json_of(&output);
    let paths: Vec<&str> = value["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["a", "b"]);
    let errors = value["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["stack"], "a");
    assert_eq!(errors[0]["file"], "a/main.tf");
    assert_eq!(errors[0]["line"], 2);
}

/// An Atlantis repository (issue 14, item 11): `atlantis.yaml` projects are the stacks, with
/// where each came from, its workspace, autoplan and Terraform version, `depends_on` by
/// project name, and `when_modified` relative to the project directory.
#[test]
fn atlantis_yaml_projects_are_stacks_on_a_real_repository() {
    let fixture = GitFixture::new();
    fixture
        .write(
            "atlantis.yaml",
            "version: 3\nparallel_plan: true\nprojects:\n- name: network\n  dir: live/net\n  workspace: prod\n  terraform_version: v1.5.7\n- name: app\n  dir: live/app\n  depends_on: [network]\n  autoplan:\n    when_modified: [\"*.tf\", \"../../policies/*.json\"]\n- name: manual\n  dir: live/manual\n  autoplan:\n    enabled: false\n  workflow: custom\n",
        )
        .write("live/net/main.tf", "")
        .write("live/app/main.tf", "")
        .write("live/manual/main.tf", "")
        .write("policies/app.json", "{}")
        .write("scratch/main.tf", "");
    let base = fixture.commit("atlantis");
    let work = fixture.work();
    let work = work.to_str().expect("utf-8");
    let stacks = json_of(&tidemark(&["stacks", "--repo", work, "--format", "json"]));
    let summary: Vec<Value> = stacks["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| {
            json!([
                s["path"],
                s["name"],
                s["source"],
                s["workspace"],
                s["autoplan"],
                s["terraform_version"],
                s["depends_on"],
                s["watch"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!([
                "live/app",
                "app",
                "atlantis.yaml",
                null,
                null,
                null,
                ["live/net@prod"],
                ["*.tf", "../../policies/*.json"]
            ]),
            json!([
                "live/manual",
                "manual",
                "atlantis.yaml",
                null,
                false,
                null,
                [],
                ["**/*.tf*"]
            ]),
            // A project in workspace `prod` is the stack's `prod` instance.
            json!([
                "live/net@prod",
                "network@prod",
                "atlantis.yaml",
                "prod",
                null,
                "v1.5.7",
                [],
                ["**/*.tf*"]
            ]),
        ]
    );
    let messages: Vec<&str> = stacks["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert_eq!(e["file"], "atlantis.yaml");
            e["message"].as_str().expect("message")
        })
        .collect();
    assert_eq!(
        messages,
        [
            "key parallel_plan is not used by tidemark (ignored)",
            "key projects[2].workflow is not used by tidemark (ignored)",
        ]
    );
    let text = tidemark(&["stacks", "--repo", work]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("live/net@prod (network@prod) [terraform] from atlantis.yaml\n  environment prod\n  workspace prod"),
        "{text}"
    );
    assert!(
        text.contains("live/manual (manual) [terraform] from atlantis.yaml\n"),
        "{text}"
    );

    fixture.write("policies/app.json", "{\"changed\": true}");
    let head = fixture.commit("policy");
    let affected = json_of(&tidemark(&[
        "affected", "--repo", work, "--base", &base, "--head", &head, "--format", "json",
    ]));
    let paths: Vec<&str> = affected["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["live/app"]);
}
