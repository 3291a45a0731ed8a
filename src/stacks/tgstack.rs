//! `terragrunt.stack.hcl` files (issue 14, item 7): the `unit` and `stack` blocks they declare,
//! as written. `terragrunt stack generate` copies each block's `source` to
//! `.terragrunt-stack/<path>` (or `<path>` with `no_dot_terragrunt_stack = true`) next to the
//! file. Tidemark does not generate them: a block whose generated directory is not committed is
//! reported, and a local `source` is a unit template, not a stack of its own.

use hcl::edit::expr::Expression;
use hcl::edit::structure::Body;

use super::eval::PathExpr;
use super::hcl::{FileFacts, Lines};
use super::paths;

/// One `unit` or `stack` block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackBlock {
    /// `unit` or `stack`.
    pub kind: std::borrow::Cow<'static, str>,
    pub name: String,
    pub source: Option<PathExpr>,
    /// `path`, when a literal.
    pub path: Option<String>,
    pub no_dot: bool,
    pub line: u32,
}

impl StackBlock {
    /// Where `terragrunt stack generate` writes the block, below the file's directory `dir`.
    pub fn generated(&self, dir: &str) -> Option<String> {
        let path = self.path.as_deref()?;
        let rel = if self.no_dot {
            path.to_string()
        } else {
            format!(".terragrunt-stack/{path}")
        };
        paths::join(dir, &rel).ok()
    }

    /// The local directory `source` names (relative to the file's directory `dir`), `None` for
    /// a remote or computed source.
    pub fn local_source(&self, dir: &str) -> Option<String> {
        let value = self.source.as_ref()?.literal()?;
        if value.contains("::") || value.contains("://") || value.starts_with('/') {
            return None;
        }
        let value = value.split('?').next().unwrap_or_default();
        paths::join(dir, &value.replace("//", "/")).ok()
    }
}

/// Reads the `unit` and `stack` blocks of a `terragrunt.stack.hcl`.
pub(super) fn parse(body: &Body, lines: &Lines, facts: &mut FileFacts) {
    for block in body.blocks() {
        let kind = match block.ident.as_str() {
            "unit" => "unit",
            "stack" => "stack",
            _ => continue,
        };
        let Some(name) = block.labels.first().map(|l| l.as_str().to_string()) else {
            continue;
        };
        let attr = |key: &str| {
            block
                .body
                .attributes()
                .filter(|a| a.key.as_str() == key)
                .last()
        };
        facts.stack_blocks.push(StackBlock {
            kind: kind.into(),
            name,
            source: attr("source").and_then(|a| PathExpr::lower(&a.value)),
            path: attr("path").and_then(|a| super::hcl::string(&a.value)),
            no_dot: attr("no_dot_terragrunt_stack")
                .is_some_and(|a| matches!(&a.value, Expression::Bool(b) if *b.value())),
            line: lines.of(block),
        });
    }
}
