//! Detection rules, one test each, through one `check(files, change, expected)` helper: build a
//! git repository in a temp dir with `files`, commit `change` on top, and compare the affected
//! set (rendered one stack per line, errors after) with `expected`.

use std::collections::BTreeMap;

use git2::{Oid, Repository, Signature};

use super::*;

/// A change to apply on top of the base files: write a file, or remove a path (and everything
/// under it).
enum Edit<'a> {
    Write(&'a str, &'a str),
    Remove(&'a str),
}
use Edit::{Remove, Write};

pub(super) struct TestRepo {
    _dir: tempfile::TempDir,
    pub repo: Repository,
    files: BTreeMap<String, String>,
    /// Paths among `files` written as symbolic links (their content is the target).
    links: std::collections::BTreeSet<String>,
    head: Option<Oid>,
}

impl TestRepo {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        TestRepo {
            _dir: dir,
            repo,
            files: BTreeMap::new(),
            links: Default::default(),
            head: None,
        }
    }

    pub(super) fn write(&mut self, path: &str, content: &str) {
        self.files.insert(path.to_string(), content.to_string());
    }

    pub(super) fn link(&mut self, path: &str, target: &str) {
        self.write(path, target);
        self.links.insert(path.to_string());
    }

    pub(super) fn remove(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.files
            .retain(|p, _| p != path && !p.starts_with(&prefix));
    }

    pub(super) fn commit(&mut self) -> Oid {
        let tree = self.tree("");
        let tree = self.repo.find_tree(tree).expect("tree");
        let sig = Signature::now("t", "t@example.test").expect("sig");
        let parents: Vec<git2::Commit<'_>> = self
            .head
            .map(|h| self.repo.find_commit(h).expect("parent"))
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let id = self
            .repo
            .commit(None, &sig, &sig, "c", &tree, &parents)
            .expect("commit");
        self.head = Some(id);
        id
    }

    fn tree(&self, prefix: &str) -> Oid {
        let mut builder = self.repo.treebuilder(None).expect("treebuilder");
        let mut subdirs = std::collections::BTreeSet::new();
        for (path, content) in self.files.range(prefix.to_string()..) {
            let Some(rest) = path.strip_prefix(prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    subdirs.insert(dir.to_string());
                }
                None => {
                    let blob = self.repo.blob(content.as_bytes()).expect("blob");
                    let mode = if self.links.contains(path) {
                        0o120000
                    } else {
                        0o100644
                    };
                    builder.insert(rest, blob, mode).expect("insert");
                }
            }
        }
        for dir in subdirs {
            let sub = self.tree(&format!("{prefix}{dir}/"));
            builder.insert(&dir, sub, 0o040000).expect("insert");
        }
        builder.write().expect("write tree")
    }
}

fn render(affected: &Affected) -> String {
    let mut out = String::new();
    for s in &affected.stacks {
        let reasons: Vec<String> = s
            .reasons
            .iter()
            .map(|r| {
                let kind = format!("{:?}", r.kind).to_lowercase();
                let mut text = kind;
                for part in [&r.file, &r.stack].into_iter().flatten() {
                    text.push(' ');
                    text.push_str(part);
                }
                if let Some(module) = &r.module {
                    text.push_str(" via ");
                    text.push_str(module);
                }
                if let Some(at) = &r.read_by {
                    text.push_str(&format!(" read by {}:{}", at.file, at.line));
                }
                text
            })
            .collect();
        let indirect = if s.direct { "" } else { " (indirect)" };
        out.push_str(&format!("{}{indirect}: {}\n", s.path, reasons.join(", ")));
    }
    for e in &affected.errors {
        let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
        out.push_str(&format!("! {} {}{line} {}\n", e.stack, e.file, e.message));
    }
    out
}

/// Commits `files`, then `change`, and compares the affected set between the two commits.
fn check(files: &[(&str, &str)], change: &[Edit<'_>], expected: &str) {
    check_linked(files, &[], change, expected);
}

/// [`check`] with symbolic links (path, target) among the base files.
fn check_linked(
    files: &[(&str, &str)],
    links: &[(&str, &str)],
    change: &[Edit<'_>],
    expected: &str,
) {
    let mut t = TestRepo::new();
    for (path, content) in files {
        t.write(path, content);
    }
    for (path, target) in links {
        t.link(path, target);
    }
    let base = t.commit();
    for edit in change {
        match edit {
            Write(path, content) => t.write(path, content),
            Remove(path) => t.remove(path),
        }
    }
    let head = t.commit();
    let actual = match affected(&t.repo, Some(base), head, None) {
        Ok(result) => render(&result),
        Err(AffectedError::Cycle { stacks, rest }) => {
            format!("cycle: {}\n{}", stacks.join(", "), render(&rest))
        }
        Err(e) => panic!("affected failed: {e:#}"),
    };
    let expected: String = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        actual, expected,
        "\nactual:\n{actual}\nexpected:\n{expected}"
    );
}

const STACK: &str = "stack {}\n";

#[test]
fn own_file_change_affects_only_that_stack() {
    check(
        &[
            ("a/stack.hcl", STACK),
            ("a/main.tf", ""),
            ("b/stack.hcl", STACK),
        ],
        &[Write("a/main.tf", "# changed\n")],
        "a: file a/main.tf",
    );
}

#[test]
fn markdown_is_ignored() {
    check(
        &[
            ("a/stack.hcl", STACK),
            ("a/README.md", "x"),
            ("modules/m/NOTES.md", "x"),
        ],
        &[Write("a/README.md", "y"), Write("modules/m/NOTES.md", "y")],
        "",
    );
}

#[test]
fn nested_stack_owns_its_files_alone() {
    // `a/x` holds Terraform files `a` does not call: a module of its own, not `a`'s files
    // (issue 14, item 6); `a/files` is a plain directory of `a`.
    check(
        &[
            ("a/stack.hcl", STACK),
            ("a/b/stack.hcl", STACK),
            ("a/b/main.tf", ""),
            ("a/x/y.tf", ""),
            ("a/files/y.json", ""),
        ],
        &[
            Write("a/b/main.tf", "# c\n"),
            Write("a/x/y.tf", "# c\n"),
            Write("a/files/y.json", "{}"),
        ],
        "a: file a/files/y.json
         a/b: file a/b/main.tf",
    );
}

#[test]
fn nested_local_modules_are_traced() {
    check(
        &[
            ("app/stack.hcl", STACK),
            (
                "app/main.tf",
                "module \"net\" {\n  source = \"../modules/net\"\n}\n",
            ),
            ("other/stack.hcl", STACK),
            (
                "other/main.tf",
                "module \"r\" {\n  source = \"terraform-aws-modules/vpc/aws\"\n}\n",
            ),
            (
                "modules/net/main.tf",
                "module \"sub\" {\n  source = \"./sub\"\n}\n",
            ),
            ("modules/net/sub/main.tf", ""),
            ("modules/net/sub/files/policy.json", "{}"),
            ("modules/unused/main.tf", ""),
        ],
        // A module is its Terraform files (issue 14, item 6): a file below it that no
        // expression reads is not an input of the stacks using it.
        &[
            Write("modules/net/sub/main.tf", "# c\n"),
            Write("modules/net/sub/files/policy.json", "{\"a\": 1}"),
            Write("modules/unused/main.tf", "# c\n"),
        ],
        "app: module modules/net/sub/main.tf via modules/net/sub",
    );
}

#[test]
fn missing_module_directory_is_an_error_and_tofu_files_count() {
    check(
        &[
            ("a/stack.hcl", STACK),
            (
                "a/main.tofu",
                "module \"m\" {\n  source = \"../modules/m\"\n}\n",
            ),
            ("modules/m/main.tf", ""),
        ],
        &[
            Write("modules/m/main.tf", "# c\n"),
            Write(
                "a/extra.tf",
                "\nmodule \"gone\" {\n  source = \"./nowhere\"\n}\n",
            ),
        ],
        "a: file a/extra.tf, module modules/m/main.tf via modules/m
         ! a a/extra.tf:3 module source a/nowhere: no such directory",
    );
}

#[test]
fn stacks_added_and_removed() {
    check(
        &[
            ("a/stack.hcl", STACK),
            ("b/stack.hcl", STACK),
            ("b/main.tf", ""),
        ],
        &[
            Write("c/stack.hcl", STACK),
            Write("c/main.tf", ""),
            Remove("b"),
        ],
        "c: added
         b: removed",
    );
}

#[test]
fn downstream_of_a_removed_stack_is_planned_again() {
    check(
        &[
            ("up/stack.hcl", STACK),
            ("down/stack.hcl", STACK),
            (
                "down/main.tf",
                "data \"terraform_remote_state\" \"up\" {\n  backend = \"local\"\n  config = { path = \"../up/terraform.tfstate\" }\n}\n",
            ),
            (
                "after/stack.hcl",
                "stack {\n  depends_on = [\"../down\"]\n}\n",
            ),
        ],
        &[Remove("up")],
        "down (indirect): dependency up
         after (indirect): dependency down
         up: removed",
    );
}

#[test]
fn first_commit_marks_every_stack_added() {
    let mut t = TestRepo::new();
    t.write("a/stack.hcl", STACK);
    t.write("b/stack.hcl", "stack {\n  depends_on = [\"../a\"]\n}\n");
    let head = t.commit();
    let result = affected(&t.repo, None, head, None).expect("affected");
    assert_eq!(render(&result), "a: added\nb: added, dependency a\n");
    assert_eq!(result.base, None);
    assert_eq!(result.stacks[1].depends_on, ["a"]);
}

#[test]
fn depends_on_by_relative_path_rooted_path_and_name() {
    check(
        &[
            ("net/stack.hcl", "stack {\n  name = \"network\"\n}\n"),
            ("db/stack.hcl", "stack {\n  depends_on = [\"network\"]\n}\n"),
            ("app/stack.hcl", "stack {\n  depends_on = [\"/db\"]\n}\n"),
            (
                "app/web/stack.hcl",
                "stack {\n  depends_on = [\"..\", \"../../net\"]\n}\n",
            ),
            ("lone/stack.hcl", STACK),
        ],
        &[Write("net/main.tf", "")],
        "net: file net/main.tf
         db (indirect): dependency net
         app (indirect): dependency db
         app/web (indirect): dependency app, dependency net",
    );
}

#[test]
fn missing_depends_on_target_names_both() {
    check(
        &[("a/stack.hcl", STACK)],
        &[Write(
            "a/stack.hcl",
            "stack {\n  depends_on = [\"ghost\"]\n}\n",
        )],
        "a: file a/stack.hcl
         ! a a/stack.hcl:2 depends_on \"ghost\": no such stack",
    );
}

#[test]
fn unknown_attribute_in_stack_hcl_names_file_and_line() {
    check(
        &[("a/stack.hcl", STACK)],
        &[Write(
            "a/stack.hcl",
            "stack {\n  name = \"a\"\n  auto_aply = true\n  tags = [\"x\"]\n}\n",
        )],
        "a: file a/stack.hcl
         ! a a/stack.hcl:3 unknown attribute \"auto_aply\" in stack block",
    );
}

#[test]
fn bad_drift_settings_in_stack_hcl_name_file_and_line() {
    check(
        &[("a/stack.hcl", STACK)],
        &[Write(
            "a/stack.hcl",
            "stack {\n  drift_schedule = \"0 */6 * *\"\n  drift_remediation = \"fix\"\n}\n",
        )],
        "a: file a/stack.hcl
         ! a a/stack.hcl:2 drift_schedule \"0 */6 * *\" has 4 fields: expected 5 (minute hour day month weekday), 6 (with seconds) or 7 (with year)
         ! a a/stack.hcl:3 drift_remediation: \"fix\" is not one of \"none\", \"plan\", \"apply\"",
    );
}

#[test]
fn cycle_names_every_stack_on_it() {
    check(
        &[
            ("a/stack.hcl", "stack {\n  depends_on = [\"../c\"]\n}\n"),
            ("b/stack.hcl", "stack {\n  depends_on = [\"../a\"]\n}\n"),
            ("c/stack.hcl", STACK),
            ("d/stack.hcl", "stack {\n  depends_on = [\"../c\"]\n}\n"),
        ],
        &[Write(
            "c/stack.hcl",
            "stack {\n  depends_on = [\"../b\"]\n}\n",
        )],
        "cycle: a, b, c
         d (indirect): dependency c",
    );
}

#[test]
fn escaping_paths_are_errors_for_that_stack() {
    check(
        &[("a/stack.hcl", STACK), ("b/stack.hcl", STACK)],
        &[
            Write(
                "a/stack.hcl",
                "stack {\n  depends_on = [\"../../x\"]\n  watch = [\"../../../etc/*\"]\n}\n",
            ),
            Write(
                "a/main.tf",
                "module \"m\" {\n  source = \"../../outside\"\n}\n",
            ),
            Write("b/main.tf", ""),
        ],
        "a: file a/main.tf, file a/stack.hcl
         b: file b/main.tf
         ! a a/main.tf:2 module source \"../../outside\" escapes the repository
         ! a a/stack.hcl:2 depends_on \"../../x\" escapes the repository
         ! a a/stack.hcl:3 watch \"../../../etc/*\" escapes the repository",
    );
}

#[test]
fn watch_globs_relative_and_rooted() {
    check(
        &[
            (
                "a/stack.hcl",
                "stack {\n  watch = [\"files/*.json\", \"/config/**/*.yaml\"]\n}\n",
            ),
            ("b/stack.hcl", STACK),
        ],
        &[
            Write("a/files/x.json", "{}"),
            Write("config/prod/app.yaml", "x: 1"),
            Write("config/app.txt", "no"),
            Write("b/files/x.json", "{}"),
        ],
        "a: file a/files/x.json, watch config/prod/app.yaml
         b: file b/files/x.json",
    );
}

#[test]
fn malformed_file_is_an_error_entry_and_others_still_computed() {
    check(
        &[("a/stack.hcl", STACK), ("b/stack.hcl", STACK)],
        &[Write("a/main.tf", "resource \"x\" \"y\" {\n  a = \n"), Write("b/main.tf", "")],
        "a: file a/main.tf
         b: file b/main.tf
         ! a a/main.tf:2 HCL parse error: invalid expression; expected `\"`, `[`, `{`, `-`, `!`, `(`, `_`, `<`, letter or digit",
    );
}

#[test]
fn autodiscovery_excludes_directories_used_as_modules() {
    let mut t = TestRepo::new();
    t.write(
        "envs/prod/main.tf",
        "module \"app\" {\n  source = \"../../modules/app\"\n}\n",
    );
    t.write(
        "envs/dev/main.tf",
        "module \"app\" {\n  source = \"../../modules/app\"\n}\n",
    );
    t.write(
        "modules/app/main.tf",
        "module \"db\" {\n  source = \"../db\"\n}\n",
    );
    t.write("modules/db/main.tf", "");
    t.write("docs/README.md", "");
    let head = t.commit();
    let found = discover(&t.repo, head, None).expect("discover");
    let paths: Vec<&str> = found.stacks.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["envs/dev", "envs/prod"]);
    check(
        &[
            (
                "envs/prod/main.tf",
                "module \"app\" {\n  source = \"../../modules/app\"\n}\n",
            ),
            ("envs/dev/main.tf", ""),
            (
                "modules/app/main.tf",
                "module \"db\" {\n  source = \"../db\"\n}\n",
            ),
            ("modules/db/main.tf", ""),
        ],
        &[Write("modules/db/main.tf", "# c\n")],
        "envs/prod: module modules/db/main.tf via modules/db",
    );
}

#[test]
fn removed_file_still_affects_its_stack() {
    check(
        &[
            ("a/stack.hcl", STACK),
            ("a/old.tf", ""),
            ("m/x.tf", ""),
            ("b/stack.hcl", STACK),
        ],
        &[Remove("a/old.tf")],
        "a: file a/old.tf",
    );
}

#[test]
fn discovery_reports_stack_settings_and_edges() {
    let mut t = TestRepo::new();
    t.write(
        "app/stack.hcl",
        "stack {\n  name = \"app\"\n  depends_on = [\"../net\"]\n  watch = [\"*.json\"]\n  drift_schedule = \"0 * * * *\"\n  drift_remediation = \"plan\"\n  auto_apply = true\n  runner = \"tofu\"\n  tags = [\"prod\"]\n}\n",
    );
    t.write("net/stack.hcl", STACK);
    t.write("live/terragrunt.hcl", "");
    let head = t.commit();
    let mut index = Index::new();
    let found = discover(&t.repo, head, Some(&mut index)).expect("discover");
    assert_eq!(
        found.stacks[0],
        Stack {
            path: "app".into(),
            name: "app".into(),
            kind: StackKind::Terraform,
            runner: Some("tofu".into()),
            depends_on: vec!["net".into()],
            watch: vec!["*.json".into()],
            drift_schedule: Some("0 * * * *".into()),
            auto_apply: true,
            tags: vec!["prod".into()],
            drift_remediation: DriftRemediation::Plan,
            unresolved_inputs: vec![],
            source: StackSource::StackHcl,
            workspace: None,
            autoplan: true,
            terraform_version: None,
            environment: None,
            var_files: vec![],
            backend_config: Default::default(),
        }
    );
    assert_eq!(found.stacks[1].kind, StackKind::Terragrunt);
    assert_eq!(
        found.order(),
        Ok(vec!["live".into(), "net".into(), "app".into()])
    );
    assert_eq!(found.upstreams("app"), ["net"]);
    assert_eq!(
        found.edges,
        [Edge {
            from: "net".into(),
            to: "app".into(),
            kind: EdgeKind::DependsOn
        }]
    );
    // The warm path answers from the index, identically.
    assert_eq!(
        discover(&t.repo, head, Some(&mut index)).expect("warm"),
        found
    );
}

#[test]
fn index_is_send() {
    fn send<T: Send>() {}
    send::<Index>();
}

#[test]
fn root_stack_is_dot() {
    check(
        &[
            ("stack.hcl", STACK),
            ("main.tf", ""),
            ("sub/stack.hcl", STACK),
        ],
        &[Write("main.tf", "# c\n"), Write("other/x.txt", "x")],
        ".: file main.tf, file other/x.txt",
    );
}

mod atlantis;
mod fidelity;
mod json;
mod modules;
mod persistent;
mod reads;
mod remote_state;
mod terragrunt;
