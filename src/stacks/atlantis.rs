//! `atlantis.yaml` (version 3) read as stack configuration, for repositories migrating from
//! Atlantis: each project is a stack (its `dir`), with its name, workspace, `when_modified`
//! watch patterns, `autoplan.enabled`, `depends_on` and `terraform_version`. Keys Tidemark does
//! not use are reported as problems (warnings), never fatal. Pure: bytes in, data out.

use serde_yaml_ng::{Mapping, Value};

use super::hcl::FileError;
use super::paths;

/// The file names Atlantis reads at the repository root.
pub(crate) const FILE_NAMES: [&str; 2] = ["atlantis.yaml", "atlantis.yml"];

/// Atlantis's default `autoplan.when_modified`.
const DEFAULT_WHEN_MODIFIED: &str = "**/*.tf*";

/// Top-level keys of Atlantis's repo config that Tidemark reads (`version`, `projects`) or knows
/// and ignores (reported as not used).
const TOP_USED: [&str; 2] = ["version", "projects"];
const TOP_KNOWN: [&str; 8] = [
    "automerge",
    "autodiscover",
    "delete_source_branch_on_merge",
    "parallel_plan",
    "parallel_apply",
    "abort_on_execution_order_fail",
    "workflows",
    "allowed_regexp_prefixes",
];
const PROJECT_USED: [&str; 6] = [
    "dir",
    "name",
    "workspace",
    "autoplan",
    "depends_on",
    "terraform_version",
];
const PROJECT_KNOWN: [&str; 14] = [
    "branch",
    "execution_order_group",
    "delete_source_branch_on_merge",
    "repo_locking",
    "repo_locks",
    "custom_policy_check",
    "plan_requirements",
    "apply_requirements",
    "import_requirements",
    "silence_pr_comments",
    "terraform_distribution",
    "workflow",
    "policy_check",
    "autodiscover",
];

/// One `projects[]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Project {
    /// Normalised repository path of `dir`.
    pub dir: String,
    pub name: Option<String>,
    pub workspace: Option<String>,
    /// `autoplan.when_modified`, relative to `dir` (Atlantis's default when absent).
    pub when_modified: Vec<String>,
    /// `autoplan.enabled` (default true).
    pub autoplan: bool,
    /// Project names.
    pub depends_on: Vec<String>,
    pub terraform_version: Option<String>,
    /// The line of the project's `dir:` key (1-based), for problems about the project.
    pub line: u32,
}

/// A checked `atlantis.yaml`: the projects that could be read and every problem found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AtlantisConfig {
    pub projects: Vec<Project>,
    pub problems: Vec<FileError>,
}

/// Reads an `atlantis.yaml`. A file that is not YAML, or not version 3, gives no projects and
/// one problem.
pub(crate) fn parse(bytes: &[u8]) -> AtlantisConfig {
    let mut out = AtlantisConfig::default();
    let text = String::from_utf8_lossy(bytes);
    let root: Value = match serde_yaml_ng::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            out.problem(e.location().map(|l| l.line() as u32), format!("yaml: {e}"));
            return out;
        }
    };
    let Some(root) = root.as_mapping() else {
        out.problem(None, "the file is not a mapping of keys".to_string());
        return out;
    };
    match root.get("version").and_then(Value::as_u64) {
        Some(3) => {}
        Some(v) => {
            out.problem(None, format!("version {v} is not supported (only 3)"));
            return out;
        }
        None => {
            out.problem(None, "version is missing (expected 3)".to_string());
            return out;
        }
    }
    out.keys(root, None, &TOP_USED, &TOP_KNOWN, "");
    let dir_lines = dir_lines(&text);
    let projects = match root.get("projects") {
        None | Some(Value::Null) => return out,
        Some(Value::Sequence(projects)) => projects,
        Some(_) => {
            out.problem(None, "projects is not a list".to_string());
            return out;
        }
    };
    let mut dirs = dir_lines.into_iter();
    for (i, project) in projects.iter().enumerate() {
        let has_dir = project.get("dir").is_some_and(Value::is_string);
        let line = if has_dir { dirs.next() } else { None };
        if let Some(p) = out.project(i, project, line) {
            out.projects.push(p);
        }
    }
    out
}

impl AtlantisConfig {
    fn problem(&mut self, line: Option<u32>, message: String) {
        self.problems.push(FileError { line, message });
    }

    /// Reports keys of `map` that are neither used nor known-and-ignored.
    fn keys(&mut self, map: &Mapping, line: Option<u32>, used: &[&str], known: &[&str], at: &str) {
        for key in map.keys() {
            let name = key.as_str().unwrap_or("?");
            if used.contains(&name) {
                continue;
            }
            let message = if known.contains(&name) {
                format!("key {at}{name} is not used by tidemark (ignored)")
            } else {
                format!("unknown key {at}{name} (ignored)")
            };
            self.problem(line, message);
        }
    }

    fn project(&mut self, i: usize, value: &Value, line: Option<u32>) -> Option<Project> {
        let at = format!("projects[{i}].");
        let Some(map) = value.as_mapping() else {
            self.problem(line, format!("projects[{i}] is not a mapping"));
            return None;
        };
        self.keys(map, line, &PROJECT_USED, &PROJECT_KNOWN, &at);
        let Some(dir) = map.get("dir").and_then(Value::as_str) else {
            self.problem(line, format!("projects[{i}] has no dir"));
            return None;
        };
        let Ok(dir) = paths::join(paths::ROOT, dir) else {
            self.problem(
                line,
                format!("projects[{i}].dir {dir:?} escapes the repository"),
            );
            return None;
        };
        let text = |key: &str| map.get(key).and_then(scalar);
        let mut project = Project {
            dir,
            name: text("name"),
            workspace: text("workspace"),
            when_modified: vec![DEFAULT_WHEN_MODIFIED.to_string()],
            autoplan: true,
            depends_on: Vec::new(),
            terraform_version: text("terraform_version"),
            line: line.unwrap_or(1),
        };
        match map.get("depends_on") {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(names)) => {
                project.depends_on = names.iter().filter_map(scalar).collect();
            }
            Some(_) => self.problem(line, format!("{at}depends_on is not a list of names")),
        }
        if let Some(autoplan) = map.get("autoplan") {
            let Some(autoplan) = autoplan.as_mapping() else {
                self.problem(line, format!("{at}autoplan is not a mapping"));
                return Some(project);
            };
            let at = format!("{at}autoplan.");
            self.keys(autoplan, line, &["enabled", "when_modified"], &[], &at);
            match autoplan.get("enabled") {
                None => {}
                Some(Value::Bool(enabled)) => project.autoplan = *enabled,
                Some(_) => self.problem(line, format!("{at}enabled is not true or false")),
            }
            match autoplan.get("when_modified") {
                None => {}
                Some(Value::Sequence(patterns)) => {
                    project.when_modified = Vec::new();
                    for pattern in patterns.iter().filter_map(scalar) {
                        // A negated pattern would take files out of the set; ignoring it only
                        // makes the stack affected by more changes, never fewer.
                        if pattern.starts_with('!') {
                            let message = format!(
                                "{at}when_modified {pattern:?}: exclusions are not supported \
                                 (ignored, so more changes affect the stack)"
                            );
                            self.problem(line, message);
                        } else {
                            project.when_modified.push(pattern);
                        }
                    }
                }
                Some(_) => self.problem(line, format!("{at}when_modified is not a list")),
            }
        }
        Some(project)
    }
}

/// A scalar as text (`terraform_version: 1.5` is a number to YAML, a version to Atlantis).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The lines of `dir:` keys in order, one per project (every project must have one). Only used
/// to point problems at a line; a file written so that this finds others is still read right.
fn dir_lines(text: &str) -> Vec<u32> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let key = line.trim_start().trim_start_matches("- ").trim_start();
            key.starts_with("dir:")
        })
        .map(|(n, _)| n as u32 + 1)
        .collect()
}

/// The watch globs of a project's `when_modified` pattern, relative to its directory, with
/// Atlantis's `.dockerignore` semantics: a pattern that matches a directory matches everything
/// below it too, so each pattern also gives `PATTERN/**`.
pub(crate) fn watch_patterns(pattern: &str) -> [String; 2] {
    let pattern = pattern.trim_end_matches('/');
    [pattern.to_string(), format!("{pattern}/**")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &AtlantisConfig) -> Vec<String> {
        config
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.line.unwrap_or(0), p.message))
            .collect()
    }

    #[test]
    fn projects_with_every_used_key() {
        let config = parse(
            b"version: 3\nautomerge: true\nprojects:\n- name: net\n  dir: ./infra/net/\n  workspace: prod\n  terraform_version: v1.5.7\n  autoplan:\n    enabled: false\n    when_modified: [\"*.tf\", \"../modules/**/*.tf\", \"!x.tf\"]\n- dir: app\n  depends_on: [net]\n  colour: blue\n",
        );
        assert_eq!(
            config.projects,
            vec![
                Project {
                    dir: "infra/net".into(),
                    name: Some("net".into()),
                    workspace: Some("prod".into()),
                    when_modified: vec!["*.tf".into(), "../modules/**/*.tf".into()],
                    autoplan: false,
                    depends_on: vec![],
                    terraform_version: Some("v1.5.7".into()),
                    line: 5,
                },
                Project {
                    dir: "app".into(),
                    name: None,
                    workspace: None,
                    when_modified: vec!["**/*.tf*".into()],
                    autoplan: true,
                    depends_on: vec!["net".into()],
                    terraform_version: None,
                    line: 11,
                },
            ]
        );
        assert_eq!(
            problems(&config),
            [
                "0: key automerge is not used by tidemark (ignored)",
                "5: projects[0].autoplan.when_modified \"!x.tf\": exclusions are not supported \
                 (ignored, so more changes affect the stack)",
                "11: unknown key projects[1].colour (ignored)",
            ]
        );
    }

    #[test]
    fn broken_files_give_one_problem_and_no_projects() {
        for (text, expected) in [
            (
                "version: 2\nprojects: []\n",
                "0: version 2 is not supported (only 3)",
            ),
            ("projects: []\n", "0: version is missing (expected 3)"),
            ("- a\n", "0: the file is not a mapping of keys"),
        ] {
            let config = parse(text.as_bytes());
            assert!(config.projects.is_empty(), "{text}");
            assert_eq!(problems(&config), [expected], "{text}");
        }
        let config = parse(b"version: 3\nprojects: [\n");
        assert!(config.projects.is_empty());
        assert!(config.problems[0].message.starts_with("yaml: "));
    }

    #[test]
    fn a_project_without_dir_or_escaping_is_reported() {
        let config = parse(b"version: 3\nprojects:\n- name: x\n- dir: ../up\n");
        assert!(config.projects.is_empty());
        assert_eq!(
            problems(&config),
            [
                "0: projects[0] has no dir",
                "4: projects[1].dir \"../up\" escapes the repository"
            ]
        );
    }

    #[test]
    fn watch_patterns_match_below_a_matched_directory() {
        assert_eq!(watch_patterns("modules/"), ["modules", "modules/**"]);
    }
}
