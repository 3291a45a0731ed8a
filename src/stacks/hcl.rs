//! HCL analysis of one file: what a `.tf`, `stack.hcl` or Terragrunt file says about modules,
//! state backends, includes and dependencies. The result depends only on the file's bytes, so it
//! is cached by blob id; paths stay unevaluated ([`PathExpr`]) until the file's place is known.

use std::collections::BTreeMap;

use hcl::edit::Span;
use hcl::edit::expr::{Expression, FuncCall, ObjectKey};
use hcl::edit::structure::{Attribute, Block, Body};
use hcl::edit::template::Element;
use hcl::edit::visit::{Visit, visit_func_call};

use super::eval::PathExpr;
use super::reads::{self, FileRead};

/// How a file is read: the role follows from its name and from who refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Terraform,
    /// A `*.tf.json` or `*.tofu.json` file: Terraform's JSON syntax.
    TerraformJson,
    StackConfig,
    Terragrunt,
    /// A `terragrunt.stack.hcl`: the units it generates.
    TerragruntStack,
}

/// A problem in one file, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileError {
    pub line: Option<u32>,
    pub message: String,
}

/// A path expression and the line it was written on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathRef {
    pub expr: PathExpr,
    pub line: u32,
}

/// A state backend: a `backend`/`cloud` block, or the `backend` and `config` a
/// `terraform_remote_state` data source reads. Config keys are flattened (`workspaces.name`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub kind: String,
    pub config: BTreeMap<String, PathExpr>,
}

/// The `stack` block of a `stack.hcl`, as written (paths unresolved).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackConfig {
    pub name: Option<String>,
    pub depends_on: Vec<(String, u32)>,
    pub watch: Vec<(String, u32)>,
    pub drift_schedule: Option<String>,
    pub auto_apply: bool,
    pub runner: Option<String>,
    pub tags: Vec<String>,
    pub drift_remediation: super::DriftRemediation,
    /// `export = "full"`: a run of this stack gets the commit's whole tree.
    pub export_full: bool,
    /// The `environment` blocks, in file order: each is one deployment of the stack.
    pub environments: Vec<super::environment::EnvironmentConfig>,
}

/// Everything detection needs from one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileFacts {
    pub errors: Vec<FileError>,
    /// `module` sources (Terraform) or `terraform { source }` (Terragrunt).
    pub modules: Vec<PathRef>,
    pub backend: Option<Backend>,
    pub remote_states: Vec<Backend>,
    /// Terragrunt `include` paths (merged into the unit).
    pub includes: Vec<PathRef>,
    /// Terragrunt `read_terragrunt_config` arguments (read as files of their own).
    pub reads: Vec<PathRef>,
    /// Terragrunt `dependency` config paths and `dependencies` paths.
    pub dependencies: Vec<PathRef>,
    pub stack: Option<StackConfig>,
    /// Inputs written as expressions Tidemark cannot evaluate: (line, expression as written).
    pub unresolved: Vec<(u32, String)>,
    /// A Terragrunt file with a `terraform` block of its own.
    pub terraform_block: bool,
    /// Files its expressions read (`file()`, `templatefile()`, `"${path.module}/x.sh"`).
    pub file_reads: Vec<FileRead>,
    /// The `unit` and `stack` blocks of a `terragrunt.stack.hcl`.
    pub stack_blocks: Vec<super::tgstack::StackBlock>,
}

/// Keys renamed to get past a repeated object key (see [`parse_lenient`]) carry this prefix.
const DUP_PREFIX: &str = "tidemark_dup_";

/// Parses a file's bytes in the given role. Broken input is data: it becomes an error entry.
pub fn analyze(bytes: &[u8], role: Role) -> FileFacts {
    let mut facts = FileFacts::default();
    let Ok(text) = std::str::from_utf8(bytes) else {
        facts.errors.push(FileError {
            line: None,
            message: "file is not valid UTF-8".to_string(),
        });
        return facts;
    };
    if role == Role::TerraformJson {
        return analyze_json(text);
    }
    let protected = protect_heredocs(text);
    let text = protected.as_deref().unwrap_or(text);
    let (body, text) = match parse_lenient(text) {
        Ok(parsed) => parsed,
        Err(error) => {
            facts.errors.push(error);
            return facts;
        }
    };
    let lines = Lines::new(&text);
    match role {
        Role::Terraform | Role::TerraformJson => terraform(&body, &lines, &mut facts),
        Role::Terragrunt => terragrunt(&body, &lines, &mut facts),
        Role::StackConfig => stack_config(&body, &lines, &mut facts),
        Role::TerragruntStack => super::tgstack::parse(&body, &lines, &mut facts),
    }
    if matches!(role, Role::Terraform | Role::Terragrunt) {
        file_reads(&body, &lines, &mut facts);
    }
    facts
}

fn file_reads(body: &Body, lines: &Lines, facts: &mut FileFacts) {
    let (found, unresolved) = reads::collect(body, lines);
    facts.file_reads = found;
    facts.unresolved.extend(unresolved);
}

/// A JSON configuration file read through its HCL rewriting, with lines of the JSON file.
fn analyze_json(text: &str) -> FileFacts {
    let mut facts = FileFacts::default();
    let rewritten = match super::json::to_hcl(text) {
        Ok(rewritten) => rewritten,
        Err(message) => {
            facts.errors.push(FileError {
                line: None,
                message,
            });
            return facts;
        }
    };
    match parse_lenient(&rewritten.text) {
        Ok((body, hcl)) => {
            let lines = Lines::new(&hcl);
            terraform(&body, &lines, &mut facts);
            file_reads(&body, &lines, &mut facts);
        }
        Err(error) => facts.errors.push(FileError {
            line: None,
            message: format!("json: {}", error.message),
        }),
    }
    for module in &mut facts.modules {
        module.line = rewritten.line(module.line);
    }
    for read in &mut facts.file_reads {
        read.line = rewritten.line(read.line);
    }
    for (line, _) in &mut facts.unresolved {
        *line = rewritten.line(*line);
    }
    facts
}

/// Parses HCL, working around one gap: since hcl-edit 0.9.8 a key repeated inside one object
/// literal is a parse error, while Terraform accepts it (the last value wins). The repeated key
/// is renamed in a copy of the text and the parse retried; readers strip the prefix again, so a
/// later value still overrides an earlier one.
fn parse_lenient(text: &str) -> Result<(Body, String), FileError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for attempt in 0..32 {
        match hcl::edit::parser::parse_body(&text) {
            Ok(body) => return Ok((body, text.into_owned())),
            Err(error) => {
                let offset = error.location().offset();
                let repeated = error.message().contains("redefined object key");
                if !repeated || attempt == 31 || offset >= text.len() {
                    return Err(FileError {
                        line: Some(error.location().line() as u32),
                        message: format!("HCL parse error: {}", error.message()),
                    });
                }
                let at = if text.as_bytes()[offset] == b'"' {
                    offset + 1
                } else {
                    offset
                };
                let mut owned = text.into_owned();
                owned.insert_str(at, &format!("{DUP_PREFIX}{attempt}_"));
                text = std::borrow::Cow::Owned(owned);
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// hcl-edit ends a heredoc at any line that starts with its marker followed by a character that
/// cannot continue an identifier (`EOF" >> /tmp/out`); Terraform ends it only at a line that is
/// the marker alone (indented or not). In a copy of the text, such content lines get the
/// marker's first character replaced by one of the same length, so offsets and line numbers stay
/// and the parser reads on; detection never looks inside heredoc content. `None`: nothing to do.
fn protect_heredocs(text: &str) -> Option<String> {
    if !text.contains("<<") {
        return None;
    }
    let mut out: Option<String> = None;
    let mut marker: Option<&str> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let Some(m) = marker else {
            marker = heredoc_start(body);
            continue;
        };
        let trimmed = body.trim_start_matches([' ', '\t']);
        let Some(rest) = trimmed.strip_prefix(m) else {
            continue;
        };
        if rest.trim_end_matches([' ', '\t']).is_empty() {
            marker = None;
        } else if !rest.starts_with(is_id_continue) {
            let at = start + (body.len() - trimmed.len());
            let first = m.chars().next().unwrap_or('x');
            let stand_in = if first == 'x' { "y" } else { "x" }.repeat(first.len_utf8());
            out.get_or_insert_with(|| text.to_string())
                .replace_range(at..at + first.len_utf8(), &stand_in);
        }
    }
    out
}

/// The marker of a heredoc that opens at the end of this line (`<<EOF`, `<<-EOT`).
fn heredoc_start(line: &str) -> Option<&str> {
    let at = line.rfind("<<")?;
    let rest = &line[at + 2..];
    let rest = rest
        .strip_prefix('-')
        .unwrap_or(rest)
        .trim_end_matches([' ', '\t']);
    let first = rest.chars().next()?;
    let valid = (first.is_alphabetic() || first == '_') && rest.chars().all(is_id_continue);
    valid.then_some(rest)
}

fn is_id_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Byte offsets to one-based line numbers.
pub(super) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(super) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    pub(super) fn of(&self, node: &impl Span) -> u32 {
        let offset = node.span().map_or(0, |s| s.start);
        self.starts.partition_point(|&s| s <= offset) as u32
    }
}

fn terraform(body: &Body, lines: &Lines, facts: &mut FileFacts) {
    for block in body.blocks() {
        match block.ident.as_str() {
            "module" => {
                if let Some(source) = attr(&block.body, "source")
                    && let Some(expr) = PathExpr::lower(&source.value)
                {
                    facts.modules.push(PathRef {
                        expr,
                        line: lines.of(source),
                    });
                }
            }
            "terraform" => {
                for inner in block.body.blocks() {
                    let kind = match inner.ident.as_str() {
                        "backend" => label(inner, 0).unwrap_or_default(),
                        "cloud" => "remote".to_string(),
                        _ => continue,
                    };
                    let mut config = BTreeMap::new();
                    flatten_body(&inner.body, "", &mut config);
                    facts.backend = Some(Backend { kind, config });
                }
            }
            "data" if label(block, 0).as_deref() == Some("terraform_remote_state") => {
                let kind = attr(&block.body, "backend")
                    .and_then(|a| PathExpr::lower(&a.value))
                    .and_then(|p| p.literal());
                let mut config = BTreeMap::new();
                if let Some(value) = attr(&block.body, "config") {
                    flatten_expr(&value.value, "", &mut config);
                }
                if let Some(kind) = kind {
                    facts.remote_states.push(Backend { kind, config });
                }
            }
            _ => {}
        }
    }
}

fn terragrunt(body: &Body, lines: &Lines, facts: &mut FileFacts) {
    for block in body.blocks() {
        let refs = match block.ident.as_str() {
            "include" => vec![("path", &mut facts.includes)],
            "dependency" => vec![("config_path", &mut facts.dependencies)],
            _ => vec![],
        };
        for (key, list) in refs {
            if let Some(a) = attr(&block.body, key)
                && let Some(expr) = PathExpr::lower(&a.value)
            {
                list.push(PathRef {
                    expr,
                    line: lines.of(a),
                });
            }
        }
        facts.terraform_block |= block.ident.as_str() == "terraform";
        if block.ident.as_str() == "terraform"
            && let Some(a) = attr(&block.body, "source")
        {
            terragrunt_source(a, lines, facts);
        }
        if block.ident.as_str() == "dependencies"
            && let Some(a) = attr(&block.body, "paths")
            && let Expression::Array(items) = &a.value
        {
            for item in items.iter() {
                if let Some(expr) = PathExpr::lower(item) {
                    facts.dependencies.push(PathRef {
                        expr,
                        line: lines.of(a),
                    });
                }
            }
        }
    }
    let mut reads = ReadConfigCalls {
        lines,
        found: vec![],
    };
    reads.visit_body(body);
    facts.reads = reads.found;
}

/// `terraform { source }`: every value a conditional can yield is a source (`cond ? "git::..." :
/// "../modules//app"`, bare or inside `"${...}"`); a value that cannot be evaluated is an
/// unresolved input, never dropped in silence.
fn terragrunt_source(a: &Attribute, lines: &Lines, facts: &mut FileFacts) {
    let line = lines.of(a);
    let mut unresolved = false;
    let mut branches = vec![&a.value];
    while let Some(expr) = branches.pop() {
        match expr {
            Expression::Conditional(c) => {
                branches.push(&c.false_expr);
                branches.push(&c.true_expr);
            }
            Expression::Parenthesis(p) => branches.push(p.inner()),
            Expression::StringTemplate(t) if t.len() == 1 => match t.iter().next() {
                Some(Element::Interpolation(i)) => branches.push(&i.expr),
                _ => lower_or_flag(expr, line, facts, &mut unresolved),
            },
            _ => lower_or_flag(expr, line, facts, &mut unresolved),
        }
    }
    if unresolved {
        facts
            .unresolved
            .push((line, format!("source = {}", a.value.to_string().trim())));
    }
}

/// Records a lowered path; flags what cannot be lowered.
fn lower_or_flag(expr: &Expression, line: u32, facts: &mut FileFacts, unresolved: &mut bool) {
    match PathExpr::lower(expr) {
        Some(expr) => facts.modules.push(PathRef { expr, line }),
        None => *unresolved = true,
    }
}

/// Collects `read_terragrunt_config("...")` calls wherever they appear (usually in `locals`).
struct ReadConfigCalls<'a> {
    lines: &'a Lines,
    found: Vec<PathRef>,
}

impl Visit for ReadConfigCalls<'_> {
    fn visit_func_call(&mut self, call: &FuncCall) {
        if call.name.name.as_str() == "read_terragrunt_config"
            && let Some(expr) = call.args.iter().next().and_then(PathExpr::lower)
        {
            self.found.push(PathRef {
                expr,
                line: self.lines.of(call),
            });
        }
        visit_func_call(self, call);
    }
}

fn stack_config(body: &Body, lines: &Lines, facts: &mut FileFacts) {
    let mut config = StackConfig::default();
    let mut error = |line: u32, message: String| {
        facts.errors.push(FileError {
            line: Some(line),
            message,
        })
    };
    for attribute in body.attributes() {
        error(
            lines.of(attribute),
            format!(
                "unknown attribute {:?} outside the stack block",
                attribute.key.as_str()
            ),
        );
    }
    for block in body.blocks() {
        if block.ident.as_str() == "environment" {
            let found = super::environment::parse(block, lines, &mut error);
            if let Some(env) = found {
                if config.environments.iter().any(|e| e.name == env.name) {
                    error(
                        env.line,
                        format!("environment {:?} is defined twice", env.name),
                    );
                } else {
                    config.environments.push(env);
                }
            }
            continue;
        }
        if block.ident.as_str() != "stack" {
            error(
                lines.of(block),
                format!("unknown block {:?}", block.ident.as_str()),
            );
            continue;
        }
        for inner in block.body.blocks() {
            error(
                lines.of(inner),
                format!("unknown block {:?} in stack", inner.ident.as_str()),
            );
        }
        for a in block.body.attributes() {
            let line = lines.of(a);
            let key = a.key.as_str();
            let bad_type = |what: &str| format!("stack attribute {key:?} must be {what}");
            match key {
                "name" | "drift_schedule" | "runner" | "drift_remediation" => {
                    match string(&a.value) {
                        Some(s) if key == "name" => config.name = Some(s),
                        Some(s) if key == "runner" => config.runner = Some(s),
                        Some(s) if key == "drift_remediation" => match s.parse() {
                            Ok(remediation) => config.drift_remediation = remediation,
                            Err(message) => error(line, format!("drift_remediation: {message}")),
                        },
                        // A broken schedule is reported here, where its line is known; the
                        // stack keeps the repository's default schedule.
                        Some(s) => match crate::schedule::DriftSchedule::parse(&s) {
                            Ok(_) => config.drift_schedule = Some(s),
                            Err(e) => error(line, e.to_string()),
                        },
                        None => error(line, bad_type("a string")),
                    }
                }
                "export" => match string(&a.value).as_deref() {
                    Some("full") => config.export_full = true,
                    Some("closure") => config.export_full = false,
                    _ => error(line, bad_type("\"closure\" or \"full\"")),
                },
                "auto_apply" => match &a.value {
                    Expression::Bool(b) => config.auto_apply = *b.value(),
                    _ => error(line, bad_type("a bool")),
                },
                "depends_on" | "watch" | "tags" => match strings(&a.value) {
                    Some(values) if key == "tags" => config.tags = values,
                    Some(values) => {
                        let with_line = values.into_iter().map(|v| (v, line)).collect();
                        if key == "watch" {
                            config.watch = with_line;
                        } else {
                            config.depends_on = with_line;
                        }
                    }
                    None => error(line, bad_type("a list of strings")),
                },
                _ => error(line, format!("unknown attribute {key:?} in stack block")),
            }
        }
    }
    facts.stack = Some(config);
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Attribute> {
    body.attributes().filter(|a| a.key.as_str() == key).last()
}

fn label(block: &Block, i: usize) -> Option<String> {
    block.labels.get(i).map(|l| l.as_str().to_string())
}

pub(super) fn string(expr: &Expression) -> Option<String> {
    PathExpr::lower(expr)?.literal()
}

pub(super) fn strings(expr: &Expression) -> Option<Vec<String>> {
    match expr {
        Expression::Array(items) => items.iter().map(string).collect(),
        _ => None,
    }
}

fn flatten_body(body: &Body, prefix: &str, out: &mut BTreeMap<String, PathExpr>) {
    for a in body.attributes() {
        flatten_expr(&a.value, &format!("{prefix}{}", a.key.as_str()), out);
    }
    for block in body.blocks() {
        flatten_body(
            &block.body,
            &format!("{prefix}{}.", block.ident.as_str()),
            out,
        );
    }
}

fn flatten_expr(expr: &Expression, key: &str, out: &mut BTreeMap<String, PathExpr>) {
    match expr {
        Expression::Object(object) => {
            for (k, v) in object.iter() {
                let name = match k {
                    ObjectKey::Ident(ident) => ident.as_str().to_string(),
                    ObjectKey::Expression(e) => match string(e) {
                        Some(s) => s,
                        None => continue,
                    },
                };
                let name = strip_dup(&name);
                let full = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
                flatten_expr(v.expr(), &full, out);
            }
        }
        other => {
            if let Some(value) = PathExpr::lower(other) {
                out.insert(key.to_string(), value);
            }
        }
    }
}

/// Undoes the renaming done by [`parse_lenient`].
fn strip_dup(name: &str) -> &str {
    let Some(rest) = name.strip_prefix(DUP_PREFIX) else {
        return name;
    };
    match rest.find('_') {
        Some(i) => &rest[i + 1..],
        None => name,
    }
}
