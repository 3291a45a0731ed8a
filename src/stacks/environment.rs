//! `environment` blocks of a `stack.hcl`: one stack directory deployed several times (staging,
//! prod), each with its own variable files, settings and state. An instance is written
//! `stacks/app@prod`.

use std::collections::BTreeMap;

use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::Block;

use super::DriftRemediation;
use super::hcl::{Lines, string, strings};

/// One `environment "NAME" {}` block, as written (paths relative to the stack directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvironmentConfig {
    pub name: String,
    pub line: u32,
    /// `var_files`, relative to the stack: passed to `plan` as `-var-file`, and part of this
    /// instance's inputs only.
    pub var_files: Vec<String>,
    pub auto_apply: Option<bool>,
    pub drift_schedule: Option<String>,
    pub drift_remediation: Option<DriftRemediation>,
    /// Added to the stack's own tags.
    pub tags: Vec<String>,
    pub runner: Option<String>,
    /// The Terraform workspace, for stacks whose own backend has workspaces.
    pub workspace: Option<String>,
    /// `-backend-config` pairs for `init`, for stacks that keep their own backend (a state key
    /// per environment).
    pub backend_config: BTreeMap<String, String>,
}

/// Whether `name` may name an environment: letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit (it becomes part of state paths and run names).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 64
}

/// Splits an instance path (`stacks/app@prod`) into the stack directory and the environment.
/// A path without a valid `@NAME` suffix is a stack's default instance.
pub fn split_instance(path: &str) -> (&str, Option<&str>) {
    match path.rsplit_once('@') {
        Some((dir, env)) if !dir.is_empty() && valid_name(env) => (dir, Some(env)),
        _ => (path, None),
    }
}

/// The instance path of `dir` in `environment`.
pub fn instance_path(dir: &str, environment: Option<&str>) -> String {
    match environment {
        Some(env) => format!("{dir}@{env}"),
        None => dir.to_string(),
    }
}

/// Reads one `environment` block; problems go to `error` with their line.
pub(super) fn parse(
    block: &Block,
    lines: &Lines,
    error: &mut impl FnMut(u32, String),
) -> Option<EnvironmentConfig> {
    let line = lines.of(block);
    let name = match block.labels.as_slice() {
        [label] => label.as_str().to_string(),
        _ => {
            error(
                line,
                "an environment block takes one label, its name: environment \"prod\" {}".into(),
            );
            return None;
        }
    };
    if !valid_name(&name) {
        error(
            line,
            format!(
                "environment name {name:?} must be letters, digits, '-', '_' or '.', \
                 starting with a letter or digit"
            ),
        );
        return None;
    }
    let mut env = EnvironmentConfig {
        name,
        line,
        ..EnvironmentConfig::default()
    };
    for inner in block.body.blocks() {
        error(
            lines.of(inner),
            format!(
                "unknown block {:?} in environment {:?}",
                inner.ident.as_str(),
                env.name
            ),
        );
    }
    for a in block.body.attributes() {
        let line = lines.of(a);
        let key = a.key.as_str();
        let bad_type = |what: &str| format!("environment {:?}: {key:?} must be {what}", env.name);
        match key {
            "var_files" | "tags" => match strings(&a.value) {
                Some(values) if key == "tags" => env.tags = values,
                Some(values) => {
                    for file in &values {
                        if file.starts_with('/') {
                            error(
                                line,
                                format!(
                                    "environment {:?}: var file {file:?} must be relative to the stack",
                                    env.name
                                ),
                            );
                        }
                    }
                    env.var_files = values.into_iter().filter(|f| !f.starts_with('/')).collect();
                }
                None => error(line, bad_type("a list of strings")),
            },
            "auto_apply" => match &a.value {
                Expression::Bool(b) => env.auto_apply = Some(*b.value()),
                _ => error(line, bad_type("a bool")),
            },
            "drift_schedule" => match string(&a.value) {
                Some(s) => match crate::schedule::DriftSchedule::parse(&s) {
                    Ok(_) => env.drift_schedule = Some(s),
                    Err(e) => error(line, format!("environment {:?}: {e}", env.name)),
                },
                None => error(line, bad_type("a string")),
            },
            "drift_remediation" => match string(&a.value).map(|s| s.parse()) {
                Some(Ok(remediation)) => env.drift_remediation = Some(remediation),
                Some(Err(message)) => error(
                    line,
                    format!("environment {:?}: drift_remediation: {message}", env.name),
                ),
                None => error(line, bad_type("a string")),
            },
            "runner" | "workspace" => match string(&a.value) {
                Some(s) if key == "runner" => env.runner = Some(s),
                Some(s) => env.workspace = Some(s),
                None => error(line, bad_type("a string")),
            },
            "backend_config" => match &a.value {
                Expression::Object(object) => {
                    for (k, v) in object.iter() {
                        let name = match k {
                            ObjectKey::Ident(ident) => Some(ident.as_str().to_string()),
                            ObjectKey::Expression(e) => string(e),
                        };
                        match (name, string(v.expr())) {
                            (Some(name), Some(value)) => {
                                env.backend_config.insert(name, value);
                            }
                            _ => error(line, bad_type("an object of strings")),
                        }
                    }
                }
                _ => error(line, bad_type("an object of strings")),
            },
            _ => error(
                line,
                format!("unknown attribute {key:?} in environment {:?}", env.name),
            ),
        }
    }
    Some(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_paths_split_at_a_valid_suffix_only() {
        assert_eq!(
            split_instance("stacks/app@prod"),
            ("stacks/app", Some("prod"))
        );
        assert_eq!(split_instance("stacks/app"), ("stacks/app", None));
        assert_eq!(split_instance("a@b/c"), ("a@b/c", None));
        assert_eq!(split_instance("@prod"), ("@prod", None));
        assert_eq!(instance_path("x", Some("e")), "x@e");
        assert!(valid_name("eu-west-1.prod"));
        assert!(!valid_name("-x") && !valid_name("") && !valid_name("a b"));
    }
}
