//! Stack instances: a stack with `environment` blocks is one instance per environment
//! (`stacks/app@prod`), each with its own settings, variable files, state, runs and edges; a
//! stack without them is one instance, its directory. Pure: derived from the snapshot's
//! stacks and edges.
//!
//! Edges hold per environment: an instance in environment `e` depends on the upstream stack's
//! instance in `e` when it has one, on its only instance when it has no environments, and on
//! every instance otherwise. A `depends_on` that names an instance (`../network@prod`) pins
//! the edge to it.

use super::environment::{EnvironmentConfig, instance_path};
use super::hash::Map;
use super::{EdgeKind, Stack, StackError, paths};

/// The instance graph of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct Instances {
    /// Sorted by path.
    pub stacks: Vec<Stack>,
    /// Per instance, its stack (an index into the snapshot's stacks).
    pub stack_of: Vec<usize>,
    /// Per stack, its instances.
    pub of_stack: Vec<Vec<usize>>,
    pub by_path: Map<String, usize>,
    pub upstreams: Vec<Vec<(usize, EdgeKind)>>,
    pub downstreams: Vec<Vec<usize>>,
    /// A variable file (from the repository root) -> the instances that read it.
    pub var_files: Map<String, Vec<usize>>,
}

/// What the snapshot knows of one stack, for expanding it.
pub(crate) struct StackPart<'a> {
    pub stack: &'a Stack,
    pub environments: &'a [EnvironmentConfig],
    /// The `stack.hcl` the environments are written in.
    pub file: String,
    pub upstreams: &'a [(usize, EdgeKind)],
    /// Upstream stack -> the environment a `depends_on` pinned the edge to, with its line.
    pub pins: &'a [(usize, String, u32)],
}

/// Expands stacks into instances; problems (a var file outside the repository, a pinned
/// environment the upstream does not have) are pushed to `errors`.
pub(crate) fn expand(parts: &[StackPart<'_>], errors: &mut Vec<StackError>) -> Instances {
    let mut stacks: Vec<(Stack, usize)> = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.environments.is_empty() {
            stacks.push((part.stack.clone(), i));
            continue;
        }
        for env in part.environments {
            stacks.push((instance(part, env, errors), i));
        }
    }
    stacks.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    let mut out = Instances {
        of_stack: vec![Vec::new(); parts.len()],
        ..Instances::default()
    };
    for (n, (stack, i)) in stacks.into_iter().enumerate() {
        out.by_path.insert(stack.path.clone(), n);
        out.of_stack[i].push(n);
        for file in &stack.var_files {
            out.var_files.entry(file.clone()).or_default().push(n);
        }
        out.stack_of.push(i);
        out.stacks.push(stack);
    }
    for n in 0..out.stacks.len() {
        let part = &parts[out.stack_of[n]];
        let env = out.stacks[n].environment.clone();
        let mut ups: Vec<(usize, EdgeKind)> = Vec::new();
        for &(up, kind) in part.upstreams {
            let pinned = part.pins.iter().find(|(u, ..)| *u == up);
            let candidates = &out.of_stack[up];
            let chosen: Vec<usize> = match pinned {
                Some((_, want, line)) => {
                    let found = candidates
                        .iter()
                        .copied()
                        .find(|&c| out.stacks[c].environment.as_deref() == Some(want.as_str()));
                    // Reported once per stack, at its first instance.
                    let first = out.of_stack[out.stack_of[n]].first() == Some(&n);
                    if found.is_none() && first {
                        let message = format!(
                            "depends_on names {}@{want}, but {} has no environment {want:?}",
                            parts[up].stack.path, parts[up].stack.path
                        );
                        errors.push(StackError::at(
                            &out.stacks[n].path,
                            &part.file,
                            Some(*line),
                            &message,
                        ));
                    }
                    found.map_or_else(|| candidates.clone(), |c| vec![c])
                }
                None => {
                    let same = candidates
                        .iter()
                        .copied()
                        .find(|&c| env.is_some() && out.stacks[c].environment == env);
                    same.map_or_else(|| candidates.clone(), |c| vec![c])
                }
            };
            ups.extend(chosen.into_iter().map(|c| (c, kind)));
        }
        ups.sort_by_key(|(up, kind)| (*up, *kind as u8));
        ups.dedup_by_key(|(up, _)| *up);
        out.stacks[n].depends_on = ups
            .iter()
            .map(|(up, _)| out.stacks[*up].path.clone())
            .collect();
        out.upstreams.push(ups);
    }
    out.downstreams = vec![Vec::new(); out.stacks.len()];
    for (n, ups) in out.upstreams.iter().enumerate() {
        for (up, _) in ups {
            out.downstreams[*up].push(n);
        }
    }
    out
}

/// The instance of `part`'s stack in `env`: the stack's settings, overridden by the
/// environment's.
fn instance(part: &StackPart<'_>, env: &EnvironmentConfig, errors: &mut Vec<StackError>) -> Stack {
    let base = part.stack;
    let path = instance_path(&base.path, Some(&env.name));
    let mut var_files = Vec::new();
    for file in &env.var_files {
        match paths::join(&base.path, file) {
            Ok(resolved) => var_files.push(resolved),
            Err(_) => errors.push(StackError::at(
                &path,
                &part.file,
                Some(env.line),
                &format!("var file {file:?} is outside the repository"),
            )),
        }
    }
    let mut tags = base.tags.clone();
    for tag in &env.tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    Stack {
        name: format!("{}@{}", base.name, env.name),
        runner: env.runner.clone().or_else(|| base.runner.clone()),
        drift_schedule: env
            .drift_schedule
            .clone()
            .or_else(|| base.drift_schedule.clone()),
        auto_apply: env.auto_apply.unwrap_or(base.auto_apply),
        drift_remediation: env.drift_remediation.unwrap_or(base.drift_remediation),
        workspace: env.workspace.clone(),
        environment: Some(env.name.clone()),
        backend_config: env.backend_config.clone(),
        tags,
        var_files,
        path,
        ..base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TestRepo;
    use super::super::{Reason, ReasonKind, affected, discover, run_inputs};
    use crate::repo::Export;

    const APP: &str = "stack {\n  name = \"app\"\n  tags = [\"team-a\"]\n}\n\
        environment \"staging\" {\n  var_files  = [\"env/staging.tfvars\"]\n  auto_apply = true\n}\n\
        environment \"prod\" {\n  var_files = [\"env/prod.tfvars\", \"../../shared/prod.tfvars\"]\n  tags = [\"prod\"]\n  drift_schedule = \"0 3 * * *\"\n}\n";
    const NET: &str = "environment \"staging\" {}\nenvironment \"prod\" {}\n";

    fn repo() -> TestRepo {
        let mut t = TestRepo::new();
        t.write("stacks/app/stack.hcl", APP);
        t.write("stacks/app/main.tf", "variable \"size\" {}\n");
        t.write("stacks/app/env/staging.tfvars", "size = 1\n");
        t.write("stacks/app/env/prod.tfvars", "size = 3\n");
        t.write("shared/prod.tfvars", "x = 1\n");
        t.write("stacks/net/stack.hcl", NET);
        t.write("stacks/net/main.tf", "");
        t.write(
            "stacks/dns/stack.hcl",
            "stack {\n  depends_on = [\"../net@prod\"]\n}\n",
        );
        t.write("stacks/dns/main.tf", "");
        t.write("stacks/plain/stack.hcl", "");
        t.write("stacks/plain/main.tf", "");
        t
    }

    fn paths(found: &super::super::Affected) -> Vec<&str> {
        found.stacks.iter().map(|s| s.path.as_str()).collect()
    }

    #[test]
    fn environments_are_instances_with_their_own_settings() {
        let mut t = repo();
        t.write(
            "stacks/app/stack.hcl",
            &format!("{APP}stack {{\n  depends_on = [\"../net\"]\n}}\n"),
        );
        let head = t.commit();
        let found = discover(&t.repo, head, None).expect("discover");
        let paths: Vec<&str> = found.stacks.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stacks/app@prod",
                "stacks/app@staging",
                "stacks/dns",
                "stacks/net@prod",
                "stacks/net@staging",
                "stacks/plain"
            ]
        );
        assert!(found.errors.is_empty(), "{:?}", found.errors);
        let prod = &found.stacks[0];
        assert_eq!(prod.dir(), "stacks/app");
        assert_eq!(prod.environment.as_deref(), Some("prod"));
        assert_eq!(prod.name, "app@prod");
        assert_eq!(prod.tags, ["team-a", "prod"]);
        assert!(!prod.auto_apply);
        assert_eq!(prod.drift_schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(
            prod.var_files,
            ["stacks/app/env/prod.tfvars", "shared/prod.tfvars"]
        );
        let staging = &found.stacks[1];
        assert!(staging.auto_apply);
        assert_eq!(staging.tags, ["team-a"]);
        // Edges hold per environment; a pinned depends_on reaches one instance.
        assert_eq!(found.upstreams("stacks/app@prod"), ["stacks/net@prod"]);
        assert_eq!(
            found.upstreams("stacks/app@staging"),
            ["stacks/net@staging"]
        );
        assert_eq!(found.upstreams("stacks/dns"), ["stacks/net@prod"]);
        assert_eq!(found.stacks[5].environment, None);
        assert_eq!(found.stacks[5].dir(), "stacks/plain");
    }

    #[test]
    fn a_var_file_affects_its_instance_only_and_stack_files_affect_all() {
        let mut t = repo();
        let base = t.commit();
        t.write("stacks/app/env/prod.tfvars", "size = 5\n");
        let head = t.commit();
        let found = affected(&t.repo, Some(base), head, None).expect("affected");
        assert_eq!(paths(&found), ["stacks/app@prod"]);
        assert_eq!(
            found.stacks[0].reasons,
            [Reason {
                kind: ReasonKind::File,
                file: Some("stacks/app/env/prod.tfvars".into()),
                module: None,
                stack: None,
                read_by: None,
            }]
        );

        // A var file outside the stack directory is an input of its instance too.
        t.write("shared/prod.tfvars", "x = 2\n");
        let next = t.commit();
        let found = affected(&t.repo, Some(head), next, None).expect("affected");
        assert_eq!(paths(&found), ["stacks/app@prod"]);

        t.write(
            "stacks/app/main.tf",
            "variable \"size\" {\n  default = 1\n}\n",
        );
        let last = t.commit();
        let found = affected(&t.repo, Some(next), last, None).expect("affected");
        assert_eq!(paths(&found), ["stacks/app@prod", "stacks/app@staging"]);

        // Downstream per environment: net@prod reaches dns (pinned), net@staging does not.
        t.write("stacks/net/main.tf", "# changed\n");
        let net = t.commit();
        let found = affected(&t.repo, Some(last), net, None).expect("affected");
        let order = paths(&found);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["stacks/dns", "stacks/net@prod", "stacks/net@staging"]
        );
        let at = |p: &str| order.iter().position(|x| *x == p);
        assert!(at("stacks/net@prod") < at("stacks/dns"), "{order:?}");
    }

    #[test]
    fn adding_and_removing_an_environment_adds_and_removes_its_instance() {
        let mut t = repo();
        let base = t.commit();
        t.write(
            "stacks/net/stack.hcl",
            "environment \"prod\" {}\nenvironment \"dev\" {}\n",
        );
        let head = t.commit();
        let found = affected(&t.repo, Some(base), head, None).expect("affected");
        let kinds: Vec<(&str, ReasonKind)> = found
            .stacks
            .iter()
            .map(|s| (s.path.as_str(), s.reasons[0].kind))
            .collect();
        // The stack.hcl changed: every remaining instance is re-planned; dev is new and
        // staging is gone.
        assert!(
            kinds.contains(&("stacks/net@dev", ReasonKind::Added)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("stacks/net@staging", ReasonKind::Removed)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("stacks/net@prod", ReasonKind::File)),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_run_of_an_instance_exports_its_var_files_and_knows_its_directory() {
        let mut t = repo();
        let head = t.commit();
        let inputs = run_inputs(&t.repo, head, "stacks/app@prod", None)
            .expect("inputs")
            .expect("an instance");
        assert_eq!(inputs.stack.dir(), "stacks/app");
        match inputs.export {
            Export::Only(selection) => {
                assert!(selection.dirs.contains(&"stacks/app".to_string()));
                assert!(selection.files.contains(&"shared/prod.tfvars".to_string()));
            }
            other => panic!("expected a selection, got {other:?}"),
        }
        assert!(
            run_inputs(&t.repo, head, "stacks/app", None)
                .expect("inputs")
                .is_none(),
            "a stack with environments has no default instance"
        );
    }

    #[test]
    fn bad_environments_are_errors_naming_the_file_and_line() {
        let mut t = repo();
        t.write(
            "stacks/bad/stack.hcl",
            "environment \"prod\" {}\nenvironment \"prod\" {}\nenvironment \"a b\" {}\n\
             environment \"x\" {\n  var_files = [\"../../../up.tfvars\"]\n  colour = \"red\"\n}\n",
        );
        t.write("stacks/bad/main.tf", "");
        t.write(
            "stacks/dns/stack.hcl",
            "stack {\n  depends_on = [\"../net@qa\"]\n}\n",
        );
        let head = t.commit();
        let found = discover(&t.repo, head, None).expect("discover");
        let messages: Vec<String> = found
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.file, e.line.unwrap_or(0), e.message))
            .collect();
        let has = |text: &str| messages.iter().any(|m| m.contains(text));
        assert!(
            has("stacks/bad/stack.hcl:2: environment \"prod\" is defined twice"),
            "{messages:?}"
        );
        assert!(
            has("stacks/bad/stack.hcl:3: environment name \"a b\""),
            "{messages:?}"
        );
        assert!(
            has("stacks/bad/stack.hcl:6: unknown attribute \"colour\""),
            "{messages:?}"
        );
        assert!(
            has("var file \"../../../up.tfvars\" is outside the repository"),
            "{messages:?}"
        );
        assert!(
            has("stacks/dns/stack.hcl:2: depends_on names stacks/net@qa"),
            "{messages:?}"
        );
        // The good instances are still there.
        assert!(found.stacks.iter().any(|s| s.path == "stacks/bad@prod"));
        assert!(found.stacks.iter().any(|s| s.path == "stacks/bad@x"));
    }
}
