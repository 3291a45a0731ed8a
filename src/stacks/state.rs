//! Which state a backend points at, so a `terraform_remote_state` read can be matched to the
//! stack that writes that state. Two configurations match when they name the same state:
//! `local` by resolved path, `s3` by bucket and key, `gcs` by bucket and prefix, `azurerm` by
//! account, container and key, `remote`/`cloud` by organization and workspace name.

use super::eval::Scope;
use super::hcl::Backend;
use super::paths;

/// The identity of one Terraform state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateKey {
    Local(String),
    S3 {
        bucket: String,
        key: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    Azurerm {
        account: String,
        container: String,
        key: String,
    },
    Remote {
        organization: String,
        workspace: String,
    },
}

impl StateKey {
    /// The state a stack without a `backend` block writes: `terraform.tfstate` in its directory.
    pub fn default_local(stack_dir: &str) -> Self {
        StateKey::Local(paths::child(stack_dir, "terraform.tfstate"))
    }

    /// The state a backend configuration names, when every part of it is known. Local paths are
    /// relative to the stack's directory (where terraform runs).
    pub fn of(backend: &Backend, scope: &Scope<'_>) -> Option<Self> {
        let get = |key: &str| -> Option<String> {
            backend.config.get(key).and_then(|e| e.eval(scope).ok())
        };
        Some(match backend.kind.as_str() {
            "local" => {
                let path = get("path").unwrap_or_else(|| "terraform.tfstate".to_string());
                StateKey::Local(paths::join(scope.stack_dir, &path).ok()?)
            }
            "s3" => StateKey::S3 {
                bucket: get("bucket")?,
                key: get("key")?,
            },
            "gcs" => StateKey::Gcs {
                bucket: get("bucket")?,
                prefix: get("prefix").unwrap_or_default(),
            },
            "azurerm" => StateKey::Azurerm {
                account: get("storage_account_name")?,
                container: get("container_name")?,
                key: get("key")?,
            },
            "remote" | "cloud" => StateKey::Remote {
                organization: get("organization")?,
                workspace: get("workspaces.name")?,
            },
            _ => return None,
        })
    }
}
