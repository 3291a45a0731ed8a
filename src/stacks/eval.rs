//! The small evaluator for paths written as expressions: `"${path.module}/x"`,
//! `find_in_parent_folders("root.hcl")`, `get_terragrunt_dir()`, `dirname(...)`. hcl-rs has no
//! Terraform or Terragrunt standard library, and detection needs only this handful.
//!
//! Expressions are lowered when a blob is parsed into a [`PathExpr`] that does not depend on
//! where the blob sits, so a parse can be cached by blob id; they are evaluated later against
//! the file's directory, the stack's directory and the commit's file list.

use hcl::edit::expr::{Expression, TraversalOperator};
use hcl::edit::template::{Element, Template};

use super::paths::{self, ROOT};

/// A path expression as written, reduced to the parts Tidemark knows how to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PathExpr {
    Lit(String),
    Concat(Vec<PathExpr>),
    /// `path.module`: the directory of the file the expression is in.
    Module,
    /// `get_terragrunt_dir()`, `path.root`, `path.cwd`: the stack's directory.
    StackDir,
    /// `get_repo_root()`.
    RepoRoot,
    /// `get_parent_terragrunt_dir()`: the directory of the included file being read.
    IncludedDir,
    /// `find_in_parent_folders(name?, fallback?)`.
    FindInParent(Option<Box<PathExpr>>, Option<Box<PathExpr>>),
    /// `dirname(x)`.
    Dirname(Box<PathExpr>),
}

/// Where an expression is evaluated: the directories it is relative to, and the files that
/// exist at the commit (for `find_in_parent_folders`).
pub struct Scope<'a> {
    /// What relative paths are joined onto: the file's directory, or for Terragrunt (which
    /// merges an included file into the unit) the unit's directory.
    pub file_dir: &'a str,
    /// The directory of the file being read, for `get_parent_terragrunt_dir()`.
    pub included_dir: &'a str,
    pub stack_dir: &'a str,
    pub exists: &'a dyn Fn(&str) -> bool,
}

impl PathExpr {
    /// Lowers an HCL expression; `None` when it uses anything outside the supported set
    /// (variables, other functions, conditionals), which callers treat as "not a local path".
    pub fn lower(expr: &Expression) -> Option<PathExpr> {
        match expr {
            Expression::String(s) => Some(PathExpr::Lit(s.value().clone())),
            Expression::StringTemplate(t) => lower_template(t),
            Expression::Parenthesis(p) => PathExpr::lower(p.inner()),
            Expression::Traversal(t) => {
                let Expression::Variable(root) = &t.expr else {
                    return None;
                };
                let [op] = t.operators.as_slice() else {
                    return None;
                };
                let TraversalOperator::GetAttr(attr) = op.value() else {
                    return None;
                };
                match (root.as_str(), attr.as_str()) {
                    ("path", "module") => Some(PathExpr::Module),
                    ("path", "root" | "cwd") => Some(PathExpr::StackDir),
                    _ => None,
                }
            }
            Expression::FuncCall(call) if !call.name.is_namespaced() => {
                let args: Vec<&Expression> = call.args.iter().collect();
                let arg = |i: usize| -> Option<Option<Box<PathExpr>>> {
                    match args.get(i) {
                        None => Some(None),
                        Some(e) => PathExpr::lower(e).map(|p| Some(Box::new(p))),
                    }
                };
                match (call.name.name.as_str(), args.len()) {
                    ("get_terragrunt_dir" | "get_original_terragrunt_dir", 0) => {
                        Some(PathExpr::StackDir)
                    }
                    ("get_repo_root", 0) => Some(PathExpr::RepoRoot),
                    ("get_parent_terragrunt_dir", 0) => Some(PathExpr::IncludedDir),
                    ("find_in_parent_folders", 0..=2) => {
                        Some(PathExpr::FindInParent(arg(0)?, arg(1)?))
                    }
                    ("dirname", 1) => Some(PathExpr::Dirname(arg(0)??)),
                    ("abspath", 1) => arg(0)?.map(|b| *b),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The literal string, when the expression is one (no functions or variables).
    pub fn literal(&self) -> Option<String> {
        match self {
            PathExpr::Lit(s) => Some(s.clone()),
            PathExpr::Concat(parts) => parts.iter().map(PathExpr::literal).collect(),
            _ => None,
        }
    }

    /// Evaluates to a string. Paths the functions produce are rooted: they start with `/`,
    /// meaning the repository root, so [`paths::join`] takes them as they are.
    pub fn eval(&self, scope: &Scope<'_>) -> Result<String, String> {
        Ok(match self {
            PathExpr::Lit(s) => s.clone(),
            PathExpr::Concat(parts) => {
                let mut out = String::new();
                for part in parts {
                    out.push_str(&part.eval(scope)?);
                }
                out
            }
            PathExpr::Module => rooted(scope.file_dir),
            PathExpr::StackDir => rooted(scope.stack_dir),
            PathExpr::RepoRoot => "/".to_string(),
            PathExpr::IncludedDir => rooted(scope.included_dir),
            PathExpr::Dirname(inner) => {
                let value = inner.eval(scope)?;
                match value.trim_end_matches('/').rfind('/') {
                    Some(0) => "/".to_string(),
                    Some(i) => value[..i].to_string(),
                    None => ".".to_string(),
                }
            }
            PathExpr::FindInParent(name, fallback) => {
                let name = match name {
                    Some(n) => n.eval(scope)?,
                    None => "terragrunt.hcl".to_string(),
                };
                match find_in_parent_folders(scope, &name) {
                    Some(found) => rooted(&found),
                    None => match fallback {
                        Some(f) => f.eval(scope)?,
                        None => {
                            return Err(format!(
                                "find_in_parent_folders: no {name} above {}",
                                scope.stack_dir
                            ));
                        }
                    },
                }
            }
        })
    }
}

fn lower_template(template: &Template) -> Option<PathExpr> {
    let mut parts = Vec::new();
    for element in template.iter() {
        match element {
            Element::Literal(s) => parts.push(PathExpr::Lit(s.as_str().to_string())),
            Element::Interpolation(i) => parts.push(PathExpr::lower(&i.expr)?),
            Element::Directive(_) => return None,
        }
    }
    Some(PathExpr::Concat(parts))
}

fn rooted(dir: &str) -> String {
    if dir == ROOT {
        "/".to_string()
    } else {
        format!("/{dir}")
    }
}

/// Terragrunt searches from the parent of the stack's directory upwards.
fn find_in_parent_folders(scope: &Scope<'_>, name: &str) -> Option<String> {
    if scope.stack_dir == ROOT {
        return None;
    }
    let start = paths::parent(scope.stack_dir);
    paths::ancestors(start)
        .filter_map(|dir| paths::join(dir, name).ok())
        .find(|candidate| (scope.exists)(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, file_dir: &str, stack_dir: &str, files: &[&str]) -> Result<String, String> {
        let expr = hcl::edit::parser::parse_expr(src).expect("parse");
        let exists = |p: &str| files.contains(&p);
        let scope = Scope {
            file_dir,
            included_dir: file_dir,
            stack_dir,
            exists: &exists,
        };
        PathExpr::lower(&expr).expect("lower").eval(&scope)
    }

    #[test]
    fn evaluates_path_functions() {
        let files = ["root.hcl", "live/env.hcl", "live/terragrunt.hcl"];
        assert_eq!(
            eval(r#""${path.module}/x""#, "m", "s", &files),
            Ok("/m/x".into())
        );
        assert_eq!(
            eval(
                r#"find_in_parent_folders("root.hcl")"#,
                "live/a",
                "live/a",
                &files
            ),
            Ok("/root.hcl".into())
        );
        assert_eq!(
            eval("find_in_parent_folders()", "live/a/b", "live/a/b", &files),
            Ok("/live/terragrunt.hcl".into())
        );
        assert_eq!(
            eval(
                r#"dirname(find_in_parent_folders("env.hcl"))"#,
                "live/a",
                "live/a",
                &files
            ),
            Ok("/live".into())
        );
        assert_eq!(
            eval(r#""${get_terragrunt_dir()}/../b""#, "x", "live/a", &files),
            Ok("/live/a/../b".into())
        );
        assert!(eval(r#"find_in_parent_folders("nope.hcl")"#, "a", "a", &files).is_err());
        let unknown = hcl::edit::parser::parse_expr("var.x").expect("parse");
        assert_eq!(PathExpr::lower(&unknown), None);
    }
}
