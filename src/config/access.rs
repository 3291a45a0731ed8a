//! The `access { ... }` block: who may read Tidemark's pages and API and who may act through
//! them. Tokens carry a role; a token's value is read from an environment variable, or only
//! its SHA-256 is in the file.

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// Pages and GETs need no token.
    pub open_read: bool,
    pub tokens: Vec<TokenConfig>,
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
            "token" => {
                let token = token(ctx, inner)?;
                if config.tokens.iter().any(|t| t.name == token.name) {
                    return Err(
                        ctx.block_err(inner, format!("token {:?} is declared twice", token.name))
                    );
                }
                config.tokens.push(token);
            }
            "user" => {
                return Err(ctx.block_err(
                    inner,
                    "user logins (passwords and browser sessions) are not supported yet: give the user a token block".into(),
                ));
            }
            other => {
                return Err(ctx.block_err(inner, format!("unknown block {other:?} in access")));
            }
        }
    }
    Ok(config)
}

fn token(ctx: &Ctx, block: &RawBlock) -> Result<TokenConfig, ConfigError> {
    let [name] = block.labels.as_slice() else {
        return Err(ctx.block_err(block, "a token block takes one label, its name".into()));
    };
    let mut role = None;
    let mut source = None;
    for attr in &block.attrs {
        let path = format!("access.token.{name}.{}", attr.name);
        match attr.name.as_str() {
            "role" => {
                role = Some(match ctx.string(attr, &path)?.as_str() {
                    "viewer" => Role::Viewer,
                    "operator" => Role::Operator,
                    "admin" => Role::Admin,
                    other => {
                        return Err(ctx.err(
                            attr,
                            &path,
                            format!("{other:?} is not a role: viewer, operator or admin"),
                        ));
                    }
                })
            }
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
    let role = role.ok_or_else(|| ctx.block_err(block, format!("token {name:?} needs a role")))?;
    let source = source.ok_or_else(|| {
        ctx.block_err(
            block,
            format!("token {name:?} needs env (a variable holding it) or sha256"),
        )
    })?;
    Ok(TokenConfig {
        name: name.clone(),
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
                .contains("not supported yet")
        );
    }
}
