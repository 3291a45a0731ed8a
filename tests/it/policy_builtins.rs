//! The OPA builtins that real conftest policies use, through `tidemark policy test`: each
//! answers what OPA answers (the values below are OPA's documented results, worked out by
//! hand), and a policy that calls a builtin Tidemark lacks fails with a message naming it, in
//! the JSON output's `errors`, never passing silently.

use serde_json::{Value, json};

use crate::policy::{plans, tidemark, write_json};

/// One `warn` per builtin, each printing what the builtin returned.
const BUILTINS: &str = r#"package builtins
import rego.v1

checks := {
	"regex.match": regex.match(`^null_[a-z]+$`, "null_resource"),
	"regex.find_n": regex.find_n(`[0-9]+`, "a1b22c333", 2),
	"regex.replace": regex.replace("v1.2.3", `\.`, "-"),
	"glob.match": glob.match("aws_*.prod.*", ["."], "aws_s3.prod.logs"),
	"glob.match dot": glob.match("aws_*", ["."], "aws_s3.prod"),
	"semver.compare": semver.compare("1.10.0", "1.9.3"),
	"semver.is_valid": semver.is_valid("1.0.3-rc.1"),
	"units.parse_bytes": units.parse_bytes("10KiB"),
	"units.parse": units.parse("1.5k"),
	"base64.encode": base64.encode("tidemark"),
	"base64.decode": base64.decode("dGlkZW1hcms="),
	"base64url.encode": base64url.encode("a?b>"),
	"hex.encode": hex.encode("tm"),
	"urlquery.encode": urlquery.encode("a b&c"),
	"urlquery.encode_object": urlquery.encode_object({"k": "v w"}),
	"yaml.marshal": yaml.marshal({"a": 1}),
	"yaml.unmarshal": yaml.unmarshal("b: [1, 2]"),
	"json.marshal": json.marshal({"a": [1, 2]}),
	"json.unmarshal": json.unmarshal(`{"x": true}`),
	"time.parse_rfc3339_ns": time.parse_rfc3339_ns("2026-01-02T03:04:05Z"),
	"time.date": time.date(1767323045000000000),
	"time.weekday": time.weekday(1767323045000000000),
	"time.add_date": time.add_date(1767323045000000000, 0, 1, 0),
	"net.cidr_contains": net.cidr_contains("10.0.0.0/8", "10.1.2.3"),
	"strings.replace_n": strings.replace_n({"a": "1"}, "aaa"),
	"object.get": object.get({"a": {"b": 2}}, ["a", "b"], 0),
}

warn contains msg if {
	some name, value in checks
	msg := sprintf("%s = %v", [name, value])
}
"#;

#[test]
fn the_builtins_conftest_policies_use_answer_as_opa_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(policies.join("builtins.rego"), BUILTINS).expect("write");
    let plan = write_json(dir.path(), "plan.json", &plans().create);
    let (code, json, stderr) = tidemark(&[
        "policy",
        "test",
        "--plan",
        plan.to_str().expect("utf-8"),
        "--policies",
        policies.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{json:#}");
    assert_eq!(json["errors"], json!([]), "{json:#}");
    let mut got: Vec<String> = json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["message"].as_str().expect("message").to_string())
        .collect();
    got.sort();
    // OPA's answers, from its builtin reference.
    let mut want: Vec<&str> = vec![
        "regex.match = true",
        r#"regex.find_n = ["1", "22"]"#,
        "regex.replace = v1-2-3",
        "glob.match = true",
        "glob.match dot = false",
        "semver.compare = 1",
        "semver.is_valid = true",
        "units.parse_bytes = 10240",
        "units.parse = 1500",
        "base64.encode = dGlkZW1hcms=",
        "base64.decode = tidemark",
        "base64url.encode = YT9iPg==",
        "hex.encode = 746d",
        "urlquery.encode = a+b%26c",
        "urlquery.encode_object = k=v+w",
        "yaml.marshal = a: 1\n",
        r#"yaml.unmarshal = {"b": [1, 2]}"#,
        r#"json.marshal = {"a":[1,2]}"#,
        r#"json.unmarshal = {"x": true}"#,
        "time.parse_rfc3339_ns = 1767323045000000000",
        "time.date = [2026, 1, 2]",
        "time.weekday = Friday",
        "time.add_date = 1770001445000000000",
        "net.cidr_contains = true",
        "strings.replace_n = 111",
        "object.get = 2",
    ];
    want.sort();
    let got: Vec<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(got, want);
}

#[test]
fn a_builtin_tidemark_lacks_fails_by_name_never_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    // crypto.* and http.send are left out of the build: a policy must not call out, and
    // nothing here needs certificates parsed.
    std::fs::write(
        policies.join("lacking.rego"),
        "package lacking\nimport rego.v1\n\ndeny contains msg if {\n  crypto.sha256(\"x\") == \"\"\n  msg := \"never\"\n}\n",
    )
    .expect("write");
    let plan = write_json(dir.path(), "plan.json", &plans().create);
    let (code, json, stderr) = tidemark(&[
        "policy",
        "test",
        "--plan",
        plan.to_str().expect("utf-8"),
        "--policies",
        policies.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(1), "{stderr}\n{json:#}");
    assert_eq!(json["passed"], false, "{json:#}");
    let errors: Vec<&str> = json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("lacking.rego:5: `crypto.sha256` is not a builtin Tidemark has")),
        "{errors:?}"
    );
}
