//! Parsing runner definitions from HCL with hcl-edit, which keeps spans: every value comes
//! out with the file and line it was written at.

use std::collections::BTreeMap;

use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Attribute, Block, Body};

use super::raw::{At, RawRunner, RawSandbox, RawStep};
use super::{DefinitionError, Origin, RunnerSource, StepKind};

/// Parses one file into its `runner` blocks.
pub(super) fn parse_source(source: &RunnerSource) -> Result<Vec<RawRunner>, DefinitionError> {
    let ctx = Ctx { source };
    let body: Body =
        hcl::edit::parser::parse_body(&source.text).map_err(|err| DefinitionError::Invalid {
            file: source.file.clone(),
            line: err.location().line(),
            message: err.message().to_string(),
        })?;
    let mut runners = Vec::new();
    for structure in body.iter() {
        let origin = ctx.origin(structure.span());
        let block = match structure.as_block() {
            Some(block) if block.ident.as_str() == "runner" => block,
            _ if source.in_config => continue,
            _ => return Err(origin.error("expected only `runner \"name\" { ... }` blocks")),
        };
        runners.push(ctx.runner(block)?);
    }
    Ok(runners)
}

/// Conversion from HCL syntax to raw values, with the source for line numbers.
struct Ctx<'a> {
    source: &'a RunnerSource,
}

impl Ctx<'_> {
    fn origin(&self, span: Option<std::ops::Range<usize>>) -> Origin {
        let offset = span.map_or(0, |s| s.start).min(self.source.text.len());
        let line = self.source.text.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Origin {
            file: self.source.file.clone(),
            line,
        }
    }

    fn single_label(&self, block: &Block, what: &str) -> Result<String, DefinitionError> {
        match block.labels.as_slice() {
            [label] if !label.as_str().is_empty() => Ok(label.as_str().to_string()),
            _ => Err(self
                .origin(block.span())
                .error(format!("`{what}` needs exactly one name label"))),
        }
    }

    fn runner(&self, block: &Block) -> Result<RawRunner, DefinitionError> {
        let name = self.single_label(block, "runner")?;
        let mut raw = RawRunner {
            name,
            origin: self.origin(block.span()),
            binary: None,
            helpers: None,
            env_allow: None,
            env: None,
            cli_config_env: None,
            steps: BTreeMap::new(),
            sandbox: RawSandbox::default(),
        };
        for structure in block.body.iter() {
            let origin = self.origin(structure.span());
            if let Some(attr) = structure.as_attribute() {
                match attr.key.as_str() {
                    "binary" => raw.binary = Some(self.string(attr)?),
                    "helpers" => raw.helpers = Some(self.strings(attr)?),
                    "env_allow" => raw.env_allow = Some(self.strings(attr)?),
                    "env" => raw.env = Some(self.map(attr)?),
                    "cli_config_env" => raw.cli_config_env = Some(self.string(attr)?),
                    other => return Err(origin.error(format!("unknown attribute `{other}`"))),
                }
            } else if let Some(inner) = structure.as_block() {
                match inner.ident.as_str() {
                    "step" => {
                        let label = self.single_label(inner, "step")?;
                        let kind = StepKind::from_name(&label).ok_or_else(|| {
                            origin.error(format!(
                                "unknown step {label:?} (steps: init, version, plan, show, apply, state_pull)"
                            ))
                        })?;
                        if raw.steps.contains_key(&kind) {
                            return Err(origin.error(format!("step {label:?} is defined twice")));
                        }
                        raw.steps.insert(kind, (origin, self.step(inner)?));
                    }
                    "sandbox" => raw.sandbox = self.sandbox(inner)?,
                    other => return Err(origin.error(format!("unknown block `{other}`"))),
                }
            }
        }
        Ok(raw)
    }

    fn step(&self, block: &Block) -> Result<RawStep, DefinitionError> {
        let mut step = RawStep::default();
        for attr in self.attributes(block)? {
            match attr.key.as_str() {
                "args" => step.args = Some(self.strings(attr)?),
                "exit_codes" => step.exit_codes = Some(self.map(attr)?),
                "timeout" => step.timeout = Some(self.string(attr)?),
                "network" => step.network = Some(self.bool(attr)?),
                other => return Err(self.unknown(attr, other)),
            }
        }
        Ok(step)
    }

    fn sandbox(&self, block: &Block) -> Result<RawSandbox, DefinitionError> {
        let mut s = RawSandbox::default();
        for attr in self.attributes(block)? {
            match attr.key.as_str() {
                "network" => s.network = Some(self.bool(attr)?),
                "address_space_mib" => s.address_space_mib = Some(self.number(attr)?),
                "cpu_seconds" => s.cpu_seconds = Some(self.number(attr)?),
                "file_size_mib" => s.file_size_mib = Some(self.number(attr)?),
                "open_files" => s.open_files = Some(self.number(attr)?),
                "output_cap_kib" => s.output_cap_kib = Some(self.number(attr)?),
                "timeout" => s.timeout = Some(self.string(attr)?),
                "ro_paths" => s.ro_paths = Some(self.strings(attr)?),
                "system" => s.system = Some(self.bool(attr)?),
                other => return Err(self.unknown(attr, other)),
            }
        }
        Ok(s)
    }

    /// The attributes of a block that may hold no nested blocks.
    fn attributes<'b>(&self, block: &'b Block) -> Result<Vec<&'b Attribute>, DefinitionError> {
        if let Some(inner) = block.body.blocks().next() {
            return Err(self
                .origin(inner.span())
                .error(format!("unexpected block `{}`", inner.ident.as_str())));
        }
        Ok(block.body.attributes().collect())
    }

    fn unknown(&self, attr: &Attribute, key: &str) -> DefinitionError {
        self.origin(attr.span())
            .error(format!("unknown attribute `{key}`"))
    }

    fn at<T>(
        &self,
        attr: &Attribute,
        value: Option<T>,
        what: &str,
    ) -> Result<At<T>, DefinitionError> {
        let origin = self.origin(attr.span());
        match value {
            Some(value) => Ok(At { value, origin }),
            None => Err(origin.error(format!("`{}` must be {what}", attr.key.as_str()))),
        }
    }

    fn string(&self, attr: &Attribute) -> Result<At<String>, DefinitionError> {
        self.at(
            attr,
            literal_string(&attr.value),
            "a string without interpolation",
        )
    }

    fn bool(&self, attr: &Attribute) -> Result<At<bool>, DefinitionError> {
        self.at(attr, attr.value.as_bool(), "true or false")
    }

    fn number(&self, attr: &Attribute) -> Result<At<u64>, DefinitionError> {
        let value = attr.value.as_number().and_then(|n| n.as_u64());
        self.at(attr, value, "a whole number")
    }

    fn strings(&self, attr: &Attribute) -> Result<At<Vec<String>>, DefinitionError> {
        let value = attr
            .value
            .as_array()
            .and_then(|array| array.iter().map(literal_string).collect());
        self.at(attr, value, "a list of strings")
    }

    fn map(&self, attr: &Attribute) -> Result<At<BTreeMap<String, String>>, DefinitionError> {
        let value = attr.value.as_object().and_then(|object| {
            object
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        ObjectKey::Ident(ident) => Some(ident.as_str().to_string()),
                        ObjectKey::Expression(expr) => {
                            literal_string(expr).or_else(|| expr.as_number().map(|n| n.to_string()))
                        }
                    }?;
                    Some((key, literal_string(value.expr())?))
                })
                .collect()
        });
        self.at(attr, value, "an object of strings")
    }
}

fn literal_string(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.value().clone()),
        _ => None,
    }
}
