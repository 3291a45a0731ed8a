//! Policy checks: sets of Rego policies evaluated in-process with `regorus` against a run's
//! redacted plan JSON, producing a [`Verdict`].
//!
//! Policies are written the way teams already write them for conftest and OPA: any `package`,
//! rules `deny`, `violation` (failures) and `warn` (warnings) that produce a set (or array) of
//! messages, each a string or an object with a string `msg`. Both `import rego.v1` / Rego v1
//! syntax and the older v0 syntax (`deny[msg] { ... }`) are accepted, file by file.
//!
//! Like `stacks/`, this module does no network or database IO: a policy set is read from a
//! directory (or from the binary, for the shipped set) once, then evaluation is a pure function
//! of the set, the plan and [`TidemarkInput`].
//!
//! Invariant: a policy that cannot be loaded or evaluated never lets a plan through. Loading
//! fails with a [`PolicyError`] naming the file and line; an evaluation error is recorded in
//! [`Verdict::errors`] and blocks hard.

mod calls;
mod eval;
mod input;
mod recursion;
mod scan;
mod set;
mod unit;
mod verdict;

#[cfg(test)]
mod tests;

pub use eval::evaluate;
pub use input::{
    ApprovalInput, PullRequestInput, StackInput, TidemarkInput, build_input, run_kind,
};
pub use set::{PolicyError, PolicyFile, PolicySet, SHIPPED_SET_NAME};
pub use unit::{UnitReport, UnitTest};
pub use verdict::{Blocking, Level, PolicyResult, Rule, Verdict};
