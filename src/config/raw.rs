//! The server config as parsed: HCL attributes and blocks with the line each came from,
//! before any meaning is checked. `valid.rs` turns this into the checked `Config`.

use std::path::Path;

use hcl::edit::Span;
use hcl::edit::expr::Expression;
use hcl::edit::structure::{Body, Structure};

use super::ConfigError;

/// One `name = value` with its line, value kept as an expression for the validator to read.
#[derive(Debug, Clone)]
pub struct RawAttr {
    pub name: String,
    pub line: u32,
    pub value: Expression,
}

/// One `type "label" { ... }` block with its line and its raw body text (for blocks whose
/// schema lives elsewhere, such as `runner`).
#[derive(Debug, Clone)]
pub struct RawBlock {
    pub kind: String,
    pub labels: Vec<String>,
    pub line: u32,
    pub attrs: Vec<RawAttr>,
    pub blocks: Vec<RawBlock>,
    pub text: String,
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct RawConfig {
    pub attrs: Vec<RawAttr>,
    pub blocks: Vec<RawBlock>,
}

/// Parses `source` (read from `file`) into raw attributes and blocks. Syntax errors name the
/// file and line.
pub fn parse(file: &Path, source: &str) -> Result<RawConfig, ConfigError> {
    let body = hcl::edit::parser::parse_body(source).map_err(|err| {
        let location = err.location();
        ConfigError::new(file, location.line() as u32, "", err.message().to_string())
    })?;
    let lines = LineIndex::new(source);
    let (attrs, blocks) = split(&body, source, &lines);
    Ok(RawConfig { attrs, blocks })
}

fn split(body: &Body, source: &str, lines: &LineIndex) -> (Vec<RawAttr>, Vec<RawBlock>) {
    let mut attrs = Vec::new();
    let mut blocks = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => attrs.push(RawAttr {
                name: attr.key.as_str().to_string(),
                line: lines.line_of(attr.span()),
                value: attr.value.clone(),
            }),
            Structure::Block(block) => {
                let (inner_attrs, inner_blocks) = split(&block.body, source, lines);
                let text = block
                    .span()
                    .and_then(|span| source.get(span))
                    .unwrap_or_default()
                    .to_string();
                blocks.push(RawBlock {
                    kind: block.ident.as_str().to_string(),
                    labels: block
                        .labels
                        .iter()
                        .map(|label| label.as_str().to_string())
                        .collect(),
                    line: lines.line_of(block.span()),
                    attrs: inner_attrs,
                    blocks: inner_blocks,
                    text,
                });
            }
        }
    }
    (attrs, blocks)
}

/// Maps byte offsets to 1-based line numbers.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(source: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    pub(crate) fn line_of(&self, span: Option<std::ops::Range<usize>>) -> u32 {
        let offset = span.map(|s| s.start).unwrap_or(0);
        self.starts.partition_point(|&start| start <= offset) as u32
    }
}

impl RawConfig {
    pub fn empty() -> Self {
        Self {
            attrs: Vec::new(),
            blocks: Vec::new(),
        }
    }
}
