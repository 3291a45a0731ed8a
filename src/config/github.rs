//! The `github { ... }` block of a repo: the forge Tidemark reads pull requests from, how it
//! authenticates, and what a merge may apply.

use std::time::Duration;

pub use crate::review::ApplyRequirement;

use super::ConfigError;
use super::raw::RawBlock;
use super::valid::Ctx;

/// A repository's pull requests on GitHub (or GitHub Enterprise Server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubConfig {
    /// `owner/name`.
    pub repository: String,
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub api_url: String,
    pub auth: GitHubAuth,
    /// How often open pull requests are listed (conditional requests); `None`: webhooks only.
    pub pr_poll_interval: Option<Duration>,
    /// A merged pull request applies the plans it reviewed.
    pub apply_on_merge: bool,
    pub apply_requirements: Vec<ApplyRequirement>,
    /// `tidemark apply` comments may apply before the merge.
    pub apply_before_merge: bool,
    pub allow_fork_prs: bool,
    /// What a pull request's plans run on.
    pub checkout: Checkout,
    /// Commit status contexts.
    pub plan_context: String,
    pub apply_context: String,
}

/// A token in an environment variable, or a GitHub App installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubAuth {
    Token {
        token_env: String,
    },
    App {
        app_id: u64,
        private_key_env: String,
        installation_id: u64,
    },
}

/// `merge`: the head merged into the current base (what the merge will produce); `head`: the
/// head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkout {
    Merge,
    Head,
}

pub(super) fn github(ctx: &Ctx, repo: &str, block: &RawBlock) -> Result<GitHubConfig, ConfigError> {
    let prefix = format!("repo.{repo}.github");
    if !block.labels.is_empty() || !block.blocks.is_empty() {
        return Err(ctx.block_err(
            block,
            "a github block takes no labels and no inner blocks".into(),
        ));
    }
    let mut repository = None;
    let mut api_url = "https://api.github.com".to_string();
    let mut token_env = None;
    let mut app_id = None;
    let mut private_key_env = None;
    let mut installation_id = None;
    let mut pr_poll_interval = Some(Duration::from_secs(60));
    let mut apply_on_merge = false;
    let mut apply_requirements = vec![ApplyRequirement::Approved, ApplyRequirement::PolicyPassed];
    let mut apply_before_merge = false;
    let mut allow_fork_prs = false;
    let mut checkout = Checkout::Merge;
    let mut plan_context = "tidemark/plan".to_string();
    let mut apply_context = "tidemark/apply".to_string();
    for attr in &block.attrs {
        let path = format!("{prefix}.{}", attr.name);
        match attr.name.as_str() {
            "repository" => {
                let text = ctx.string(attr, &path)?;
                let valid = text.split_once('/').is_some_and(|(owner, name)| {
                    let ok = |s: &str| {
                        !s.is_empty()
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    };
                    ok(owner) && ok(name)
                });
                if !valid {
                    return Err(ctx.err(
                        attr,
                        &path,
                        format!("{text:?} is not a repository like \"acme/infra\""),
                    ));
                }
                repository = Some(text);
            }
            "api_url" => {
                let text = ctx.string(attr, &path)?;
                super::valid::check_base_url(&text).map_err(|msg| ctx.err(attr, &path, msg))?;
                api_url = text.trim_end_matches('/').to_string();
            }
            "token_env" => token_env = Some(ctx.env_name(attr, &path)?),
            "private_key_env" => private_key_env = Some(ctx.env_name(attr, &path)?),
            "app_id" => app_id = Some(ctx.count(attr, &path, 1, u32::MAX as usize)? as u64),
            "installation_id" => {
                installation_id = Some(ctx.count(attr, &path, 1, u32::MAX as usize)? as u64)
            }
            "pr_poll_interval" => {
                let text = ctx.string(attr, &path)?;
                pr_poll_interval = if text == "off" {
                    None
                } else {
                    let interval = humantime::parse_duration(&text).map_err(|err| {
                        ctx.err(
                            attr,
                            &path,
                            format!("{text:?} is not a duration like \"60s\" (or \"off\"): {err}"),
                        )
                    })?;
                    if interval < Duration::from_secs(1) {
                        return Err(ctx.err(attr, &path, "must be at least 1s".into()));
                    }
                    Some(interval)
                };
            }
            "apply_on_merge" => apply_on_merge = ctx.bool(attr, &path)?,
            "apply_before_merge" => apply_before_merge = ctx.bool(attr, &path)?,
            "allow_fork_prs" => allow_fork_prs = ctx.bool(attr, &path)?,
            "apply_requirements" => {
                apply_requirements = Vec::new();
                for item in ctx.strings(attr, &path)? {
                    let requirement = match item.as_str() {
                        "approved" => ApplyRequirement::Approved,
                        "policy_passed" => ApplyRequirement::PolicyPassed,
                        "mergeable" => ApplyRequirement::Mergeable,
                        "undiverged" => ApplyRequirement::Undiverged,
                        other => {
                            return Err(ctx.err(
                                attr,
                                &path,
                                format!(
                                    "unknown requirement {other:?}: expected approved, policy_passed, mergeable or undiverged"
                                ),
                            ));
                        }
                    };
                    apply_requirements.push(requirement);
                }
                apply_requirements.sort();
                apply_requirements.dedup();
            }
            "checkout" => {
                checkout = match ctx.string(attr, &path)?.as_str() {
                    "merge" => Checkout::Merge,
                    "head" => Checkout::Head,
                    other => {
                        return Err(ctx.err(
                            attr,
                            &path,
                            format!("{other:?} is neither \"merge\" nor \"head\""),
                        ));
                    }
                }
            }
            "plan_context" => plan_context = ctx.string(attr, &path)?,
            "apply_context" => apply_context = ctx.string(attr, &path)?,
            _ => return Err(ctx.err(attr, &path, "unknown attribute".into())),
        }
    }
    let repository = repository.ok_or_else(|| {
        ctx.block_err(block, format!("{prefix} needs repository = \"owner/name\""))
    })?;
    let auth = match (token_env, app_id, private_key_env, installation_id) {
        (Some(token_env), None, None, None) => GitHubAuth::Token { token_env },
        (None, Some(app_id), Some(private_key_env), Some(installation_id)) => GitHubAuth::App {
            app_id,
            private_key_env,
            installation_id,
        },
        _ => {
            return Err(ctx.block_err(
                block,
                format!(
                    "{prefix} needs either token_env, or all of app_id, private_key_env and installation_id"
                ),
            ));
        }
    };
    Ok(GitHubConfig {
        repository,
        api_url,
        auth,
        pr_poll_interval,
        apply_on_merge,
        apply_requirements,
        apply_before_merge,
        allow_fork_prs,
        checkout,
        plan_context,
        apply_context,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("tidemark.hcl"), text, Path::new("/srv"))
    }

    #[test]
    fn the_issue_form_parses_with_its_defaults() {
        let config = parse(
            r#"
repo "infra" {
  url    = "https://github.com/acme/infra.git"
  branch = "main"
  github {
    repository       = "acme/infra"
    api_url          = "https://api.github.com"
    token_env        = "GITHUB_TOKEN"
    pr_poll_interval = "60s"
    apply_on_merge   = true
    apply_requirements = ["approved", "policy_passed"]
    allow_fork_prs   = false
  }
}
"#,
        )
        .expect("valid");
        let github = config.repos[0].github.clone().expect("github");
        assert_eq!(github.repository, "acme/infra");
        assert_eq!(
            github.auth,
            GitHubAuth::Token {
                token_env: "GITHUB_TOKEN".into()
            }
        );
        assert_eq!(github.pr_poll_interval, Some(Duration::from_secs(60)));
        assert!(github.apply_on_merge && !github.allow_fork_prs && !github.apply_before_merge);
        assert_eq!(
            github.apply_requirements,
            vec![ApplyRequirement::Approved, ApplyRequirement::PolicyPassed]
        );
        assert_eq!(github.checkout, Checkout::Merge);
        assert_eq!(github.plan_context, "tidemark/plan");

        let app = parse(
            "repo \"a\" {\n  url = \"file:///x\"\n  github {\n    repository = \"o/r\"\n    app_id = 12345\n    private_key_env = \"KEY\"\n    installation_id = 678\n    pr_poll_interval = \"off\"\n    api_url = \"https://ghe.example/api/v3/\"\n  }\n}\n",
        )
        .expect("valid");
        let github = app.repos[0].github.clone().expect("github");
        assert_eq!(github.pr_poll_interval, None);
        assert_eq!(github.api_url, "https://ghe.example/api/v3");
        assert!(matches!(
            github.auth,
            GitHubAuth::App {
                app_id: 12345,
                installation_id: 678,
                ..
            }
        ));
    }

    #[test]
    fn mistakes_name_the_attribute() {
        let check = |body: &str, expected: &str| {
            let text =
                format!("repo \"a\" {{\n  url = \"file:///x\"\n  github {{\n{body}\n  }}\n}}\n");
            let err = parse(&text).expect_err("refused");
            assert_eq!(err.to_string(), expected);
        };
        check(
            "    repository = \"acme\"\n    token_env = \"T\"",
            "tidemark.hcl:4: repo.a.github.repository: \"acme\" is not a repository like \"acme/infra\"",
        );
        check(
            "    repository = \"o/r\"",
            "tidemark.hcl:3: github: repo.a.github needs either token_env, or all of app_id, private_key_env and installation_id",
        );
        check(
            "    repository = \"o/r\"\n    token_env = \"T\"\n    apply_requirements = [\"signed\"]",
            "tidemark.hcl:6: repo.a.github.apply_requirements: unknown requirement \"signed\": expected approved, policy_passed, mergeable or undiverged",
        );
        check(
            "    repository = \"o/r\"\n    token_env = \"ghp_123-secret\"",
            "tidemark.hcl:5: repo.a.github.token_env: \"ghp_123-secret\" is not an environment variable name",
        );
    }
}
