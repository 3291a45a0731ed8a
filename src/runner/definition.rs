//! Runner definitions: how a tool (terraform, tofu, terragrunt) is run, parsed from HCL
//! `runner "name" { ... }` blocks. Shipped definitions are embedded in the binary; a directory
//! or the server config may override them block by block. Parsing keeps file and line for every
//! attribute so that a bad definition is reported where it was written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Attribute, Block, Body};

/// The definitions shipped with Tidemark, embedded so the binary works from any directory.
const SHIPPED: &[(&str, &str)] = &[
    (
        "runners/terraform.hcl",
        include_str!("../../runners/terraform.hcl"),
    ),
    (
        "runners/opentofu.hcl",
        include_str!("../../runners/opentofu.hcl"),
    ),
    (
        "runners/terragrunt.hcl",
        include_str!("../../runners/terragrunt.hcl"),
    ),
];

/// Terraform 1.0.3 dies at start below this address-space limit (measured), so a definition
/// asking for less is refused instead of failing every run.
const MIN_ADDRESS_SPACE_MIB: u64 = 768;

/// The text of a file holding `runner` blocks, and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct RunnerSource {
    pub file: PathBuf,
    pub text: String,
    /// The text is a whole server config: blocks other than `runner` belong to the config
    /// and are skipped instead of refused. Line numbers stay those of the config file.
    pub in_config: bool,
}

impl RunnerSource {
    /// A file of runner definitions only.
    pub fn new(file: impl Into<PathBuf>, text: impl Into<String>) -> RunnerSource {
        RunnerSource {
            file: file.into(),
            text: text.into(),
            in_config: false,
        }
    }

    /// A server config file whose `runner` blocks override or add definitions.
    pub fn in_config(file: impl Into<PathBuf>, text: impl Into<String>) -> RunnerSource {
        RunnerSource {
            in_config: true,
            ..RunnerSource::new(file, text)
        }
    }
}

/// A bad or unknown runner definition, named by file and line.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("unknown runner {name:?} (defined: {known})")]
    Unknown { name: String, known: String },
    #[error("reading runner definitions from {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Where a definition or one of its attributes was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

impl Origin {
    fn error(&self, message: impl Into<String>) -> DefinitionError {
        DefinitionError::Invalid {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// The steps a runner may define. `init`, `version`, `plan` and `show` are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    Init,
    Version,
    Plan,
    Show,
    Apply,
    StatePull,
}

impl StepKind {
    const ALL: [StepKind; 6] = [
        StepKind::Init,
        StepKind::Version,
        StepKind::Plan,
        StepKind::Show,
        StepKind::Apply,
        StepKind::StatePull,
    ];
    const REQUIRED: [StepKind; 4] = [
        StepKind::Init,
        StepKind::Version,
        StepKind::Plan,
        StepKind::Show,
    ];

    /// The step's name in HCL and in logs.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Init => "init",
            StepKind::Version => "version",
            StepKind::Plan => "plan",
            StepKind::Show => "show",
            StepKind::Apply => "apply",
            StepKind::StatePull => "state_pull",
        }
    }

    fn from_name(name: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// What an exit code of a step means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMeaning {
    /// The step worked.
    Ok,
    /// The step worked and says there are changes. A hint only: terraform also exits 2 when
    /// the Go runtime crashes, so changes are decided from the plan JSON.
    Changes,
    /// The step failed (also every code the definition does not list).
    Failed,
}

/// Resource limits applied with prlimit to the sandboxed process and all its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub address_space_bytes: u64,
    pub cpu_seconds: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
}

/// The sandbox settings of a runner; a step may override `network` and `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    pub network: bool,
    pub limits: Limits,
    /// Wall-clock limit of one step; the whole process group is killed when it passes.
    pub timeout: Duration,
    /// Bytes of output stored per step: the first half streams live, the last half is kept.
    pub output_cap: usize,
    /// Extra host paths bound read-only at their own path when they exist (e.g. `/usr` for a
    /// dynamically linked tool).
    pub ro_paths: Vec<PathBuf>,
}

/// One step: its arguments (`{plan_file}` is replaced by the plan file's path) and how its
/// exit codes map to outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDef {
    pub args: Vec<String>,
    pub exit_codes: BTreeMap<i32, ExitMeaning>,
    pub timeout: Duration,
    pub network: bool,
}

impl StepDef {
    /// What `code` means for this step; unlisted codes are failures.
    pub fn meaning(&self, code: i32) -> ExitMeaning {
        self.exit_codes
            .get(&code)
            .copied()
            .unwrap_or(ExitMeaning::Failed)
    }
}

/// A checked runner definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerDef {
    pub name: String,
    /// An absolute path, or a name looked up on Tidemark's PATH.
    pub binary: String,
    /// Other tools the binary calls (terragrunt calls terraform): bound and put on PATH.
    pub helpers: Vec<String>,
    /// Variables copied from Tidemark's own environment when set there; nothing else is.
    pub env_allow: Vec<String>,
    /// Variables set in every step.
    pub env: BTreeMap<String, String>,
    /// A variable naming the tool's CLI config file: the file and the `filesystem_mirror`
    /// paths in it are bound read-only.
    pub cli_config_env: Option<String>,
    pub steps: BTreeMap<StepKind, StepDef>,
    pub sandbox: SandboxSettings,
    pub origin: Origin,
}

impl RunnerDef {
    /// The step of `kind`, or an error naming the definition when it does not define it.
    pub fn step(&self, kind: StepKind) -> Result<&StepDef, DefinitionError> {
        self.steps.get(&kind).ok_or_else(|| {
            self.origin.error(format!(
                "runner {:?} defines no {:?} step",
                self.name,
                kind.name()
            ))
        })
    }
}

/// All runner definitions known to a process, by name.
#[derive(Debug, Clone)]
pub struct RunnerSet {
    runners: BTreeMap<String, RunnerDef>,
}

impl RunnerSet {
    /// The definitions shipped in `runners/`, as embedded at build time.
    pub fn shipped() -> Vec<RunnerSource> {
        SHIPPED
            .iter()
            .map(|(file, text)| RunnerSource::new(*file, *text))
            .collect()
    }

    /// Every `*.hcl` file of `dir`, sorted by name, as override sources.
    pub fn read_dir(dir: &Path) -> Result<Vec<RunnerSource>, DefinitionError> {
        let io = |source| DefinitionError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|ext| ext == "hcl") {
                files.push(path);
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|file| {
                let text = std::fs::read_to_string(&file).map_err(io)?;
                Ok(RunnerSource::new(file, text))
            })
            .collect()
    }

    /// The shipped definitions with `overrides` applied in order: an override of a known
    /// runner replaces the attributes it sets (steps and the sandbox block attribute by
    /// attribute); an override of a new name must be a whole definition.
    pub fn load(overrides: &[RunnerSource]) -> Result<RunnerSet, DefinitionError> {
        let mut raw: BTreeMap<String, RawRunner> = BTreeMap::new();
        for source in Self::shipped().iter().chain(overrides) {
            for runner in parse_source(source)? {
                match raw.remove(&runner.name) {
                    Some(base) => raw.insert(runner.name.clone(), base.merge(runner)),
                    None => raw.insert(runner.name.clone(), runner),
                };
            }
        }
        let runners = raw
            .into_values()
            .map(|r| Ok((r.name.clone(), r.validate()?)))
            .collect::<Result<_, DefinitionError>>()?;
        Ok(RunnerSet { runners })
    }

    /// The runner called `name`.
    pub fn get(&self, name: &str) -> Result<&RunnerDef, DefinitionError> {
        self.runners
            .get(name)
            .ok_or_else(|| DefinitionError::Unknown {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The names of all runners, sorted.
    pub fn names(&self) -> Vec<String> {
        self.runners.keys().cloned().collect()
    }
}

/// A value and where it was written.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    origin: Origin,
}

#[derive(Debug, Clone, Default)]
struct RawStep {
    args: Option<At<Vec<String>>>,
    exit_codes: Option<At<BTreeMap<String, String>>>,
    timeout: Option<At<String>>,
    network: Option<At<bool>>,
}

#[derive(Debug, Clone, Default)]
struct RawSandbox {
    network: Option<At<bool>>,
    address_space_mib: Option<At<u64>>,
    cpu_seconds: Option<At<u64>>,
    file_size_mib: Option<At<u64>>,
    open_files: Option<At<u64>>,
    output_cap_kib: Option<At<u64>>,
    timeout: Option<At<String>>,
    ro_paths: Option<At<Vec<String>>>,
}

/// A `runner` block as written, before merging and checking.
#[derive(Debug, Clone)]
struct RawRunner {
    name: String,
    origin: Origin,
    binary: Option<At<String>>,
    helpers: Option<At<Vec<String>>>,
    env_allow: Option<At<Vec<String>>>,
    env: Option<At<BTreeMap<String, String>>>,
    cli_config_env: Option<At<String>>,
    steps: BTreeMap<StepKind, (Origin, RawStep)>,
    sandbox: RawSandbox,
}

impl RawRunner {
    /// `over` wins attribute by attribute; the merged definition keeps `over`'s origin.
    fn merge(self, over: RawRunner) -> RawRunner {
        let mut steps = self.steps;
        for (kind, (origin, step)) in over.steps {
            let merged = match steps.remove(&kind) {
                Some((_, base)) => RawStep {
                    args: step.args.or(base.args),
                    exit_codes: step.exit_codes.or(base.exit_codes),
                    timeout: step.timeout.or(base.timeout),
                    network: step.network.or(base.network),
                },
                None => step,
            };
            steps.insert(kind, (origin, merged));
        }
        let (b, o) = (self.sandbox, over.sandbox);
        RawRunner {
            name: over.name,
            origin: over.origin,
            binary: over.binary.or(self.binary),
            helpers: over.helpers.or(self.helpers),
            env_allow: over.env_allow.or(self.env_allow),
            env: over.env.or(self.env),
            cli_config_env: over.cli_config_env.or(self.cli_config_env),
            steps,
            sandbox: RawSandbox {
                network: o.network.or(b.network),
                address_space_mib: o.address_space_mib.or(b.address_space_mib),
                cpu_seconds: o.cpu_seconds.or(b.cpu_seconds),
                file_size_mib: o.file_size_mib.or(b.file_size_mib),
                open_files: o.open_files.or(b.open_files),
                output_cap_kib: o.output_cap_kib.or(b.output_cap_kib),
                timeout: o.timeout.or(b.timeout),
                ro_paths: o.ro_paths.or(b.ro_paths),
            },
        }
    }

    fn validate(self) -> Result<RunnerDef, DefinitionError> {
        let missing = |what: &str| {
            self.origin
                .error(format!("runner {:?} needs {what}", self.name))
        };
        let binary = self.binary.clone().ok_or_else(|| missing("`binary`"))?;
        if binary.value.trim().is_empty() {
            return Err(binary.origin.error("`binary` is empty"));
        }
        let sandbox = self.validate_sandbox()?;
        let mut steps = BTreeMap::new();
        for (kind, (origin, step)) in &self.steps {
            steps.insert(*kind, validate_step(origin, step, &sandbox)?);
        }
        if let Some(kind) = StepKind::REQUIRED.iter().find(|k| !steps.contains_key(k)) {
            return Err(missing(&format!("a `step \"{}\"` block", kind.name())));
        }
        Ok(RunnerDef {
            name: self.name,
            binary: binary.value,
            helpers: self.helpers.map(|h| h.value).unwrap_or_default(),
            env_allow: self.env_allow.map(|e| e.value).unwrap_or_default(),
            env: self.env.map(|e| e.value).unwrap_or_default(),
            cli_config_env: self.cli_config_env.map(|c| c.value),
            steps,
            sandbox,
            origin: self.origin,
        })
    }

    fn validate_sandbox(&self) -> Result<SandboxSettings, DefinitionError> {
        const MIB: u64 = 1024 * 1024;
        let s = &self.sandbox;
        let get = |v: &Option<At<u64>>, default: u64| v.as_ref().map_or(default, |a| a.value);
        if let Some(at) = &s.address_space_mib
            && at.value < MIN_ADDRESS_SPACE_MIB
        {
            return Err(at.origin.error(format!(
                "address_space_mib = {} is below {MIN_ADDRESS_SPACE_MIB}: terraform dies at start",
                at.value
            )));
        }
        for at in [
            &s.cpu_seconds,
            &s.open_files,
            &s.output_cap_kib,
            &s.file_size_mib,
        ]
        .into_iter()
        .flatten()
        {
            if at.value == 0 {
                return Err(at.origin.error("a sandbox limit must be above 0"));
            }
        }
        let timeout = match &s.timeout {
            Some(at) => parse_duration(at)?,
            None => Duration::from_secs(30 * 60),
        };
        Ok(SandboxSettings {
            network: s.network.as_ref().is_some_and(|n| n.value),
            limits: Limits {
                address_space_bytes: get(&s.address_space_mib, 4096) * MIB,
                cpu_seconds: get(&s.cpu_seconds, 1800),
                file_size_bytes: get(&s.file_size_mib, 4096) * MIB,
                open_files: get(&s.open_files, 4096),
            },
            timeout,
            output_cap: usize::try_from(get(&s.output_cap_kib, 2048) * 1024).unwrap_or(usize::MAX),
            ro_paths: s
                .ro_paths
                .as_ref()
                .map(|p| p.value.iter().map(PathBuf::from).collect())
                .unwrap_or_default(),
        })
    }
}

fn validate_step(
    origin: &Origin,
    step: &RawStep,
    sandbox: &SandboxSettings,
) -> Result<StepDef, DefinitionError> {
    let args = step
        .args
        .as_ref()
        .ok_or_else(|| origin.error("a step needs `args`"))?;
    for arg in &args.value {
        let rest = arg.replace("{plan_file}", "");
        if rest.contains('{') || rest.contains('}') {
            return Err(args.origin.error(format!(
                "argument {arg:?} has an unknown placeholder (only {{plan_file}} exists)"
            )));
        }
    }
    let mut exit_codes = BTreeMap::from([(0, ExitMeaning::Ok)]);
    if let Some(codes) = &step.exit_codes {
        exit_codes.clear();
        for (code, meaning) in &codes.value {
            let code: i32 = code.parse().map_err(|_| {
                codes
                    .origin
                    .error(format!("exit code {code:?} is not a number"))
            })?;
            let meaning = match meaning.as_str() {
                "ok" => ExitMeaning::Ok,
                "changes" => ExitMeaning::Changes,
                "failed" => ExitMeaning::Failed,
                other => {
                    return Err(codes.origin.error(format!(
                        "exit code meaning {other:?} is not one of \"ok\", \"changes\", \"failed\""
                    )));
                }
            };
            exit_codes.insert(code, meaning);
        }
    }
    Ok(StepDef {
        args: args.value.clone(),
        exit_codes,
        timeout: match &step.timeout {
            Some(at) => parse_duration(at)?,
            None => sandbox.timeout,
        },
        network: step.network.as_ref().map_or(sandbox.network, |n| n.value),
    })
}

fn parse_duration(at: &At<String>) -> Result<Duration, DefinitionError> {
    match humantime::parse_duration(&at.value) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(at.origin.error(format!(
            "{:?} is not a duration such as \"90s\" or \"30m\"",
            at.value
        ))),
    }
}

/// Parses one file into its `runner` blocks.
fn parse_source(source: &RunnerSource) -> Result<Vec<RawRunner>, DefinitionError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RunnerSet, DefinitionError> {
        RunnerSet::load(&[RunnerSource::new("override.hcl", text)])
    }

    /// Loads `text` as an override and checks the error message, or that it loads (`""`).
    fn check_error(text: &str, expected: &str) {
        match load(text) {
            Ok(_) => assert_eq!(expected, "", "expected an error for {text}"),
            Err(err) => assert_eq!(err.to_string(), expected),
        }
    }

    #[test]
    fn shipped_definitions_load() {
        let set = RunnerSet::load(&[]).expect("shipped definitions");
        assert_eq!(set.names(), ["opentofu", "terraform", "terragrunt"]);
        let tf = set.get("terraform").expect("terraform");
        assert_eq!(tf.binary, "terraform");
        let plan = tf.step(StepKind::Plan).expect("plan step");
        assert!(plan.args.iter().any(|a| a.contains("{plan_file}")));
        assert_eq!(plan.meaning(2), ExitMeaning::Changes);
        assert_eq!(plan.meaning(1), ExitMeaning::Failed);
        assert!(tf.sandbox.limits.address_space_bytes >= 768 * 1024 * 1024);
        assert_eq!(set.get("terragrunt").expect("tg").helpers, ["terraform"]);
    }

    #[test]
    fn override_replaces_only_what_it_sets() {
        let set = load(
            "runner \"terraform\" {\n  binary = \"/opt/tf\"\n  step \"plan\" { timeout = \"5s\" }\n  sandbox { network = true }\n}\n",
        )
        .expect("override");
        let tf = set.get("terraform").expect("terraform");
        assert_eq!(tf.binary, "/opt/tf");
        let plan = tf.step(StepKind::Plan).expect("plan");
        assert_eq!(plan.timeout, Duration::from_secs(5));
        assert!(plan.args.contains(&"plan".to_string()), "args kept");
        assert!(plan.network && tf.sandbox.network);
        assert_eq!(tf.origin.file, PathBuf::from("override.hcl"));
    }

    #[test]
    fn errors_name_file_and_line() {
        check_error(
            "runner \"x\" {\n  binary = \n}",
            "override.hcl:2: invalid expression; expected `\"`, `[`, `{`, `-`, `!`, `(`, `_`, `<`, letter or digit",
        );
        check_error(
            "runner \"x\" {\n  binary = \"x\"\n  colour = \"red\"\n}",
            "override.hcl:3: unknown attribute `colour`",
        );
        check_error(
            "runner \"x\" {\n  binary = \"x\"\n}\n",
            "override.hcl:1: runner \"x\" needs a `step \"init\"` block",
        );
        check_error(
            "runner \"terraform\" {\n  sandbox {\n    address_space_mib = 512\n  }\n}",
            "override.hcl:3: address_space_mib = 512 is below 768: terraform dies at start",
        );
        check_error(
            "runner \"terraform\" {\n  step \"plan\" {\n    exit_codes = { \"2\" = \"maybe\" }\n  }\n}",
            "override.hcl:3: exit code meaning \"maybe\" is not one of \"ok\", \"changes\", \"failed\"",
        );
        check_error(
            "runner \"terraform\" {\n  step \"destroy\" { args = [] }\n}",
            "override.hcl:2: unknown step \"destroy\" (steps: init, version, plan, show, apply, state_pull)",
        );
        check_error(
            "runner \"terraform\" {\n\n  step \"plan\" { args = [\"-out={planfile}\"] }\n}",
            "override.hcl:3: argument \"-out={planfile}\" has an unknown placeholder (only {plan_file} exists)",
        );
        check_error(
            "runner \"terraform\" {\n  binary = \"${x}\"\n}",
            "override.hcl:2: `binary` must be a string without interpolation",
        );
        check_error(
            "variable \"x\" {}",
            "override.hcl:1: expected only `runner \"name\" { ... }` blocks",
        );
        check_error(
            "runner \"terraform\" {\n  sandbox { timeout = \"soon\" }\n}",
            "override.hcl:2: \"soon\" is not a duration such as \"90s\" or \"30m\"",
        );
    }

    #[test]
    fn a_server_config_keeps_its_other_blocks_and_its_line_numbers() {
        let config = "listen = \":8080\"\nrepo \"infra\" { url = \"x\" }\n\nrunner \"terraform\" {\n  sandbox { network = true }\n}\n";
        let set = RunnerSet::load(&[RunnerSource::in_config("tidemark.hcl", config)])
            .expect("config runners");
        let tf = set.get("terraform").expect("terraform");
        assert!(tf.sandbox.network);
        assert_eq!(tf.origin.to_string(), "tidemark.hcl:4");
        let bad = config.replace("network = true", "network = \"yes\"");
        let err = RunnerSet::load(&[RunnerSource::in_config("tidemark.hcl", bad)])
            .expect_err("bad override");
        assert_eq!(
            err.to_string(),
            "tidemark.hcl:5: `network` must be true or false"
        );
    }

    #[test]
    fn unknown_runner_lists_the_known_ones() {
        let set = RunnerSet::load(&[]).expect("shipped");
        let err = set.get("pulumi").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown runner \"pulumi\" (defined: opentofu, terraform, terragrunt)"
        );
    }
}
