//! Policy checks against real plan JSON from terraform 1.0.3 (create, delete, replace, no-op,
//! module resources, a mass deletion), and `tidemark policy test` as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use tidemark::policy::{
    self, Blocking, Level, PolicySet, Rule, StackInput, TidemarkInput, Verdict,
};

use crate::support::Toolchain;

/// Plan JSON for each scenario, made once per test binary by real terraform.
pub(crate) struct Plans {
    pub create: Value,
    no_op: Value,
    delete: Value,
    replace: Value,
    module_delete: Value,
    mass_delete: Value,
}

const PROVIDER: &str = r#"terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}
"#;

pub(crate) fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(|| {
        let module = [("child/main.tf", "resource \"null_resource\" \"inner\" {}\n")];
        let with_module =
            "resource \"null_resource\" \"a\" {}\nmodule \"child\" {\n  source = \"./child\"\n}\n";
        let two = "resource \"null_resource\" \"a\" {}\nresource \"null_resource\" \"b\" {}\n";
        let triggers = |v: &str| {
            format!("resource \"null_resource\" \"a\" {{\n  triggers = {{ v = \"{v}\" }}\n}}\n")
        };
        let many = |n: u32| format!("resource \"null_resource\" \"many\" {{\n  count = {n}\n}}\n");
        // Each scenario is its own workspace: run them side by side.
        std::thread::scope(|s| {
            let create = s.spawn(|| plan(&module, None, with_module));
            let no_op = s.spawn(|| plan(&module, Some(with_module), with_module));
            let delete = s.spawn(|| plan(&[], Some(two), "resource \"null_resource\" \"a\" {}\n"));
            let replace = s.spawn(|| plan(&[], Some(&triggers("1")), &triggers("2")));
            let module_delete = s.spawn(|| {
                plan(
                    &module,
                    Some(with_module),
                    "resource \"null_resource\" \"a\" {}\n",
                )
            });
            let mass_delete = s.spawn(|| plan(&[], Some(&many(12)), &many(0)));
            let join = |h: std::thread::ScopedJoinHandle<'_, Value>| h.join().expect("plan thread");
            Plans {
                create: join(create),
                no_op: join(no_op),
                delete: join(delete),
                replace: join(replace),
                module_delete: join(module_delete),
                mass_delete: join(mass_delete),
            }
        })
    })
}

/// Applies `before` (when given), then plans `after` and returns `show -json` of the plan.
fn plan(extra: &[(&str, &str)], before: Option<&str>, after: &str) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in extra {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write module");
    }
    let write = |body: &str| {
        std::fs::write(dir.path().join("main.tf"), format!("{PROVIDER}{body}")).expect("write")
    };
    write(before.unwrap_or(after));
    terraform(dir.path(), &["init", "-input=false", "-no-color"]);
    if before.is_some() {
        terraform(
            dir.path(),
            &["apply", "-auto-approve", "-input=false", "-no-color"],
        );
        write(after);
    }
    terraform(
        dir.path(),
        &["plan", "-input=false", "-no-color", "-out=plan.bin"],
    );
    let json = terraform(dir.path(), &["show", "-json", "plan.bin"]);
    let plan: Value = serde_json::from_str(&json).expect("plan JSON");
    assert_eq!(plan["terraform_version"], "1.0.3");
    plan
}

fn terraform(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(Toolchain::get().run(dir, args)).expect("utf-8")
}

fn actions(plan: &Value) -> Vec<(String, Value)> {
    plan["resource_changes"]
        .as_array()
        .expect("resource_changes")
        .iter()
        .map(|c| {
            (
                c["address"].as_str().expect("address").to_string(),
                c["change"]["actions"].clone(),
            )
        })
        .collect()
}

fn run(kind: &str, tags: &[&str]) -> TidemarkInput {
    TidemarkInput::new(
        "infra",
        "0123abcd",
        "main",
        StackInput::new("stacks/app", "app", tags.iter().copied()),
        kind,
    )
}

/// Evaluates the shipped policies (hard-mandatory) and compares `(policy, rule, message)`.
fn check(plan: &Value, tidemark: &TidemarkInput, expected: &[(&str, Rule, &str)]) -> Verdict {
    let set = PolicySet::shipped(Level::HardMandatory).expect("shipped policies");
    let verdict = policy::evaluate(&[set], plan, tidemark);
    assert!(verdict.errors.is_empty(), "{:#?}", verdict.errors);
    let found: Vec<_> = verdict
        .results
        .iter()
        .map(|r| (r.policy.as_str(), r.rule, r.message.as_str()))
        .collect();
    assert_eq!(found, expected);
    verdict
}

#[test]
fn the_scenarios_are_what_terraform_planned() {
    let plans = plans();
    let create = json!(["create"]);
    let no_op = json!(["no-op"]);
    let delete = json!(["delete"]);
    let replace = json!(["delete", "create"]);
    let pairs = |list: &[(&str, &Value)]| -> Vec<(String, Value)> {
        list.iter()
            .map(|(a, v)| (a.to_string(), (*v).clone()))
            .collect()
    };
    assert_eq!(
        actions(&plans.create),
        pairs(&[
            ("module.child.null_resource.inner", &create),
            ("null_resource.a", &create)
        ])
    );
    assert_eq!(
        actions(&plans.no_op),
        pairs(&[
            ("module.child.null_resource.inner", &no_op),
            ("null_resource.a", &no_op)
        ])
    );
    assert_eq!(
        actions(&plans.delete),
        pairs(&[("null_resource.a", &no_op), ("null_resource.b", &delete)])
    );
    assert_eq!(
        actions(&plans.replace),
        pairs(&[("null_resource.a", &replace)])
    );
    assert_eq!(
        actions(&plans.module_delete),
        pairs(&[
            ("module.child.null_resource.inner", &delete),
            ("null_resource.a", &no_op)
        ])
    );
    assert_eq!(actions(&plans.mass_delete).len(), 12);
}

#[test]
fn creating_and_no_op_plans_pass_every_shipped_policy() {
    for kind in ["plan", "drift"] {
        let verdict = check(&plans().create, &run(kind, &[]), &[]);
        assert!(verdict.passed);
        let verdict = check(&plans().no_op, &run(kind, &[]), &[]);
        assert!(verdict.passed);
    }
}

#[test]
fn deleting_is_denied_unless_the_stack_allows_destroy() {
    let verdict = check(
        &plans().delete,
        &run("plan", &["prod"]),
        &[(
            "tidemark.destroy",
            Rule::Deny,
            "null_resource.b would be deleted: stack app does not allow destroying resources (tag it \"allow-destroy\" to allow)",
        )],
    );
    assert_eq!((verdict.passed, verdict.blocking), (false, Blocking::Hard));
    let verdict = check(
        &plans().delete,
        &run("plan", &["prod", "allow-destroy"]),
        &[],
    );
    assert!(verdict.passed);
}

#[test]
fn deleting_a_module_resource_is_denied_with_its_full_address() {
    check(
        &plans().module_delete,
        &run("apply", &[]),
        &[(
            "tidemark.destroy",
            Rule::Deny,
            "module.child.null_resource.inner would be deleted: stack app does not allow destroying resources (tag it \"allow-destroy\" to allow)",
        )],
    );
}

#[test]
fn replacing_warns_always_and_is_denied_unless_allowed() {
    let warn = (
        "tidemark.replace",
        Rule::Warn,
        "null_resource.a will be replaced (deleted, then created)",
    );
    check(
        &plans().replace,
        &run("plan", &[]),
        &[
            (
                "tidemark.destroy",
                Rule::Deny,
                "null_resource.a would be replaced (deleted, then created): stack app does not allow destroying resources (tag it \"allow-destroy\" to allow)",
            ),
            warn,
        ],
    );
    let verdict = check(&plans().replace, &run("plan", &["allow-destroy"]), &[warn]);
    assert!(verdict.passed, "a warning does not block");
}

#[test]
fn drift_remediation_never_destroys_even_when_the_stack_allows_it() {
    let tags = ["allow-destroy"];
    check(
        &plans().delete,
        &run("drift", &tags),
        &[(
            "tidemark.remediation",
            Rule::Deny,
            "null_resource.b would be destroyed by drift remediation: remediation never destroys; fix this drift with a commit",
        )],
    );
    check(
        &plans().replace,
        &run("remediation", &tags),
        &[
            (
                "tidemark.remediation",
                Rule::Deny,
                "null_resource.a would be destroyed by drift remediation: remediation never destroys; fix this drift with a commit",
            ),
            (
                "tidemark.replace",
                Rule::Warn,
                "null_resource.a will be replaced (deleted, then created)",
            ),
        ],
    );
}

#[test]
fn more_deletions_than_the_configured_maximum_are_denied() {
    let message = "plan destroys 12 resources (12 deleted, 0 replaced), more than the 10 allowed in one plan (config max_deletions)";
    check(
        &plans().mass_delete,
        &run("plan", &["allow-destroy"]),
        &[("tidemark.max_deletions", Rule::Deny, message)],
    );
    let allowed = run("plan", &["allow-destroy"]).config("max_deletions", 12);
    assert!(check(&plans().mass_delete, &allowed, &[]).passed);
    let strict = run("plan", &["allow-destroy"]).config("max_deletions", 0);
    check(
        &plans().delete,
        &strict,
        &[(
            "tidemark.max_deletions",
            Rule::Deny,
            "plan destroys 1 resources (1 deleted, 0 replaced), more than the 0 allowed in one plan (config max_deletions)",
        )],
    );
}

#[test]
fn soft_mandatory_failures_are_overridable_and_advisory_ones_only_reported() {
    for (level, passed, blocking) in [
        (Level::Advisory, true, Blocking::None),
        (Level::SoftMandatory, false, Blocking::Soft),
    ] {
        let set = PolicySet::shipped(level).expect("shipped");
        let verdict = policy::evaluate(&[set], &plans().delete, &run("plan", &[]));
        assert_eq!((verdict.passed, verdict.blocking), (passed, blocking));
        assert_eq!(verdict.results.len(), 1);
        assert_eq!(verdict.results[0].level, level);
    }
}

#[test]
fn the_embedded_policies_are_the_policies_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let on_disk = PolicySet::load(&dir, Level::HardMandatory).expect("policies/ loads");
    let mut disk: Vec<(String, String)> = on_disk
        .files()
        .iter()
        .chain(on_disk.tests())
        .map(|f| (f.path.clone(), f.source.clone()))
        .collect();
    disk.sort();
    let mut embedded: Vec<(String, String)> = PolicySet::shipped_sources()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    embedded.sort();
    assert_eq!(
        embedded, disk,
        "add new policies/ files to SHIPPED in src/policy/set.rs"
    );
}

// ---- the CLI ----

pub(crate) fn tidemark(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .output()
        .expect("run tidemark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).expect("json")).expect("write");
    path
}

fn policies_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .display()
        .to_string()
}

#[test]
fn cli_policy_test_prints_exactly_passed_and_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replace = write_json(dir.path(), "replace.json", &plans().replace);
    let replace = replace.to_str().expect("utf-8");
    let policies = policies_dir();
    let (code, json, stderr) = tidemark(&[
        "policy",
        "test",
        "--plan",
        replace,
        "--policies",
        &policies,
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        json,
        json!({
            "passed": false,
            "results": [
                {
                    "policy": "tidemark.destroy",
                    "rule": "deny",
                    "level": "hard-mandatory",
                    "message": "null_resource.a would be replaced (deleted, then created): stack . does not allow destroying resources (tag it \"allow-destroy\" to allow)"
                },
                {
                    "policy": "tidemark.replace",
                    "rule": "warn",
                    "level": "hard-mandatory",
                    "message": "null_resource.a will be replaced (deleted, then created)"
                }
            ],
            "errors": []
        })
    );

    // The same plan with the run's facts from --tidemark, at soft-mandatory: only the warning.
    let facts = serde_json::to_value(run("plan", &["allow-destroy"])).expect("json");
    let facts = write_json(dir.path(), "tidemark.json", &facts);
    let (code, json, stderr) = tidemark(&[
        "policy",
        "test",
        "--plan",
        replace,
        "--tidemark",
        facts.to_str().expect("utf-8"),
        "--level",
        "soft-mandatory",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        json,
        json!({"passed": true, "results": [{
            "policy": "tidemark.replace", "rule": "warn", "level": "soft-mandatory",
            "message": "null_resource.a will be replaced (deleted, then created)"
        }], "errors": []})
    );

    // The same verdict for people: one line per message, then the outcome.
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "policy",
            "test",
            "--plan",
            replace,
            "--level",
            "soft-mandatory",
        ])
        .output()
        .expect("run tidemark");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "FAIL tidemark.destroy deny [soft-mandatory]: null_resource.a would be replaced (deleted, then created): stack . does not allow destroying resources (tag it \"allow-destroy\" to allow)\n\
         WARN tidemark.replace warn [soft-mandatory]: null_resource.a will be replaced (deleted, then created)\n\
         blocked (soft-mandatory: an override can let it through): 2 result(s)\n"
    );

    // Without --policies: the shipped (embedded) set.
    let create = write_json(dir.path(), "create.json", &plans().create);
    let (code, json, _) = tidemark(&[
        "policy",
        "test",
        "--plan",
        create.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(
        (code, json),
        (
            Some(0),
            json!({"passed": true, "results": [], "errors": []})
        )
    );
}

#[test]
fn cli_unit_runs_the_shipped_tests_and_fails_on_a_failing_test() {
    let (code, json, stderr) = tidemark(&[
        "policy",
        "test",
        "--policies",
        &policies_dir(),
        "--unit",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["passed"], true);
    let tests = json["tests"].as_array().expect("tests");
    assert!(tests.len() >= 20, "{json:#}");
    assert!(tests.iter().all(|t| t["passed"] == true), "{json:#}");
    for file in [
        "destroy_test.rego",
        "replace_test.rego",
        "max_deletions_test.rego",
        "remediation_test.rego",
    ] {
        assert!(
            tests.iter().any(|t| t["file"] == file),
            "no test ran from {file}"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\nimport rego.v1\ndeny contains \"no deletes\" if {\n  some c in input.resource_changes\n  c.change.actions == [\"delete\"]\n}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\nimport rego.v1\nimport data.p\n\
         test_delete_denied if {\n  p.deny == {\"no deletes\"} with input as {\"resource_changes\": [{\"change\": {\"actions\": [\"delete\"]}}]}\n}\n\
         test_create_denied_wrongly if {\n  p.deny == {\"no deletes\"} with input as {\"resource_changes\": [{\"change\": {\"actions\": [\"create\"]}}]}\n}\n",
    )
    .expect("write");
    let policies = dir.path().to_str().expect("utf-8");
    let (code, json, _) = tidemark(&[
        "policy",
        "test",
        "--policies",
        policies,
        "--unit",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        json,
        json!({"passed": false, "tests": [
            {"file": "p_test.rego", "package": "p_test", "name": "test_delete_denied", "passed": true, "failure": null},
            {"file": "p_test.rego", "package": "p_test", "name": "test_create_denied_wrongly", "passed": false, "failure": "undefined"}
        ]})
    );
}

#[test]
fn cli_a_broken_policy_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(
        policies.join("bad.rego"),
        "package bad\nimport rego.v1\n\ndeny if {\n  input.x\n}\n",
    )
    .expect("write");
    let plan = write_json(dir.path(), "plan.json", &plans().create);
    let (code, _, stderr) = tidemark(&[
        "policy",
        "test",
        "--plan",
        plan.to_str().expect("utf-8"),
        "--policies",
        policies.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1));
    let file = policies.join("bad.rego");
    assert!(
        stderr.contains(&format!(
            "{}:4: rule `deny` must be a set of messages",
            file.display()
        )),
        "{stderr}"
    );

    std::fs::write(
        policies.join("bad.rego"),
        "package bad\nimport rego.v1\ndeny contains msg if {\n  msg := \n}\n",
    )
    .expect("write");
    let (code, _, stderr) = tidemark(&[
        "policy",
        "test",
        "--plan",
        plan.to_str().expect("utf-8"),
        "--policies",
        policies.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1));
    // The assignment on line 4 has no value.
    assert!(
        stderr.contains(&format!("{}:4:7: syntax error:", file.display())),
        "{stderr}"
    );
}
