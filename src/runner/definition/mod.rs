//! Runner definitions: how a tool (terraform, tofu, terragrunt) is run, parsed from HCL
//! `runner "name" { ... }` blocks. Shipped definitions are embedded in the binary; a directory
//! or the server config may override them block by block. Parsing keeps file and line for every
//! attribute so that a bad definition is reported where it was written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod parse;
mod raw;

use raw::RawRunner;

/// The definitions shipped with Tidemark, embedded so the binary works from any directory.
const SHIPPED: &[(&str, &str)] = &[
    (
        "runners/terraform.hcl",
        include_str!("../../../runners/terraform.hcl"),
    ),
    (
        "runners/opentofu.hcl",
        include_str!("../../../runners/opentofu.hcl"),
    ),
    (
        "runners/terragrunt.hcl",
        include_str!("../../../runners/terragrunt.hcl"),
    ),
];

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
    /// The read-only system view (`/usr`, the merged-`/usr` links, certificates, a generated
    /// `/etc/passwd`; see `runner::system`): on unless the definition says `system = false`.
    pub system: bool,
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
            for runner in parse::parse_source(source)? {
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
