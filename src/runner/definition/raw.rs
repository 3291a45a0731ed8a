//! Runner definitions as written: every attribute optional and located (file, line), merged
//! override over base, then checked into a [`RunnerDef`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    DefinitionError, ExitMeaning, Limits, Origin, RunnerDef, SandboxSettings, StepDef, StepKind,
};

/// Terraform 1.0.3 dies at start below this address-space limit (measured), so a definition
/// asking for less is refused instead of failing every run.
const MIN_ADDRESS_SPACE_MIB: u64 = 768;

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub(super) value: T,
    pub(super) origin: Origin,
}

#[derive(Debug, Clone, Default)]
pub(super) struct RawStep {
    pub(super) args: Option<At<Vec<String>>>,
    pub(super) exit_codes: Option<At<BTreeMap<String, String>>>,
    pub(super) timeout: Option<At<String>>,
    pub(super) network: Option<At<bool>>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct RawSandbox {
    pub(super) network: Option<At<bool>>,
    pub(super) address_space_mib: Option<At<u64>>,
    pub(super) cpu_seconds: Option<At<u64>>,
    pub(super) file_size_mib: Option<At<u64>>,
    pub(super) open_files: Option<At<u64>>,
    pub(super) output_cap_kib: Option<At<u64>>,
    pub(super) timeout: Option<At<String>>,
    pub(super) ro_paths: Option<At<Vec<String>>>,
    pub(super) system: Option<At<bool>>,
}

/// A `runner` block as written, before merging and checking.
#[derive(Debug, Clone)]
pub(super) struct RawRunner {
    pub(super) name: String,
    pub(super) origin: Origin,
    pub(super) binary: Option<At<String>>,
    pub(super) helpers: Option<At<Vec<String>>>,
    pub(super) env_allow: Option<At<Vec<String>>>,
    pub(super) env: Option<At<BTreeMap<String, String>>>,
    pub(super) cli_config_env: Option<At<String>>,
    pub(super) steps: BTreeMap<StepKind, (Origin, RawStep)>,
    pub(super) sandbox: RawSandbox,
}

impl RawRunner {
    /// `over` wins attribute by attribute; the merged definition keeps `over`'s origin.
    pub(super) fn merge(self, over: RawRunner) -> RawRunner {
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
                system: o.system.or(b.system),
            },
        }
    }

    pub(super) fn validate(self) -> Result<RunnerDef, DefinitionError> {
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
            system: s.system.as_ref().is_none_or(|v| v.value),
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
