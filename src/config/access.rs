//! The `access { ... }` block: who may read Tidemark's pages and API and who may act through
//! them. Tokens carry a role; a token's value is read from an environment variable, or only
//! its SHA-256 is in the file. Users log in to the dashboard with a password whose argon2id
//! hash is read from an environment variable.

use super::ConfigError;
use super::raw::RawBlock;
use super::valid::Ctx;

/// What a caller may do: `viewer` reads, `operator` also approves, overrides, applies and
/// unlocks, `admin` does everything (and reads the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Where a token's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The value is in this environment variable.
    Env(String),
    /// Only the value's SHA-256 (hex) is known.
    Sha256(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub source: TokenSource,
}

/// A person who logs in to the dashboard with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// The environment variable holding the password's argon2id hash (PHC string).
    pub password_hash_env: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// Pages and GETs need no token.
    pub open_read: bool,
    pub tokens: Vec<TokenConfig>,
    pub users: Vec<UserConfig>,
}

pub(super) fn access(ctx: &Ctx, block: &RawBlock) -> Result<AccessConfig, ConfigError> {
    if !block.labels.is_empty() {
        return Err(ctx.block_err(block, "an access block takes no label".into()));
    }
    let mut config = AccessConfig::default();
    for attr in &block.attrs {
        let path = format!("access.{}", attr.name);
        match attr.name.as_str() {
            "open_read" => config.open_read = ctx.bool(attr, &path)?,
            _ => return Err(ctx.err(attr, &path, "unknown attribute".into())),
        }
    }
    for inner in &block.blocks {
        match inner.kind.as_str() {
            "token" | "user" => {
                let [name] = inner.labels.as_slice() else {
                    return Err(ctx.block_err(
                        inner,
                        format!("a {} block takes one label, its name", inner.kind),
                    ));
                };
                // A session names who it belongs to: one name, one token or user.
                let taken = config.tokens.iter().any(|t| &t.name == name)
                    || config.users.iter().any(|u| &u.name == name);
                if taken {
                    return Err(ctx.block_err(
                        inner,
                        format!("{name:?} is declared twice (tokens and users share names)"),
                    ));
                }
                if inner.kind == "token" {
                    config.tokens.push(token(ctx, inner, name)?);
                } else {
                    config.users.push(user(ctx, inner, name)?);
                }
            }
            other => {
                return Err(ctx.block_err(inner, format!("unknown block {other:?} in access")));
            }
        }
    }
    Ok(config)
}

fn role(ctx: &Ctx, attr: &super::raw::RawAttr, path: &str) -> Result<Role, ConfigError> {
    Ok(match ctx.string(attr, path)?.as_str() {
        "viewer" => Role::Viewer,
        "operator" => Role::Operator,
        "admin" => Role::Admin,
        other => {
            return Err(ctx.err(
                attr,
                path,
                format!("{other:?} is not a role: viewer, operator or admin"),
            ));
        }
    })
}

fn user(ctx: &Ctx, block: &RawBlock, name: &str) -> Result<UserConfig, ConfigError> {
    let mut role_of = None;
    let mut hash_env = None;
    for attr in &block.attrs {
        let path = format!("access.user.{name}.{}", attr.name);
        match attr.name.as_str() {
            "role" => role_of = Some(role(ctx, attr, &path)?),
            "password_hash_env" => hash_env = Some(ctx.env_name(attr, &path)?),
            _ => return Err(ctx.err(attr, &path, "unknown attribute".into())),
        }
    }
    let role =
        role_of.ok_or_else(|| ctx.block_err(block, format!("user {name:?} needs a role")))?;
    let password_hash_env = hash_env.ok_or_else(|| {
        ctx.block_err(
            block,
            format!(
                "user {name:?} needs password_hash_env (a variable holding the password's \
                 argon2id hash: `tidemark hash-password` prints one)"
            ),
        )
    })?;
    Ok(UserConfig {
        name: name.to_string(),
        role,
        password_hash_env,
    })
}

fn token(ctx: &Ctx, block: &RawBlock, name: &str) -> Result<TokenConfig, ConfigError> {
    let mut role_of = None;
    let mut source = None;
    for attr in &block.attrs {
        let path = format!("access.token.{name}.{}", attr.name);
        match attr.name.as_str() {
            "role" => role_of = Some(role(ctx, attr, &path)?),
            "env" => source = Some(TokenSource::Env(ctx.env_name(attr, &path)?)),
            "sha256" => {
                let hex = ctx.string(attr, &path)?.to_ascii_lowercase();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ctx.err(
                        attr,
                        &path,
                        "must be 64 hex digits (sha256sum of the token)".into(),
                    ));
                }
                source = Some(TokenSource::Sha256(hex));
            }
            _ => return Err(ctx.err(attr, &path, "unknown attribute".into())),
        }
    }
    let role =
        role_of.ok_or_else(|| ctx.block_err(block, format!("token {name:?} needs a role")))?;
    let source = source.ok_or_else(|| {
        ctx.block_err(
            block,
            format!("token {name:?} needs env (a variable holding it) or sha256"),
        )
    })?;
    Ok(TokenConfig {
        name: name.to_string(),
        role,
        source,
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
    fn the_issue_form_parses_and_mistakes_name_the_attribute() {
        let config = parse(
            "access {\n  open_read = false\n  token \"ops\" {\n    role = \"operator\"\n    env  = \"TIDEMARK_OPS_TOKEN\"\n  }\n  token \"reader\" {\n    role   = \"viewer\"\n    sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n  }\n}\n",
        )
        .expect("valid");
        let access = config.access.expect("access");
        assert!(!access.open_read);
        assert_eq!(access.tokens[0].role, Role::Operator);
        assert_eq!(
            access.tokens[0].source,
            TokenSource::Env("TIDEMARK_OPS_TOKEN".into())
        );
        assert!(matches!(access.tokens[1].source, TokenSource::Sha256(_)));
        let err = |text: &str| parse(text).expect_err("refused").to_string();
        assert_eq!(
            err("access {\n  token \"x\" {\n    role = \"root\"\n    env = \"T\"\n  }\n}\n"),
            "tidemark.hcl:3: access.token.x.role: \"root\" is not a role: viewer, operator or admin"
        );
        assert_eq!(
            err("access {\n  token \"x\" {\n    role = \"viewer\"\n    sha256 = \"abc\"\n  }\n}\n"),
            "tidemark.hcl:4: access.token.x.sha256: must be 64 hex digits (sha256sum of the token)"
        );
        assert!(
            err("access {\n  user \"alice\" {\n    role = \"admin\"\n  }\n}\n")
                .contains("needs password_hash_env")
        );
        assert!(
            err("access {\n  user \"ops\" {\n    role = \"admin\"\n    password_hash_env = \"H\"\n  }\n  token \"ops\" {\n    role = \"viewer\"\n    env = \"T\"\n  }\n}\n")
                .contains("declared twice")
        );
    }

    #[test]
    fn users_have_a_role_and_a_hash_variable() {
        let config = parse(
            "access {\n  user \"alice\" {\n    role              = \"admin\"\n    password_hash_env = \"ALICE_PASSWORD_HASH\"\n  }\n}\n",
        )
        .expect("valid");
        let access = config.access.expect("access");
        assert_eq!(
            access.users,
            [UserConfig {
                name: "alice".into(),
                role: Role::Admin,
                password_hash_env: "ALICE_PASSWORD_HASH".into(),
            }]
        );
    }
}
