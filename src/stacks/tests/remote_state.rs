//! `terraform_remote_state` edges: a reader's backend and config matching a writer's, per
//! backend kind, and the default local state of a stack without a backend.

use super::*;

#[test]
fn repeated_object_key_is_accepted_and_last_value_wins() {
    let reader = "data \"terraform_remote_state\" \"net\" {\n  backend = \"s3\"\n  config = {\n    bucket = \"wrong\"\n    bucket = \"b\"\n    key = \"net\"\n  }\n}\n";
    check(
        &[
            ("net/stack.hcl", STACK),
            (
                "net/main.tf",
                "terraform {\n  backend \"s3\" {\n    bucket = \"b\"\n    key = \"net\"\n  }\n}\n",
            ),
            ("app/stack.hcl", STACK),
            ("app/main.tf", reader),
        ],
        &[Write(
            "net/main.tf",
            "terraform {\n  backend \"s3\" {\n    bucket = \"b\"\n    key = \"net\"\n  }\n}\n# c\n",
        )],
        "net: file net/main.tf
         app (indirect): dependency net",
    );
}

/// One backend block and the matching `terraform_remote_state` config, per backend kind.
fn remote_state_case(backend: &str, kind: &str, config: &str) {
    let writer = format!("terraform {{\n{backend}\n}}\n");
    let reader = format!(
        "data \"terraform_remote_state\" \"up\" {{\n  backend = \"{kind}\"\n  config = {config}\n}}\n"
    );
    check(
        &[
            ("up/stack.hcl", STACK),
            ("up/main.tf", &writer),
            ("other/stack.hcl", STACK),
            (
                "other/main.tf",
                "terraform {\n  backend \"s3\" {\n    bucket = \"zzz\"\n    key = \"zzz\"\n  }\n}\n",
            ),
            ("down/stack.hcl", STACK),
            ("down/main.tf", &reader),
        ],
        &[Write("up/vars.tf", "")],
        "up: file up/vars.tf
         down (indirect): dependency up",
    );
}

#[test]
fn remote_state_local_backend() {
    remote_state_case(
        "backend \"local\" {\n  path = \"state/up.tfstate\"\n}",
        "local",
        "{ path = \"${path.module}/../up/state/up.tfstate\" }",
    );
}

#[test]
fn remote_state_local_default_path_without_backend() {
    check(
        &[
            ("up/stack.hcl", STACK),
            ("up/main.tf", ""),
            ("down/stack.hcl", STACK),
            (
                "down/main.tf",
                "data \"terraform_remote_state\" \"up\" {\n  backend = \"local\"\n  config = {\n    path = \"../up/terraform.tfstate\"\n  }\n}\n",
            ),
            ("nomatch/stack.hcl", STACK),
            (
                "nomatch/main.tf",
                "data \"terraform_remote_state\" \"x\" {\n  backend = \"local\"\n  config = { path = \"../nowhere/terraform.tfstate\" }\n}\n",
            ),
        ],
        &[Write("up/main.tf", "# c\n")],
        "up: file up/main.tf
         down (indirect): dependency up",
    );
}

#[test]
fn remote_state_s3_backend() {
    remote_state_case(
        "backend \"s3\" {\n  bucket = \"states\"\n  key = \"up.tfstate\"\n  region = \"eu-west-1\"\n}",
        "s3",
        "{\n bucket = \"states\"\n key = \"up.tfstate\"\n region = \"us-east-1\"\n}",
    );
}

#[test]
fn remote_state_gcs_backend() {
    remote_state_case(
        "backend \"gcs\" {\n  bucket = \"states\"\n  prefix = \"up\"\n}",
        "gcs",
        "{\n bucket = \"states\"\n prefix = \"up\"\n}",
    );
}

#[test]
fn remote_state_azurerm_backend() {
    remote_state_case(
        "backend \"azurerm\" {\n  storage_account_name = \"acct\"\n  container_name = \"tf\"\n  key = \"up\"\n}",
        "azurerm",
        "{\n storage_account_name = \"acct\"\n container_name = \"tf\"\n key = \"up\"\n}",
    );
}

#[test]
fn remote_state_remote_backend() {
    remote_state_case(
        "backend \"remote\" {\n  organization = \"acme\"\n  workspaces {\n    name = \"up\"\n  }\n}",
        "remote",
        "{\n organization = \"acme\"\n workspaces = { name = \"up\" }\n}",
    );
}

#[test]
fn remote_state_cloud_block() {
    remote_state_case(
        "cloud {\n  organization = \"acme\"\n  workspaces {\n    name = \"up\"\n  }\n}",
        "remote",
        "{\n organization = \"acme\"\n workspaces = { name = \"up\" }\n}",
    );
}

#[test]
fn remote_state_with_other_config_is_no_edge() {
    check(
        &[
            ("up/stack.hcl", STACK),
            (
                "up/main.tf",
                "terraform {\n  backend \"gcs\" {\n    bucket = \"b\"\n    prefix = \"up\"\n  }\n}\n",
            ),
            ("down/stack.hcl", STACK),
            (
                "down/main.tf",
                "data \"terraform_remote_state\" \"up\" {\n  backend = \"gcs\"\n  config = { bucket = \"b\", prefix = \"other\" }\n}\n",
            ),
        ],
        &[Write("up/main.tf", "# c\n")],
        "up: file up/main.tf",
    );
}
