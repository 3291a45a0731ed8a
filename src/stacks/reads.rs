//! Files read by expressions (issue 14, item 10): `file()`, `templatefile()`, `fileset()` and
//! the other file functions, Terragrunt's `read_tfvars_file()` and `sops_decrypt_file()`, and
//! any string naming a path below `${path.module}/` (a provisioner's script, an archive's source
//! directory). They are collected when a blob is parsed, unevaluated ([`FileRead`]), resolved per
//! stack into paths and globs ([`Input`]), and indexed by path so a changed file finds the stacks
//! that read it ([`ReadIndex`]).
//!
//! A path computed from variables is taken as far as it is known: `"${path.module}/tpl/${var.x}"`
//! reads below `tpl/`, conservatively. One known nowhere (`file(var.path)`) is an unresolved
//! input of the stack: the user adds a `watch` for it. One known only as a directory function
//! (`"${path.module}/${var.x}"`) is both: read below the directory, and unresolved, since the
//! computed rest may climb out of it.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use hcl::edit::expr::{Expression, FuncCall};
use hcl::edit::structure::{Attribute, Block};
use hcl::edit::template::{Element, HeredocTemplate, StringTemplate, Template};
use hcl::edit::visit::{
    Visit, visit_attr, visit_block, visit_heredoc_template, visit_string_template,
};

use super::Location;
use super::eval::{PathExpr, Scope};
use super::hash::Map;
use super::hcl::Lines;
use super::paths;

/// A file (or directory) an expression reads, as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRead {
    pub target: ReadTarget,
    pub line: u32,
}

/// What a read names, unevaluated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReadTarget {
    /// A path: a file, or a directory everything below which is read (an archive's
    /// `source_dir`). A relative one is the root module's (Terraform's working directory) or,
    /// in Terragrunt, the unit's.
    Path(PathExpr),
    /// `fileset(dir, pattern)`.
    Set(PathExpr, String),
}

/// A read resolved at a stack: a path from the repository root (the file itself, or everything
/// below it), or a glob.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    Path(String),
    Glob(String),
}

/// One resolved read of a stack and the expression it comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StackRead {
    pub at: Location,
    pub input: Input,
}

/// Functions whose first argument is a path they read (Terraform's and Terragrunt's).
const PATH_FUNCTIONS: &[&str] = &[
    "file",
    "filebase64",
    "filemd5",
    "filesha1",
    "filesha256",
    "filesha512",
    "filebase64sha256",
    "filebase64sha512",
    "fileexists",
    "templatefile",
    "read_tfvars_file",
    "sops_decrypt_file",
];

/// Attributes whose paths are analysed elsewhere (module sources, Terragrunt includes and
/// dependencies): a string there is not a file the configuration reads.
const OWN_RULES: &[(&str, &str)] = &[
    ("module", "source"),
    ("terraform", "source"),
    ("include", "path"),
    ("dependency", "config_path"),
    ("dependencies", "paths"),
];

/// Collects the file reads in a parsed body: (reads, unresolved (line, expression)).
pub(super) fn collect(
    body: &hcl::edit::structure::Body,
    lines: &Lines,
) -> (Vec<FileRead>, Vec<(u32, String)>) {
    let mut collector = Collector {
        lines,
        blocks: Vec::new(),
        found: Vec::new(),
        unresolved: Vec::new(),
    };
    collector.visit_body(body);
    (collector.found, collector.unresolved)
}

struct Collector<'a> {
    lines: &'a Lines,
    /// The blocks being visited, innermost last: the ident when [`OWN_RULES`] names it.
    blocks: Vec<Option<&'static str>>,
    found: Vec<FileRead>,
    unresolved: Vec<(u32, String)>,
}

impl Visit for Collector<'_> {
    fn visit_block(&mut self, node: &Block) {
        let ident = node.ident.as_str();
        let known = OWN_RULES.iter().map(|(b, _)| *b).find(|b| *b == ident);
        self.blocks.push(known);
        visit_block(self, node);
        self.blocks.pop();
    }

    fn visit_attr(&mut self, node: &Attribute) {
        let block = self.blocks.last().copied().flatten().unwrap_or_default();
        if !OWN_RULES.contains(&(block, node.key.as_str())) {
            visit_attr(self, node);
        }
    }

    fn visit_func_call(&mut self, call: &FuncCall) {
        let name = call.name.name.as_str();
        let args = &call.args;
        let plain = !call.name.is_namespaced();
        // read_terragrunt_config's file is an include of its own (see `hcl`).
        let path_args = match args.get(0) {
            Some(first) if plain && PATH_FUNCTIONS.contains(&name) => {
                self.path_arg(first, self.lines.of(call), call);
                1
            }
            Some(dir) if plain && name == "fileset" && args.len() == 2 => {
                let pattern = args.get(1).unwrap_or(dir);
                self.fileset(dir, pattern, self.lines.of(call), call);
                2
            }
            _ if name == "read_terragrunt_config" => 1,
            _ => 0,
        };
        for arg in args.iter().skip(path_args) {
            self.visit_expr(arg);
        }
    }

    fn visit_string_template(&mut self, node: &StringTemplate) {
        self.named_paths(node);
        visit_string_template(self, node);
    }

    fn visit_heredoc_template(&mut self, node: &HeredocTemplate) {
        self.named_paths(&node.template);
        visit_heredoc_template(self, node);
    }
}

impl Collector<'_> {
    fn path_arg(&mut self, arg: &Expression, line: u32, call: &FuncCall) {
        match known_path(arg) {
            // `file("/etc/passwd")`, `file("~/.ssh/id.pub")`: outside the repository, nothing
            // a commit changes (and nothing a sandboxed run can read).
            Some((expr, _)) if outside(&expr) => {}
            Some((expr, known)) => {
                self.found.push(FileRead {
                    target: ReadTarget::Path(expr),
                    line,
                });
                if known == Known::DirOnly {
                    self.unresolved(line, call);
                }
            }
            None => self.unresolved(line, call),
        }
    }

    /// `fileset(dir, pattern)`: a computed pattern reads everything below the directory.
    fn fileset(&mut self, dir: &Expression, pattern: &Expression, line: u32, call: &FuncCall) {
        let Some((dir, known)) = known_path(dir) else {
            return self.unresolved(line, call);
        };
        if outside(&dir) {
            return;
        }
        if known == Known::DirOnly {
            self.unresolved(line, call);
        }
        let pattern = PathExpr::lower(pattern).and_then(|p| p.literal());
        let target = match pattern {
            Some(pattern) => ReadTarget::Set(dir, pattern),
            None => ReadTarget::Path(dir),
        };
        self.found.push(FileRead { target, line });
    }

    fn unresolved(&mut self, line: u32, call: &FuncCall) {
        let text = Expression::FuncCall(Box::new(call.clone())).to_string();
        self.unresolved.push((line, text.trim().to_string()));
    }

    /// Paths a string names below a directory function: `"${path.module}/scripts/init.sh"`,
    /// `"-var-file=${get_parent_terragrunt_dir()}/common.tfvars"`.
    fn named_paths(&mut self, template: &Template) {
        for k in 0..template.len() {
            let Some(Element::Interpolation(i)) = template.get(k) else {
                continue;
            };
            let Some(Element::Literal(rest)) = template.get(k + 1) else {
                continue;
            };
            let Some(rest) = rest.as_str().strip_prefix('/') else {
                continue;
            };
            let Some(dir) = PathExpr::lower(&i.expr).filter(|p| p.literal().is_none()) else {
                continue;
            };
            let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
            let whole = end == rest.len() && k + 2 < template.len();
            // A path that goes on with a computed part is read below its known directory.
            let named = if whole {
                rest.rfind('/').map_or("", |i| &rest[..i])
            } else {
                &rest[..end]
            };
            let named = named.trim_end_matches('/');
            if named.is_empty() && !whole {
                continue;
            }
            if named.is_empty() {
                // `"${path.module}/${var.script}"`: the rest may climb out of the directory.
                let text = format!("\"{template}\"");
                self.unresolved.push((self.lines.of(i), text));
            }
            self.found.push(FileRead {
                target: ReadTarget::Path(PathExpr::Concat(vec![
                    dir,
                    PathExpr::Lit(format!("/{named}")),
                ])),
                line: self.lines.of(i),
            });
        }
    }
}

/// Whether a path is written absolute or from the home directory: a literal `/` (the
/// functions' rooted paths are not literals) or `~` at its start.
fn outside(expr: &PathExpr) -> bool {
    match expr {
        PathExpr::Lit(s) => s.starts_with('/') || s.starts_with('~'),
        PathExpr::Concat(parts) => parts.first().is_some_and(outside),
        _ => false,
    }
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | '@' | '~' | '%')
}

/// How much of a path argument is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Whole,
    /// A directory with a literal part below the directory function
    /// (`"${path.module}/tpl/${var.kind}.tpl"`): what is computed lies below it.
    Below,
    /// Only a directory function (`"${path.module}/${var.file}"`, Terragrunt's
    /// `"${get_terragrunt_dir()}/${find_in_parent_folders(...)}"`): read below it, and
    /// unresolved too, since the computed rest may climb out of it.
    DirOnly,
}

/// A path argument as far as it is known: the whole of it, or the directory its known leading
/// part names (`"${path.module}/tpl/${var.kind}.tpl"` gives `${path.module}/tpl`). `None` when
/// nothing of it is known.
fn known_path(expr: &Expression) -> Option<(PathExpr, Known)> {
    if let Some(whole) = PathExpr::lower(expr) {
        return Some((whole, Known::Whole));
    }
    let Expression::StringTemplate(template) = expr else {
        return None;
    };
    let mut parts = Vec::new();
    for element in template.iter() {
        let part = match element {
            Element::Literal(s) => PathExpr::Lit(s.as_str().to_string()),
            Element::Interpolation(i) => match PathExpr::lower(&i.expr) {
                Some(p) => p,
                None => break,
            },
            Element::Directive(_) => break,
        };
        parts.push(part);
    }
    // Keep up to the last `/` of the known part: the directory the computed rest lies in.
    let mut cut = None;
    for (k, part) in parts.iter().enumerate().rev() {
        match part {
            PathExpr::Lit(s) => {
                if let Some(i) = s.rfind('/') {
                    cut = Some((k, i));
                    break;
                }
            }
            // `"${path.module}${var.x}"`: unusual; the directory itself.
            _ => {
                cut = Some((k, usize::MAX));
                break;
            }
        }
    }
    let (k, i) = cut?;
    parts.truncate(k + 1);
    if let (Some(PathExpr::Lit(s)), true) = (parts.last_mut(), i != usize::MAX) {
        s.truncate(i);
    }
    let last_function = parts.iter().rposition(|p| !matches!(p, PathExpr::Lit(_)));
    let literal_tail = match last_function {
        Some(f) => parts[f + 1..]
            .iter()
            .any(|p| matches!(p, PathExpr::Lit(s) if !s.trim_matches('/').is_empty())),
        None => true,
    };
    let known = if literal_tail {
        Known::Below
    } else {
        Known::DirOnly
    };
    Some((PathExpr::Concat(parts), known))
}

/// Resolves a read: `scope.file_dir` is what `path.module` means, `base` what relative paths
/// are joined onto.
pub(super) fn resolve(read: &FileRead, scope: &Scope<'_>, base: &str) -> Result<Input, String> {
    let join = |expr: &PathExpr| -> Result<String, String> {
        let value = expr.eval(scope)?;
        paths::join(base, &value).map_err(|_| format!("file path {value:?} escapes the repository"))
    };
    match &read.target {
        ReadTarget::Path(expr) => join(expr).map(Input::Path),
        ReadTarget::Set(dir, pattern) => {
            let dir = join(dir)?;
            let glob = if dir == paths::ROOT {
                pattern.clone()
            } else {
                format!("{}/{pattern}", escape_glob(&dir))
            };
            Ok(Input::Glob(glob))
        }
    }
}

fn escape_glob(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every stack's reads, by the path they name and by glob.
#[derive(Default)]
pub(crate) struct ReadIndex {
    /// A path -> the (stack, read) pairs naming it.
    paths: Map<String, Vec<(usize, usize)>>,
    globs: GlobSet,
    glob_owner: Vec<(usize, usize)>,
}

impl ReadIndex {
    /// Indexes `reads` (per stack); a glob that does not build is reported through `error`.
    pub(crate) fn new(
        reads: &[Vec<StackRead>],
        error: &mut dyn FnMut(usize, &StackRead, String),
    ) -> Self {
        let mut out = ReadIndex::default();
        let mut builder = GlobSetBuilder::new();
        for (i, list) in reads.iter().enumerate() {
            for (k, read) in list.iter().enumerate() {
                match &read.input {
                    Input::Path(path) => out.paths.entry(path.clone()).or_default().push((i, k)),
                    Input::Glob(glob) => match GlobBuilder::new(glob)
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                    {
                        Ok(g) => {
                            builder.add(g);
                            out.glob_owner.push((i, k));
                        }
                        Err(e) => error(i, read, format!("fileset pattern {glob:?}: {e}")),
                    },
                }
            }
        }
        // Each glob built on its own, so the set builds; should it not, only reasons are lost.
        out.globs = builder.build().unwrap_or_else(|_| GlobSet::empty());
        out
    }

    /// The (stack, read) pairs that read `path`: naming it, a directory above it, or a glob
    /// matching it.
    pub(crate) fn readers(&self, path: &str, found: &mut dyn FnMut(usize, usize)) {
        if self.paths.is_empty() && self.glob_owner.is_empty() {
            return;
        }
        let above = std::iter::once(path).chain(paths::ancestors(paths::parent(path)));
        for named in above {
            for &(i, k) in self.paths.get(named).into_iter().flatten() {
                found(i, k);
            }
        }
        if !self.glob_owner.is_empty() {
            for g in self.globs.matches(path) {
                let (i, k) = self.glob_owner[g];
                found(i, k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(src: &str) -> (Vec<FileRead>, Vec<(u32, String)>) {
        let body = hcl::edit::parser::parse_body(src).expect("parse");
        collect(&body, &Lines::new(src))
    }

    fn resolved(src: &str) -> Vec<Input> {
        let exists = |_: &str| false;
        let scope = Scope {
            file_dir: "modules/m",
            included_dir: "modules/m",
            stack_dir: "stacks/a",
            exists: &exists,
        };
        reads(src)
            .0
            .iter()
            .map(|r| resolve(r, &scope, "stacks/a").expect("resolves"))
            .collect()
    }

    #[test]
    fn file_functions_and_named_paths_resolve() {
        let src = r#"
locals {
  a = file("${path.module}/policy.json")
  b = templatefile("${path.module}/tpl/${var.kind}.tpl", { x = filebase64("key.pem") })
  c = fileset(path.module, "files/*.yaml")
  d = yamldecode(file("${path.root}/../shared/x.yaml"))
}
resource "null_resource" "x" {
  provisioner "local-exec" {
    command = "bash ${path.module}/scripts/init.sh --flag"
  }
}
module "m" {
  source = "${path.module}/../x"
}
"#;
        assert_eq!(
            resolved(src),
            [
                Input::Path("modules/m/policy.json".into()),
                Input::Path("modules/m/tpl".into()),
                Input::Path("stacks/a/key.pem".into()),
                Input::Glob("modules/m/files/*.yaml".into()),
                Input::Path("stacks/shared/x.yaml".into()),
                Input::Path("modules/m/scripts/init.sh".into()),
            ]
        );
    }

    #[test]
    fn a_path_known_only_as_a_directory_is_read_below_it_and_unresolved() {
        let src = "locals {\n  a = file(\"${path.module}/${var.name}\")\n  b = \"${path.module}/${var.script}\"\n  c = file(\"${path.module}/tpl/${var.kind}\")\n}\n";
        let (found, unresolved) = reads(src);
        assert_eq!(found.len(), 3);
        assert_eq!(
            unresolved,
            [
                (2, "file(\"${path.module}/${var.name}\")".to_string()),
                (3, "\"${path.module}/${var.script}\"".to_string()),
            ]
        );
    }

    #[test]
    fn paths_outside_the_repository_are_not_inputs() {
        let src = "locals {\n  a = fileexists(\"/etc/passwd\") ? file(\"/etc/passwd\") : \"\"\n  b = file(\"~/.ssh/id.pub\")\n  c = fileset(\"/opt/${var.x}\", \"*\")\n}\n";
        assert_eq!(reads(src), (vec![], vec![]));
    }

    #[test]
    fn a_path_known_nowhere_is_unresolved() {
        let (found, unresolved) = reads("locals {\n  p = file(var.policy_path)\n}\n");
        assert!(found.is_empty());
        assert_eq!(unresolved, [(2, "file(var.policy_path)".to_string())]);
    }
}
