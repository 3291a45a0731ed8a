//! `.tf.json` and `.tofu.json` files (issue 14, item 8): module sources, backends and
//! `terraform_remote_state` in JSON syntax give the same edges as their HCL twins.

use super::*;

#[test]
fn json_module_source_is_traced_like_hcl() {
    let main =
        "{\n  \"module\": {\n    \"m\": {\n      \"source\": \"../modules/m\"\n    }\n  }\n}\n";
    check(
        &[("app/main.tf.json", main), ("modules/m/main.tf", "")],
        &[Write("modules/m/main.tf", "# c\n")],
        "app: module modules/m/main.tf via modules/m",
    );
}

#[test]
fn json_module_blocks_as_arrays_and_path_module_templates() {
    let main = r#"{"module": [{"a": {"source": "${path.module}/../modules/a"}}, {"b": [{"source": "../modules/b"}]}]}"#;
    check(
        &[
            ("app/main.tofu.json", main),
            ("modules/a/main.tf", ""),
            ("modules/b/main.tf.json", "{}"),
        ],
        &[
            Write("modules/a/main.tf", "# c\n"),
            Write("modules/b/main.tf.json", "{\"locals\": {}}"),
        ],
        "app: module modules/a/main.tf via modules/a, module modules/b/main.tf.json via modules/b",
    );
}

#[test]
fn json_backend_and_remote_state_give_the_edge() {
    let writer = r#"{"terraform": {"backend": {"s3": {"bucket": "b", "key": "net/state"}}}}"#;
    let reader = r#"{"data": {"terraform_remote_state": {"net": {"backend": "s3", "config": {"bucket": "b", "key": "net/state"}}}}}"#;
    check(
        &[
            ("net/stack.hcl", STACK),
            ("net/backend.tf.json", writer),
            ("app/stack.hcl", STACK),
            ("app/main.tf.json", reader),
        ],
        &[Write("net/main.tf", "# c\n")],
        "net: file net/main.tf
         app (indirect): dependency net",
    );
}

#[test]
fn json_and_hcl_twins_join_by_remote_state() {
    let writer =
        "terraform {\n  backend \"s3\" {\n    bucket = \"b\"\n    key    = \"net\"\n  }\n}\n";
    let reader = r#"{"data": [{"terraform_remote_state": {"net": [{"backend": "s3", "config": {"bucket": "b", "key": "net"}}]}}]}"#;
    check(
        &[
            ("net/stack.hcl", STACK),
            ("net/main.tf", writer),
            ("app/stack.hcl", STACK),
            ("app/main.tf.json", reader),
        ],
        &[Write("net/main.tf", &format!("{writer}# c\n"))],
        "net: file net/main.tf
         app (indirect): dependency net",
    );
}

#[test]
fn json_only_directories_are_discovered_and_their_modules_are_not_stacks() {
    let main = r#"{"module": {"m": {"source": "../modules/m"}}}"#;
    check(
        &[("app/cdk.tf.json", main), ("modules/m/main.tf.json", "{}")],
        &[Write("modules/m/main.tf.json", "{\"output\": {}}")],
        "app: module modules/m/main.tf.json via modules/m",
    );
}

#[test]
fn broken_json_is_reported_with_its_file() {
    check(
        &[("app/stack.hcl", STACK), ("app/main.tf.json", "{}")],
        &[Write("app/main.tf.json", "{\"module\": ")],
        "app: file app/main.tf.json
         ! app app/main.tf.json json: EOF while parsing a value at line 1 column 11",
    );
}

#[test]
fn json_module_errors_name_the_json_line() {
    let main = "{\n  \"module\": {\n    \"self\": {\n      \"source\": \"./\"\n    }\n  }\n}\n";
    check(
        &[("app/main.tf.json", main)],
        &[Write("app/x.tf", "")],
        "app: file app/x.tf
         ! app app/main.tf.json:4 module source is the module's own directory (it calls itself)",
    );
}

#[test]
fn json_file_reads_are_inputs_with_the_json_line() {
    let module = "{\n  \"locals\": {\n    \"policy\": \"${file(\\\"${path.module}/policy.json\\\")}\"\n  }\n}\n";
    check(
        &[
            (
                "app/main.tf",
                "module \"m\" {\n  source = \"../modules/m\"\n}\n",
            ),
            ("modules/m/main.tf.json", module),
            ("modules/m/policy.json", "{}"),
        ],
        &[Write("modules/m/policy.json", "{\"a\": 1}")],
        "app: file modules/m/policy.json read by modules/m/main.tf.json:3",
    );
}
