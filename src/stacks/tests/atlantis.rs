//! Stacks from an `atlantis.yaml` (issue 14, item 11): projects, names, workspaces,
//! `when_modified`, `autoplan.enabled`, `depends_on`, and the keys Tidemark does not use.

use super::*;

const ATLANTIS: &str = "version: 3
automerge: true
projects:
- name: network
  dir: infra/net
  workspace: prod
  terraform_version: v1.5.7
- name: app
  dir: infra/app
  depends_on: [network]
  autoplan:
    when_modified: [\"*.tf\", \"../../modules/**/*.tf\", \"../../shared/\"]
- dir: infra/manual
  autoplan:
    enabled: false
";

fn repo() -> Vec<(&'static str, &'static str)> {
    vec![
        ("atlantis.yaml", ATLANTIS),
        ("infra/net/main.tf", ""),
        ("infra/app/main.tf", ""),
        ("infra/app/config/app.json", "{}"),
        ("infra/manual/main.tf", ""),
        ("modules/db/main.tf", ""),
        ("other/main.tf", ""),
    ]
}

#[test]
fn atlantis_projects_are_the_stacks_and_depends_on_is_an_edge() {
    check(
        &repo(),
        &[Write("infra/net/main.tf", "# c\n")],
        "infra/net@prod: file infra/net/main.tf
         infra/app (indirect): dependency infra/net@prod
         ! . atlantis.yaml key automerge is not used by tidemark (ignored)",
    );
}

#[test]
fn atlantis_when_modified_is_relative_to_the_project_dir() {
    // `modules/db` is called by no stack: only the watch pattern picks it.
    check(
        &repo(),
        &[Write("modules/db/main.tf", "# c\n")],
        "infra/app: watch modules/db/main.tf
         ! . atlantis.yaml key automerge is not used by tidemark (ignored)",
    );
}

#[test]
fn atlantis_when_modified_naming_a_directory_matches_below_it() {
    check(
        &repo(),
        &[Write("shared/deep/x.yaml", "a: 1\n")],
        "infra/app: watch shared/deep/x.yaml
         ! . atlantis.yaml key automerge is not used by tidemark (ignored)",
    );
}

#[test]
fn atlantis_leaves_directories_that_are_no_project_out() {
    check(
        &repo(),
        &[Write("other/main.tf", "# c\n")],
        "! . atlantis.yaml key automerge is not used by tidemark (ignored)",
    );
}

#[test]
fn atlantis_problems_name_the_file_key_and_project() {
    // Two workspaces of one directory are two environments of its stack; a third project in
    // a workspace already taken is reported.
    let yaml = "version: 3\nprojects:\n- dir: a\n  depends_on: [nope]\n  colour: blue\n- dir: missing\n- dir: a\n  workspace: staging\n- dir: a\n  workspace: staging\n";
    check(
        &[("atlantis.yaml", yaml), ("a/main.tf", "")],
        &[Write("a/main.tf", "# c\n")],
        "a@default: file a/main.tf
         a@staging: file a/main.tf
         ! . atlantis.yaml:3 unknown key projects[0].colour (ignored)
         ! a atlantis.yaml:3 depends_on \"nope\": no such project
         ! a atlantis.yaml:9 project directory a is also an earlier project's in workspace \"staging\": ignored
         ! missing atlantis.yaml:6 project directory missing not found",
    );
}

#[test]
fn atlantis_yaml_is_not_read_next_to_stack_hcl() {
    check(
        &[
            ("atlantis.yaml", ATLANTIS),
            ("infra/net/main.tf", ""),
            ("infra/net/stack.hcl", STACK),
            ("infra/app/main.tf", ""),
        ],
        &[Write("infra/app/main.tf", "# c\n")],
        "",
    );
}

#[test]
fn atlantis_stack_settings_are_reported() {
    let mut t = TestRepo::new();
    for (path, content) in repo() {
        t.write(path, content);
    }
    t.write("infra/tg/terragrunt.hcl", "");
    t.write(
        "atlantis.yaml",
        &format!("{ATLANTIS}- dir: infra/tg\n  terraform_version: 1.6\n"),
    );
    let head = t.commit();
    let found = discover(&t.repo, head, None).expect("discover");
    let summary: Vec<String> = found
        .stacks
        .iter()
        .map(|s| {
            format!(
                "{} {} {:?} {} {:?} {:?} {:?} {:?}",
                s.path,
                s.name,
                s.kind,
                s.source.as_str(),
                s.workspace,
                s.autoplan,
                s.terraform_version,
                s.watch
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "infra/app app Terraform atlantis.yaml None true None [\"*.tf\", \"../../modules/**/*.tf\", \"../../shared/\"]",
            "infra/manual infra/manual Terraform atlantis.yaml None false None [\"**/*.tf*\"]",
            "infra/net@prod network@prod Terraform atlantis.yaml Some(\"prod\") true Some(\"v1.5.7\") [\"**/*.tf*\"]",
            "infra/tg infra/tg Terragrunt atlantis.yaml None true Some(\"1.6\") [\"**/*.tf*\"]",
        ]
    );
    // A project in workspace `prod` is the instance `infra/net@prod`, which selects that
    // workspace when the stack keeps its own backend.
    assert_eq!(found.upstreams("infra/app"), ["infra/net@prod"]);
    assert_eq!(found.stacks[2].environment.as_deref(), Some("prod"));
    let json = serde_json::to_value(&found).expect("json");
    assert_eq!(json["stacks"][0]["source"], "atlantis.yaml");
    assert_eq!(json["stacks"][1]["autoplan"], false);
    assert_eq!(json["stacks"][2]["workspace"], "prod");
    assert!(json["stacks"][0].get("autoplan").is_none());
}
