//! Tidemark as a stack's state backend, seen from the runner: whether a stack keeps its own
//! backend, the override file that gives the others Terraform's `http` backend, and what a run
//! needs to reach Tidemark's per-run state socket.
//!
//! Only the backend *type* goes into the stack (`terraform { backend "http" {} }` in an
//! override file). Its address and credentials reach terraform through the `TF_HTTP_*`
//! environment at every step: values given to `init -backend-config` are saved in
//! `.terraform/terraform.tfstate` and in every plan file, so a plan made by one run would carry
//! that run's (revoked) credentials and proxy port into the apply run.

use std::path::{Path, PathBuf};

use crate::crypto::Secret;

/// The override file written into a stack that has no backend of its own.
pub const OVERRIDE_FILE: &str = "_tidemark_backend_override.tf";

/// What a run needs to keep its stack's state in Tidemark. Set by the worker, which serves the
/// stack's state on `socket` for the length of the run.
#[derive(Debug, Clone)]
pub struct StateBackend {
    /// The run's Unix socket inside the workspace, answering the state routes of this stack only.
    pub socket: PathBuf,
    /// The URL path of the stack's state (`/state/{repo}/{stack}`).
    pub path: String,
    pub username: String,
    pub password: Secret,
    /// The Tidemark executable whose hidden `__state-proxy` command forwards the sandbox's
    /// loopback to `socket`; bound read-only into the sandbox.
    pub exe: PathBuf,
}

/// Which backend a stack's directory declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackBackend {
    /// None: Tidemark's http backend is added.
    None,
    /// Its own (`s3`, `gcs`, `local`, `remote`, ...): left alone.
    Own(String),
    /// A Terragrunt stack (its `remote_state` decides) or a file that cannot be read: left
    /// alone, and terraform reports what is wrong.
    Unknown(String),
}

/// Reads the `.tf` and `.tf.json` files of a stack directory (not its subdirectories: a
/// backend only counts in the root module).
pub fn stack_backend(dir: &Path) -> StackBackend {
    if dir.join("terragrunt.hcl").exists() {
        return StackBackend::Unknown("a Terragrunt stack".into());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => return StackBackend::Unknown(format!("reading {}: {err}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    // Tidemark's own override (from an earlier step of the same run) does not count.
    for name in names.into_iter().filter(|n| n != OVERRIDE_FILE) {
        let path = dir.join(&name);
        let declared = if name.ends_with(".tf") {
            std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| crate::stacks::declared_backend(&bytes))
        } else if name.ends_with(".tf.json") {
            std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| json_backend(&bytes))
        } else {
            continue;
        };
        match declared {
            Ok(Some(kind)) => return StackBackend::Own(kind),
            Ok(None) => {}
            Err(err) => return StackBackend::Unknown(format!("{name}: {err}")),
        }
    }
    StackBackend::None
}

/// The backend a `.tf.json` file declares: `terraform` is an object or a list of objects.
fn json_backend(bytes: &[u8]) -> Result<Option<String>, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let blocks = match value.get("terraform") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(item) => vec![item.clone()],
        None => Vec::new(),
    };
    for block in blocks {
        if let Some(backend) = block.get("backend").and_then(|b| b.as_object()) {
            let kind = backend.keys().next().cloned().unwrap_or_default();
            return Ok(Some(kind));
        }
        if block.get("cloud").is_some() {
            return Ok(Some("remote".into()));
        }
    }
    Ok(None)
}

/// The override file's text.
pub fn override_text() -> &'static str {
    "# Written by Tidemark for this run: the stack keeps its state in Tidemark.\n\
     terraform {\n  backend \"http\" {}\n}\n"
}

/// Host paths the state proxy (a dynamically linked program) needs inside the sandbox:
/// the dynamic loader and the shared libraries, read-only.
pub const PROXY_LIBRARY_PATHS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/etc/ld.so.cache",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[(&str, &str)], expected: StackBackend) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        assert_eq!(stack_backend(dir.path()), expected, "{files:?}");
    }

    #[test]
    fn only_stacks_without_a_backend_get_tidemarks() {
        let none = StackBackend::None;
        check(
            &[("main.tf", "resource \"null_resource\" \"a\" {}\n")],
            none.clone(),
        );
        check(
            &[
                ("main.tf", "resource \"null_resource\" \"a\" {}\n"),
                ("modules/m/b.tf", "terraform {\n  backend \"s3\" {}\n}\n"),
            ],
            none,
        );
        check(
            &[(
                "backend.tf",
                "terraform {\n  backend \"s3\" {\n    bucket = \"b\"\n  }\n}\n",
            )],
            StackBackend::Own("s3".into()),
        );
        check(
            &[(
                "main.tf",
                "terraform {\n  cloud {\n    organization = \"o\"\n  }\n}\n",
            )],
            StackBackend::Own("remote".into()),
        );
        check(
            &[(
                "main.tf.json",
                r#"{"terraform": {"backend": {"gcs": {"bucket": "b"}}}}"#,
            )],
            StackBackend::Own("gcs".into()),
        );
        assert!(matches!(
            stack_backend_of(&[("main.tf", "terraform {")]),
            StackBackend::Unknown(reason) if reason.starts_with("main.tf: ")
        ));
        assert!(matches!(
            stack_backend_of(&[("terragrunt.hcl", "")]),
            StackBackend::Unknown(_)
        ));
    }

    fn stack_backend_of(files: &[(&str, &str)]) -> StackBackend {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        stack_backend(dir.path())
    }
}
