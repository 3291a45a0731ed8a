//! Unit tests for loading and evaluating policy sets, fed by small Rego files in memory.

use serde_json::{Value, json};

use super::*;

fn set(level: Level, files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
    let files = files
        .iter()
        .map(|(path, source)| PolicyFile {
            path: path.to_string(),
            label: format!("pol/{path}"),
            source: source.to_string(),
        })
        .collect();
    PolicySet::from_files("pol".into(), level, None, files)
}

fn tidemark() -> TidemarkInput {
    TidemarkInput::new(
        "infra",
        "c0ffee",
        "main",
        StackInput::new("stacks/net", "net", ["prod"]),
        run_kind::PLAN,
    )
}

/// Evaluates `files` at hard-mandatory against `plan` and compares `(policy, rule, message)`
/// triples and error fragments.
fn check(files: &[(&str, &str)], plan: Value, expected: &[(&str, &str, &str)], errors: &[&str]) {
    let set = set(Level::HardMandatory, files).expect("policy set loads");
    let verdict = evaluate(&[set], &plan, &tidemark());
    let found: Vec<(&str, &str, &str)> = verdict
        .results
        .iter()
        .map(|r| (r.policy.as_str(), r.rule.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(found, expected, "{verdict:#?}");
    assert_eq!(verdict.errors.len(), errors.len(), "{:#?}", verdict.errors);
    for (error, fragment) in verdict.errors.iter().zip(errors) {
        assert!(error.contains(fragment), "{error:?} lacks {fragment:?}");
    }
    let blocked = verdict.results.iter().any(|r| r.rule.is_failure()) || !errors.is_empty();
    assert_eq!(verdict.passed, !blocked, "{verdict:#?}");
}

/// Loads `files` and expects the error's text to be exactly `expected`.
fn check_load_error(files: &[(&str, &str)], expected: &str) {
    match set(Level::HardMandatory, files) {
        Ok(set) => panic!("{set:?} loaded, expected {expected}"),
        Err(error) => assert_eq!(error.to_string(), expected),
    }
}

#[test]
fn string_messages_from_a_v1_set_rule() {
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\ndeny contains msg if {\n  some r in input.resource_changes\n  msg := sprintf(\"no %s\", [r.address])\n}\n",
        )],
        json!({"resource_changes": [{"address": "x.b"}, {"address": "x.a"}]}),
        &[("a", "deny", "no x.a"), ("a", "deny", "no x.b")],
        &[],
    );
}

#[test]
fn object_messages_with_msg_from_a_v0_rule() {
    check(
        &[(
            "a.rego",
            "package main\n\ndeny[{\"msg\": msg, \"details\": {\"n\": 1}}] {\n  input.bad\n  msg := \"bad input\"\n}\n",
        )],
        json!({"bad": true}),
        &[("main", "deny", "bad input")],
        &[],
    );
}

#[test]
fn array_messages_and_every_rule_in_every_package() {
    check(
        &[
            ("a.rego", "package a\ndeny := [\"one\", \"two\"]\n"),
            (
                "nested/b.rego",
                "package org.b\nimport rego.v1\nwarn contains \"careful\" if true\nviolation contains {\"msg\": \"v\"} if input.x == 1\n",
            ),
        ],
        json!({"x": 1}),
        &[
            ("a", "deny", "one"),
            ("a", "deny", "two"),
            ("org.b", "violation", "v"),
            ("org.b", "warn", "careful"),
        ],
        &[],
    );
}

#[test]
fn undefined_rules_and_warnings_pass() {
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\ndeny contains \"d\" if input.nope\nwarn contains \"w\" if true\n",
        )],
        json!({}),
        &[("a", "warn", "w")],
        &[],
    );
}

#[test]
fn messages_of_the_wrong_shape_are_errors_not_passes() {
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\ndeny contains {\"message\": \"typo\"} if true\n",
        )],
        json!({}),
        &[],
        &["pol/a.rego:3: rule `deny` in package a produced an object without a string `msg`"],
    );
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\ndeny contains 42 if true\n",
        )],
        json!({}),
        &[],
        &["neither a string nor an object with `msg`: 42"],
    );
}

#[test]
fn a_boolean_deny_found_only_at_evaluation_names_file_and_line() {
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\nbad := input.x == 1\n\ndeny := bad\n",
        )],
        json!({"x": 1}),
        &[],
        &[
            "pol: pol/a.rego:5: rule `deny` in package a must produce a set of messages, but produced a boolean (true)",
        ],
    );
}

#[test]
fn an_evaluation_error_blocks_with_the_file() {
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\nx := 1 if input.a\nx := 2 if input.b\ndeny contains \"no\" if x == 3\n",
        )],
        json!({"a": true, "b": true}),
        &[],
        &["pol: pol/a.rego:5: pol/a.rego:4:1: rule conflicts with rule at pol/a.rego:3:1"],
    );
}

#[test]
fn policy_sets_can_be_shared_between_worker_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    assert_send_sync::<Verdict>();
}

#[test]
fn boolean_and_scalar_rules_are_rejected_at_load() {
    check_load_error(
        &[(
            "a.rego",
            "package a\nimport rego.v1\n\ndeny if {\n  input.x\n}\n",
        )],
        "pol/a.rego:4: rule `deny` must be a set of messages (`deny contains msg if { ... }`), not a boolean",
    );
    check_load_error(
        &[
            ("ok.rego", "package ok\ndeny[m] { m := \"x\"; input.y }"),
            ("b.rego", "package b\nwarn = \"w\"\n"),
        ],
        "pol/b.rego:2: rule `warn` must be a set of messages (`warn contains msg if { ... }`), not a string",
    );
    check_load_error(
        &[("c.rego", "package c\ndefault violation := false\n")],
        "pol/c.rego:2: rule `violation` must be a set of messages (`violation contains msg if { ... }`), not a boolean",
    );
}

/// Found by the `policy` fuzz target: regorus 0.14.1 takes time exponential in the nesting of
/// `{` and `[` (a 30-byte file of 30 `{` parses for hours), so such files never reach it.
#[test]
fn brackets_nested_past_the_limit_are_refused_before_the_parser_sees_them() {
    let nested = |n: usize| format!("{}1{}", "{".repeat(n), "}".repeat(n));
    let at_limit = format!("package a\nimport rego.v1\nx := {}\n", nested(12));
    set(Level::Advisory, &[("ok.rego", &at_limit)]).expect("12 levels load");
    check_load_error(
        &[(
            "deep.rego",
            &format!("package a\nx := {}\n", "{".repeat(40)),
        )],
        "pol/deep.rego:2:18: syntax error: `{` and `[` nest more than 12 deep (Tidemark's limit: \
         the Rego parser takes time exponential in the depth)",
    );
}

/// Found by the `policy` fuzz target: regorus 0.14.1 does not refuse recursive functions, and
/// evaluating one overflowed the stack, which killed the process (the server, with it).
#[test]
fn recursive_functions_are_refused_at_load() {
    check_load_error(
        &[(
            "rec.rego",
            "package a\nimport rego.v1\n\nf(v) := f(v)\n\ndeny contains \"m\" if f(1)\n",
        )],
        "pol/rec.rego: function `f` (line 4) calls itself: Rego does not allow recursion, and the \
         policy engine would overflow its stack evaluating it",
    );
}

/// Recursion through another file (and package) overflowed the stack the same way; OPA refuses
/// it at compile time.
#[test]
fn recursion_across_files_is_refused_at_load() {
    check_load_error(
        &[
            (
                "a.rego",
                "package main\nimport rego.v1\nimport data.helpers as h\n\ndeny contains m if { m := h.g(1) }\nf(x) := h.g(x)\n",
            ),
            (
                "lib/h.rego",
                "package helpers\nimport rego.v1\nimport data.main\ng(x) := main.f(x)\n",
            ),
        ],
        "pol/a.rego: function `f` (line 6) calls itself through `data.helpers.g` (pol/lib/h.rego:4): \
         Rego does not allow recursion, and the policy engine would overflow its stack evaluating it",
    );
    // A test file that closes the loop is refused too: tests are evaluated.
    check_load_error(
        &[
            (
                "a.rego",
                "package a\nimport rego.v1\nf(x) := data.a_test.g(x)\ndeny contains \"m\" if false\n",
            ),
            (
                "a_test.rego",
                "package a_test\nimport rego.v1\ng(x) := data.a.f(x)\ntest_f if data.a.f(1)\n",
            ),
        ],
        "pol/a.rego: function `f` (line 3) calls itself through `data.a_test.g` (pol/a_test.rego:3): \
         Rego does not allow recursion, and the policy engine would overflow its stack evaluating it",
    );
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let error = set(
        Level::Advisory,
        &[(
            "broken.rego",
            "package a\nimport rego.v1\n\ndeny contains msg if {\n  msg := \"x\n}\n",
        )],
    )
    .expect_err("syntax error");
    match &error {
        PolicyError::Syntax { file, line, .. } => {
            assert_eq!((file.as_str(), *line), ("pol/broken.rego", 5), "{error}")
        }
        other => panic!("not a syntax error: {other}"),
    }
    assert!(
        error.to_string().starts_with("pol/broken.rego:5:"),
        "{error}"
    );

    // A broken v0 file gets the v0 parser's error, not a v1 complaint about the missing `if`
    // (regorus points at the rule's opening brace when the body does not close).
    let error = set(
        Level::Advisory,
        &[(
            "old.rego",
            "package a\ndeny[msg] {\n  msg := sprintf(\"%s\" [input.x])\n}\n",
        )],
    )
    .expect_err("syntax error");
    assert_eq!(
        error.to_string(),
        "pol/old.rego:2:11: syntax error: expecting }"
    );
}

#[test]
fn an_empty_set_and_a_set_of_only_tests_are_errors() {
    check_load_error(
        &[],
        "policy directory pol has no .rego policies (tests in *_test.rego do not count)",
    );
    check_load_error(
        &[("a_test.rego", "package a\ntest_x if true\n")],
        "policy directory pol has no .rego policies (tests in *_test.rego do not count)",
    );
}

#[test]
fn levels_decide_blocking_across_sets() {
    let deny = [(
        "a.rego",
        "package a\nimport rego.v1\ndeny contains \"no\" if true\n",
    )];
    let warn = [(
        "w.rego",
        "package w\nimport rego.v1\nwarn contains \"hm\" if true\n",
    )];
    let verdict_for = |levels: &[(Level, &[(&str, &str)])]| {
        let sets: Vec<_> = levels
            .iter()
            .map(|(level, files)| set(*level, files).expect("loads"))
            .collect();
        evaluate(&sets, &json!({}), &tidemark())
    };
    let verdict = verdict_for(&[(Level::Advisory, &deny), (Level::HardMandatory, &warn)]);
    assert_eq!((verdict.passed, verdict.blocking), (true, Blocking::None));
    assert_eq!(verdict.results.len(), 2);
    let verdict = verdict_for(&[(Level::SoftMandatory, &deny), (Level::Advisory, &warn)]);
    assert_eq!((verdict.passed, verdict.blocking), (false, Blocking::Soft));
    let verdict = verdict_for(&[(Level::SoftMandatory, &deny), (Level::HardMandatory, &deny)]);
    assert_eq!((verdict.passed, verdict.blocking), (false, Blocking::Hard));
    assert_eq!(verdict.failures().count(), 2);
    assert_eq!(
        verdict.results[0],
        PolicyResult {
            set: "pol".into(),
            policy: "a".into(),
            rule: Rule::Deny,
            level: Level::SoftMandatory,
            message: "no".into(),
        }
    );
    let verdict = verdict_for(&[]);
    assert_eq!((verdict.passed, verdict.blocking), (true, Blocking::None));
}

#[test]
fn policies_see_input_tidemark() {
    check(
        &[(
            "a.rego",
            "package a\nimport rego.v1\nwarn contains sprintf(\"%s %s %v\", [input.tidemark.stack.name, input.tidemark.run_kind, input.tidemark.stack.tags]) if true\n",
        )],
        json!({"format_version": "0.2"}),
        &[("a", "warn", "net plan [\"prod\"]")],
        &[],
    );
}

#[test]
fn test_files_are_not_evaluated_but_run_as_unit_tests() {
    let set = set(
        Level::HardMandatory,
        &[
            ("a.rego", "package a\nimport rego.v1\ndeny contains \"del\" if input.del\n"),
            (
                "a_test.rego",
                "package a_test\nimport rego.v1\nimport data.a\ndeny contains \"never evaluated\" if true\n\
                 test_denies if {\n  a.deny == {\"del\"} with input as {\"del\": true}\n}\n\
                 test_wrong if {\n  a.deny == {\"del\"} with input as {}\n}\n\
                 test_errors if {\n  x := 1 / 0\n  x == 1\n}\n\
                 todo_test_later if false\n",
            ),
        ],
    )
    .expect("loads");
    let verdict = evaluate(std::slice::from_ref(&set), &json!({}), &tidemark());
    assert!(verdict.passed && verdict.results.is_empty(), "{verdict:#?}");
    let report = set.run_unit_tests().expect("tests parse");
    let outcomes: Vec<_> = report
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.passed))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("test_denies", true),
            ("test_wrong", false),
            ("test_errors", false)
        ]
    );
    assert_eq!(report.tests[1].failure.as_deref(), Some("undefined"));
    assert!(!report.passed);
}

#[test]
fn shipped_policies_load_and_their_unit_tests_pass() {
    let set = PolicySet::shipped(Level::HardMandatory).expect("shipped policies load");
    let rules: Vec<_> = set.rules().collect();
    assert_eq!(
        rules,
        [
            ("tidemark.destroy", Rule::Deny),
            ("tidemark.max_deletions", Rule::Deny),
            ("tidemark.remediation", Rule::Deny),
            ("tidemark.replace", Rule::Warn),
        ]
    );
    let report = set.run_unit_tests().expect("tests parse");
    let failed: Vec<_> = report.tests.iter().filter(|t| !t.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(report.tests.len() >= 20, "{}", report.tests.len());
}

#[test]
fn a_builtin_this_build_lacks_is_an_error_not_a_pass() {
    // regorus is built without its `crypto` feature (see Cargo.toml): a policy calling
    // `crypto.sha256` is refused when it loads, naming the call.
    let source = "package a\nimport rego.v1\ndeny contains \"x\" if crypto.sha256(\"a\") == \"\"\n";
    let err = set(Level::HardMandatory, &[("a.rego", source)]).expect_err("refused at load");
    assert!(
        err.to_string()
            .starts_with("pol/a.rego:3: `crypto.sha256` is not a builtin Tidemark has"),
        "{err}"
    );
    // A call the load-time scan does not judge (outside OPA's builtin namespaces) still
    // blocks at evaluation instead of producing no messages.
    let source = "package a\nimport rego.v1\ndeny contains \"x\" if lib.missing(\"a\") == \"\"\n";
    check(
        &[("a.rego", source)],
        json!({}),
        &[],
        &["could not find function lib.missing"],
    );
    let verdict = evaluate(
        &[set(Level::HardMandatory, &[("a.rego", source)]).expect("loads")],
        &json!({}),
        &tidemark(),
    );
    assert!(
        verdict.errors[0].starts_with("pol: pol/a.rego:3"),
        "{:?}",
        verdict.errors
    );
}

#[test]
fn a_broken_test_file_is_an_error_naming_it_but_does_not_stop_evaluation() {
    let set = set(
        Level::HardMandatory,
        &[
            (
                "a.rego",
                "package a\nimport rego.v1\nwarn contains \"w\" if true\n",
            ),
            (
                "a_test.rego",
                "package a_test\nimport rego.v1\ntest_x if {\n  1 ==\n}\n",
            ),
        ],
    )
    .expect("policies load without their tests");
    assert!(evaluate(std::slice::from_ref(&set), &json!({}), &tidemark()).passed);
    let error = set.run_unit_tests().expect_err("broken test file");
    assert!(error.to_string().starts_with("pol/a_test.rego:"), "{error}");
}
