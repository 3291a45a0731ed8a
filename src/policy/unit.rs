//! The policy unit-test runner, OPA style: every rule named `test_*` in a `*_test.rego` file
//! must evaluate to `true` (tests use `with input as ...` to supply their plans). A test that
//! is undefined, false, or errors fails. Rules named `todo_test_*` are skipped, as in OPA.

use serde::{Deserialize, Serialize};

use super::scan;
use super::set::{PolicyError, PolicySet, add_file, engine_error};

/// One test's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTest {
    /// The test file, relative to the set's directory.
    pub file: String,
    /// The package, without `data.`.
    pub package: String,
    pub name: String,
    pub passed: bool,
    /// Why it failed: what it evaluated to, or the evaluation error.
    pub failure: Option<String>,
}

/// Every test in a set. `passed` needs at least one test: a run that finds none is a mistake
/// (a wrong directory), not a success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitReport {
    pub passed: bool,
    pub tests: Vec<UnitTest>,
}

impl PolicySet {
    /// Runs the set's `*_test.rego` tests against its policies. Fails only when a test file
    /// cannot be parsed (the error names its file and line); failing tests are in the report.
    pub fn run_unit_tests(&self) -> Result<UnitReport, PolicyError> {
        let mut engine = self.engine.clone();
        let mut found = Vec::new();
        for file in self.tests() {
            let package = add_file(&mut engine, file)?;
            for head in scan::heads(&file.source) {
                let is_test = head.name.starts_with("test_");
                let seen = found
                    .iter()
                    .any(|(_, p, n): &(String, String, String)| *p == package && n == head.name);
                if !is_test || seen {
                    continue;
                }
                let declared = engine
                    .has_declared_rule_rooted_at(&file.label, head.name)
                    .map_err(|e| engine_error(&file.label, &e))?;
                if declared {
                    found.push((file.path.clone(), package.clone(), head.name.to_string()));
                }
            }
        }
        let tests: Vec<UnitTest> = found
            .into_iter()
            .map(|(file, package, name)| {
                let query = format!("data.{package}.{name}");
                let failure = match engine.eval_rule(query) {
                    Ok(regorus::Value::Bool(true)) => None,
                    Ok(regorus::Value::Undefined) => Some("undefined".to_string()),
                    Ok(other) => Some(format!(
                        "evaluated to {}",
                        serde_json::to_string(&other).unwrap_or_default()
                    )),
                    Err(error) => Some(format!("{error:#}").trim().to_string()),
                };
                UnitTest {
                    file,
                    package,
                    name,
                    passed: failure.is_none(),
                    failure,
                }
            })
            .collect();
        Ok(UnitReport {
            passed: !tests.is_empty() && tests.iter().all(|t| t.passed),
            tests,
        })
    }
}
