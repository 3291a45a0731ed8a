//! `variables "NAME" { ... }` blocks: variable sets, checked into [`VariableSet`]s. Values are
//! literals in the server config; secrets are only ever named (the variable of Tidemark's own
//! environment, or the file), never written here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hcl::edit::expr::Expression;

use super::ConfigError;
use super::raw::{RawAttr, RawBlock};
use super::valid::Ctx;
use crate::variables::{Phase, VariableSet};

pub(super) fn variable_set(ctx: &Ctx, block: &RawBlock) -> Result<VariableSet, ConfigError> {
    let [name] = block.labels.as_slice() else {
        return Err(ctx.block_err(block, "a variables block takes one label, its name".into()));
    };
    if let Some(inner) = block.blocks.first() {
        return Err(ctx.block_err(
            inner,
            format!("unknown block {:?} in variables {name:?}", inner.kind),
        ));
    }
    let path = |attr: &RawAttr| format!("variables.{name}.{}", attr.name);
    let stacks = match block.attrs.iter().find(|a| a.name == "stacks") {
        Some(attr) => ctx.strings(attr, &path(attr))?,
        None => Vec::new(),
    };
    let mut set = VariableSet::new(name, stacks).map_err(|e| {
        let attr = block.attrs.iter().find(|a| a.name == "stacks");
        match attr {
            Some(attr) => ctx.err(attr, &path(attr), format!("not a valid glob: {e}")),
            None => ctx.block_err(block, e.to_string()),
        }
    })?;
    for attr in &block.attrs {
        let at = path(attr);
        match attr.name.as_str() {
            "stacks" => {}
            "tags" => set.tags = ctx.strings(attr, &at)?,
            "environments" => set.environments = ctx.strings(attr, &at)?,
            "env" => set.env = env_map(ctx, attr, &at, plain)?,
            "secret_env" => {
                set.secret_env = env_map(ctx, attr, &at, |c, a, n, v| {
                    let source = plain(c, a, n, v)?;
                    valid_env_name(&source)
                        .then_some(source.clone())
                        .ok_or_else(|| {
                            c.err(
                                a,
                                n,
                                format!("{source:?} is not an environment variable name"),
                            )
                        })
                })?
            }
            "secret_files" => {
                set.secret_files = env_map(ctx, attr, &at, |c, a, n, v| {
                    let file = PathBuf::from(plain(c, a, n, v)?);
                    if file.is_absolute() {
                        Ok(file)
                    } else {
                        Err(c.err(a, n, format!("{} must be an absolute path", file.display())))
                    }
                })?
            }
            "terraform" => set.terraform = terraform_values(ctx, attr, &at)?,
            "phases" => {
                set.phases = ctx
                    .strings(attr, &at)?
                    .iter()
                    .map(|p| {
                        Phase::parse(p).ok_or_else(|| {
                            ctx.err(
                                attr,
                                &at,
                                format!("{p:?} is not one of \"plan\", \"apply\""),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            "pull_requests" => match &attr.value {
                Expression::Bool(b) => set.pull_requests = *b.value(),
                _ => return Err(ctx.err(attr, &at, "must be true or false".into())),
            },
            _ => return Err(ctx.err(attr, &at, "unknown attribute".into())),
        }
    }
    Ok(set)
}

fn plain(ctx: &Ctx, attr: &RawAttr, name: &str, value: &Expression) -> Result<String, ConfigError> {
    match value {
        Expression::String(s) => Ok(s.value().to_string()),
        _ => Err(ctx.err(attr, name, "values must be literal strings".into())),
    }
}

/// An object whose keys are environment variable names, each value checked by `value`.
fn env_map<T>(
    ctx: &Ctx,
    attr: &RawAttr,
    name: &str,
    value: impl Fn(&Ctx, &RawAttr, &str, &Expression) -> Result<T, ConfigError>,
) -> Result<BTreeMap<String, T>, ConfigError> {
    let Expression::Object(object) = &attr.value else {
        return Err(ctx.err(
            attr,
            name,
            "must be an object like { NAME = \"value\" }".into(),
        ));
    };
    let mut map = BTreeMap::new();
    for (key, item) in object.iter() {
        let key = object_key(key);
        if !valid_env_name(&key) {
            return Err(ctx.err(
                attr,
                name,
                format!("{key:?} is not an environment variable name"),
            ));
        }
        let at = format!("{name}.{key}");
        map.insert(key, value(ctx, attr, &at, item.expr())?);
    }
    Ok(map)
}

/// Terraform input values: strings as they are, anything else as its JSON text (which
/// Terraform reads as HCL: numbers, bools, lists, objects).
fn terraform_values(
    ctx: &Ctx,
    attr: &RawAttr,
    name: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Expression::Object(object) = &attr.value else {
        return Err(ctx.err(
            attr,
            name,
            "must be an object like { region = \"eu-west-1\" }".into(),
        ));
    };
    let mut map = BTreeMap::new();
    for (key, item) in object.iter() {
        let key = object_key(key);
        let identifier = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !identifier {
            return Err(ctx.err(
                attr,
                name,
                format!("{key:?} is not a Terraform variable name"),
            ));
        }
        let value: hcl::Value = hcl::Expression::from(item.expr().clone()).into();
        let text = match value {
            hcl::Value::String(s) => s,
            other => {
                serde_json::to_string(&other).map_err(|e| ctx.err(attr, name, e.to_string()))?
            }
        };
        map.insert(key, text);
    }
    Ok(map)
}

fn object_key(key: &hcl::edit::expr::ObjectKey) -> String {
    match key {
        hcl::edit::expr::ObjectKey::Ident(ident) => ident.as_str().to_string(),
        hcl::edit::expr::ObjectKey::Expression(Expression::String(s)) => s.value().to_string(),
        hcl::edit::expr::ObjectKey::Expression(other) => other.to_string(),
    }
}

pub(super) fn valid_env_name(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
