//! Variable sets: named groups of environment variables, secrets, secret files and Terraform
//! input values, defined in the server config (never in a repository), and which of them a run
//! gets. Matching is pure; [`resolve`] reads secret values from Tidemark's own environment and
//! checks secret files when a run starts, so a rotated secret needs no restart.
//!
//! A set matches a run when every selector it names matches: `stacks` (globs over the stack
//! path), `tags` (any of the stack's tags), `environments` (the run's environment), `phases`
//! (`plan` for plans and drift checks, `apply` for applies). A selector left out matches
//! everything. Sets apply in the order the config lists them: when two give the same variable,
//! the later one wins.

use std::collections::BTreeMap;
use std::path::PathBuf;

use globset::{Glob, GlobMatcher};

use crate::crypto::Secret;

/// Which part of a run's life a set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Plans and drift checks: usually read-only credentials.
    Plan,
    /// Applies: the credentials that may change infrastructure.
    Apply,
}

impl Phase {
    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "plan" => Some(Phase::Plan),
            "apply" => Some(Phase::Apply),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Apply => "apply",
        }
    }
}

/// One `variables "NAME" { ... }` block, checked.
#[derive(Debug, Clone)]
pub struct VariableSet {
    pub name: String,
    /// Globs over stack paths (`stacks/prod/**`); empty matches every stack.
    pub stacks: Vec<String>,
    matchers: Vec<GlobMatcher>,
    /// Stack tags; empty matches every stack.
    pub tags: Vec<String>,
    /// Environment names; empty matches every run.
    pub environments: Vec<String>,
    /// Plain values, set as they are.
    pub env: BTreeMap<String, String>,
    /// Variable to set -> the variable of Tidemark's own environment holding its value.
    pub secret_env: BTreeMap<String, String>,
    /// Variable to set -> a file bound read-only into the sandbox at the same path; the
    /// variable holds the path.
    pub secret_files: BTreeMap<String, PathBuf>,
    /// Terraform input values, set as `TF_VAR_name` (strings as they are, other values as
    /// their JSON text, which Terraform reads as HCL).
    pub terraform: BTreeMap<String, String>,
    /// Empty matches both phases.
    pub phases: Vec<Phase>,
    /// `false`: speculative plans of pull requests never see this set.
    pub pull_requests: bool,
}

impl VariableSet {
    /// A set with the given selectors; a glob that does not parse is the error.
    pub fn new(name: &str, stacks: Vec<String>) -> Result<VariableSet, globset::Error> {
        let matchers = stacks
            .iter()
            .map(|g| Glob::new(g.trim_start_matches('/')).map(|g| g.compile_matcher()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VariableSet {
            name: name.to_string(),
            stacks,
            matchers,
            tags: Vec::new(),
            environments: Vec::new(),
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            terraform: BTreeMap::new(),
            phases: Vec::new(),
            pull_requests: true,
        })
    }

    /// Whether the set applies to `run`.
    pub fn matches(&self, run: &Target<'_>) -> bool {
        let stack = run.stack.trim_matches('/');
        (self.matchers.is_empty() || self.matchers.iter().any(|m| m.is_match(stack)))
            && (self.tags.is_empty() || self.tags.iter().any(|t| run.tags.contains(t)))
            && (self.environments.is_empty()
                || run
                    .environment
                    .is_some_and(|e| self.environments.iter().any(|s| s == e)))
            && (self.phases.is_empty() || self.phases.contains(&run.phase))
            && (self.pull_requests || !run.pull_request)
    }

    /// The names the set gives a run (never the values): every variable, `TF_VAR_` included.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .env
            .keys()
            .chain(self.secret_env.keys())
            .chain(self.secret_files.keys())
            .cloned()
            .chain(self.terraform.keys().map(|k| format!("TF_VAR_{k}")))
            .collect();
        names.sort();
        names
    }
}

/// What a set is matched against.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub stack: &'a str,
    pub tags: &'a [String],
    pub environment: Option<&'a str>,
    pub phase: Phase,
    /// A speculative plan of a pull request.
    pub pull_request: bool,
}

/// The sets that apply to `run`, in the order they apply (later ones win).
pub fn matching<'a>(sets: &'a [VariableSet], run: &Target<'_>) -> Vec<&'a VariableSet> {
    sets.iter().filter(|s| s.matches(run)).collect()
}

/// What a run gets from its sets.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Plain variables: `env`, `TF_VAR_*` from `terraform`, and the paths of secret files.
    pub variables: Vec<(String, String)>,
    /// Secret variables: passed to the steps, redacted from everything.
    pub secrets: Vec<(String, Secret)>,
    /// Files to bind read-only into the sandbox at their own path.
    pub files: Vec<PathBuf>,
}

/// Why a run cannot get its variables. Names the set and the variable or file, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    #[error(
        "variable set {set:?}: {var} reads ${source_var}, which is not set in Tidemark's environment"
    )]
    MissingEnv {
        set: String,
        var: String,
        source_var: String,
    },
    #[error("variable set {set:?}: {var} names the file {}, which cannot be read: {reason}", path.display())]
    UnreadableFile {
        set: String,
        var: String,
        path: PathBuf,
        reason: String,
    },
}

/// Reads the values of `sets` for one run. `lookup` reads Tidemark's own environment;
/// `readable` checks that a secret file can be opened. A variable given by several sets takes
/// the last one's value (whatever its kind).
pub fn resolve(
    sets: &[&VariableSet],
    lookup: impl Fn(&str) -> Option<String>,
    readable: impl Fn(&std::path::Path) -> Result<(), String>,
) -> Result<Resolved, VariableError> {
    enum Value {
        Plain(String),
        Secret(Secret),
        File(PathBuf),
    }
    let mut values: BTreeMap<String, Value> = BTreeMap::new();
    for set in sets {
        for (name, value) in &set.env {
            values.insert(name.clone(), Value::Plain(value.clone()));
        }
        for (name, value) in &set.terraform {
            values.insert(format!("TF_VAR_{name}"), Value::Plain(value.clone()));
        }
        for (name, source) in &set.secret_env {
            let value = lookup(source).ok_or_else(|| VariableError::MissingEnv {
                set: set.name.clone(),
                var: name.clone(),
                source_var: source.clone(),
            })?;
            values.insert(name.clone(), Value::Secret(Secret::new(value)));
        }
        for (name, path) in &set.secret_files {
            readable(path).map_err(|reason| VariableError::UnreadableFile {
                set: set.name.clone(),
                var: name.clone(),
                path: path.clone(),
                reason,
            })?;
            values.insert(name.clone(), Value::File(path.clone()));
        }
    }
    let mut resolved = Resolved::default();
    for (name, value) in values {
        match value {
            Value::Plain(v) => resolved.variables.push((name, v)),
            Value::Secret(s) => resolved.secrets.push((name, s)),
            Value::File(path) => {
                resolved.variables.push((name, path.display().to_string()));
                if !resolved.files.contains(&path) {
                    resolved.files.push(path);
                }
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, stacks: &[&str]) -> VariableSet {
        VariableSet::new(name, stacks.iter().map(|s| s.to_string()).collect()).expect("globs")
    }

    fn target<'a>(stack: &'a str, tags: &'a [String], phase: Phase) -> Target<'a> {
        Target {
            stack,
            tags,
            environment: None,
            phase,
            pull_request: false,
        }
    }

    #[test]
    fn every_named_selector_must_match_and_any_entry_of_one_may() {
        let mut prod = set("aws-prod", &["stacks/prod/**"]);
        prod.tags = vec!["prod".into(), "critical".into()];
        let prod_tags = vec!["critical".to_string()];
        let none: Vec<String> = Vec::new();
        assert!(prod.matches(&target("stacks/prod/app", &prod_tags, Phase::Plan)));
        assert!(!prod.matches(&target("stacks/prod/app", &none, Phase::Plan)));
        assert!(!prod.matches(&target("stacks/dev/app", &prod_tags, Phase::Plan)));
        let everything = set("all", &[]);
        assert!(everything.matches(&target("anything", &none, Phase::Apply)));
    }

    #[test]
    fn phases_environments_and_pull_requests_select() {
        let none: Vec<String> = Vec::new();
        let mut write = set("write", &[]);
        write.phases = vec![Phase::Apply];
        assert!(!write.matches(&target("s", &none, Phase::Plan)));
        assert!(write.matches(&target("s", &none, Phase::Apply)));

        let mut prod = set("prod", &[]);
        prod.environments = vec!["prod".into()];
        let mut run = target("s", &none, Phase::Plan);
        assert!(
            !prod.matches(&run),
            "a run without an environment is not prod"
        );
        run.environment = Some("prod");
        assert!(prod.matches(&run));

        let mut private = set("private", &[]);
        private.pull_requests = false;
        run.pull_request = true;
        assert!(!private.matches(&run));
        assert!(set("open", &[]).matches(&run));
    }

    #[test]
    fn later_sets_win_and_secrets_come_from_the_environment() {
        let mut first = set("first", &[]);
        first.env.insert("AWS_REGION".into(), "us-east-1".into());
        first.terraform.insert("region".into(), "us-east-1".into());
        let mut second = set("second", &[]);
        second.env.insert("AWS_REGION".into(), "eu-west-1".into());
        second
            .secret_env
            .insert("AWS_SECRET_ACCESS_KEY".into(), "PROD_KEY".into());
        second.secret_files.insert(
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            "/run/key.json".into(),
        );
        let env = |name: &str| (name == "PROD_KEY").then(|| "s3cr3t-value".to_string());
        let resolved = resolve(&[&first, &second], env, |_| Ok(())).expect("resolve");
        assert_eq!(
            resolved.variables,
            vec![
                ("AWS_REGION".to_string(), "eu-west-1".to_string()),
                (
                    "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
                    "/run/key.json".to_string()
                ),
                ("TF_VAR_region".to_string(), "us-east-1".to_string()),
            ]
        );
        assert_eq!(resolved.secrets.len(), 1);
        assert_eq!(resolved.secrets[0].0, "AWS_SECRET_ACCESS_KEY");
        assert_eq!(resolved.secrets[0].1.expose(), "s3cr3t-value");
        assert_eq!(resolved.files, vec![PathBuf::from("/run/key.json")]);
        assert_eq!(
            second.names(),
            [
                "AWS_REGION",
                "AWS_SECRET_ACCESS_KEY",
                "GOOGLE_APPLICATION_CREDENTIALS"
            ]
        );
    }

    #[test]
    fn a_missing_secret_names_the_set_and_variable_but_no_value() {
        let mut s = set("aws-prod", &[]);
        s.secret_env
            .insert("AWS_SECRET_ACCESS_KEY".into(), "PROD_AWS_SECRET".into());
        let err = resolve(&[&s], |_| None, |_| Ok(())).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "variable set \"aws-prod\": AWS_SECRET_ACCESS_KEY reads $PROD_AWS_SECRET, which is not set in Tidemark's environment"
        );
        let mut f = set("gcp", &[]);
        f.secret_files.insert(
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            "/nope/key.json".into(),
        );
        let err = resolve(&[&f], |_| None, |_| Err("No such file".into())).expect_err("file");
        assert_eq!(
            err.to_string(),
            "variable set \"gcp\": GOOGLE_APPLICATION_CREDENTIALS names the file /nope/key.json, which cannot be read: No such file"
        );
    }
}
