//! Files read by expressions (issue 14, item 10): `file()`, `templatefile()`, `fileset()`,
//! strings naming `${path.module}/...` paths, and Terragrunt's file functions make the files
//! they name inputs of the stacks reading them, with the expression's file and line.

use super::*;

const CALL_M: &str = "module \"m\" {\n  source = \"../modules/m\"\n}\n";

#[test]
fn a_file_read_at_the_stack_names_the_expression() {
    check(
        &[
            ("app/stack.hcl", STACK),
            (
                "app/main.tf",
                "locals {\n  policy = file(\"${path.module}/policy.json\")\n}\n",
            ),
            ("app/policy.json", "{}"),
        ],
        &[Write("app/policy.json", "{\"a\": 1}")],
        "app: file app/policy.json read by app/main.tf:2",
    );
}

#[test]
fn templatefile_behind_a_local_module_affects_every_stack_calling_it() {
    let module = "resource \"aws_instance\" \"x\" {\n  user_data = templatefile(\"${path.module}/templates/init.tpl\", { name = \"x\" })\n}\n";
    let files = [
        ("app/main.tf", CALL_M),
        ("web/main.tf", CALL_M),
        ("modules/m/main.tf", module),
        ("modules/m/templates/init.tpl", "#!/bin/sh\n"),
        ("modules/m/templates/unused.tpl", "#!/bin/sh\n"),
        ("modules/m/notes.txt", "x"),
    ];
    check(
        &files,
        &[Write("modules/m/templates/init.tpl", "#!/bin/sh\necho\n")],
        "app: file modules/m/templates/init.tpl read by modules/m/main.tf:2
         web: file modules/m/templates/init.tpl read by modules/m/main.tf:2",
    );
    // Files of the module's directory that nothing reads are not inputs (item 6).
    check(
        &files,
        &[
            Write("modules/m/notes.txt", "y"),
            Write("modules/m/templates/unused.tpl", "y"),
        ],
        "",
    );
}

#[test]
fn fileset_reads_what_its_pattern_matches() {
    let module = "resource \"aws_iam_policy\" \"p\" {\n  for_each = fileset(path.module, \"policies/*.json\")\n  policy   = file(\"${path.module}/${each.value}\")\n}\n";
    check(
        &[
            ("app/main.tf", CALL_M),
            ("modules/m/main.tf", module),
            ("modules/m/policies/a.json", "{}"),
        ],
        &[
            Write("modules/m/policies/a.json", "{\"a\": 1}"),
            Write("modules/m/policies/b.json", "{}"),
            Write("modules/m/policies/old/c.json", "{}"),
        ],
        // The `file()` of a computed name reads below the module's directory, conservatively.
        "app: file modules/m/policies/a.json read by modules/m/main.tf:2, \
              file modules/m/policies/a.json read by modules/m/main.tf:3, \
              file modules/m/policies/b.json read by modules/m/main.tf:2, \
              file modules/m/policies/b.json read by modules/m/main.tf:3, \
              file modules/m/policies/old/c.json read by modules/m/main.tf:3",
    );
}

#[test]
fn a_string_naming_a_path_below_path_module_is_read() {
    let module = "resource \"null_resource\" \"x\" {\n  provisioner \"local-exec\" {\n    command = \"${path.module}/scripts/init.sh --quiet\"\n  }\n}\n\ndata \"archive_file\" \"fn\" {\n  type        = \"zip\"\n  source_dir  = \"${path.module}/lambda\"\n  output_path = \"${path.module}/lambda.zip\"\n}\n";
    check(
        &[
            ("app/main.tf", CALL_M),
            ("modules/m/main.tf", module),
            ("modules/m/scripts/init.sh", "#!/bin/sh\n"),
            ("modules/m/scripts/other.sh", "#!/bin/sh\n"),
            ("modules/m/lambda/handler.py", "x = 1\n"),
        ],
        &[
            Write("modules/m/scripts/init.sh", "#!/bin/sh\necho\n"),
            Write("modules/m/scripts/other.sh", "#!/bin/sh\necho\n"),
            Write("modules/m/lambda/lib/util.py", "y = 2\n"),
        ],
        "app: file modules/m/lambda/lib/util.py read by modules/m/main.tf:9, \
              file modules/m/scripts/init.sh read by modules/m/main.tf:3",
    );
}

#[test]
fn relative_file_paths_are_the_root_modules() {
    // Terraform reads a relative path from its working directory: the stack, not the module.
    let module = "locals {\n  config = jsondecode(file(\"config/app.json\"))\n}\n";
    check(
        &[
            ("a/main.tf", CALL_M),
            ("b/main.tf", CALL_M),
            ("modules/m/main.tf", module),
            ("a/config/app.json", "{}"),
            ("b/config/app.json", "{}"),
            ("modules/m/config/app.json", "{}"),
        ],
        &[
            Write("a/config/app.json", "{\"a\": 1}"),
            Write("modules/m/config/app.json", "{\"a\": 1}"),
        ],
        "a: file a/config/app.json read by modules/m/main.tf:2",
    );
}

#[test]
fn a_path_computed_from_variables_is_an_unresolved_input() {
    let module = "locals {\n  policy = file(var.policy_path)\n  tpl    = templatefile(\"${path.module}/tpl/${var.kind}.tpl\", {})\n}\n";
    let mut t = TestRepo::new();
    t.write("app/main.tf", CALL_M);
    t.write("modules/m/main.tf", module);
    let head = t.commit();
    let found = discover(&t.repo, head, None).expect("discover");
    assert_eq!(
        found.stacks[0].unresolved_inputs,
        [UnresolvedInput {
            file: "modules/m/main.tf".into(),
            line: 2,
            expression: "file(var.policy_path)".into(),
        }]
    );
    let json = serde_json::to_value(&found.stacks[0]).expect("json");
    assert_eq!(
        json["unresolved_inputs"][0]["expression"],
        "file(var.policy_path)"
    );
    // The known part of a computed path is read, below its directory.
    check(
        &[("app/main.tf", CALL_M), ("modules/m/main.tf", module)],
        &[Write("modules/m/tpl/web.tpl", "x")],
        "app: file modules/m/tpl/web.tpl read by modules/m/main.tf:3",
    );
}

#[test]
fn a_path_escaping_the_repository_is_an_error() {
    check(
        &[(
            "app/main.tf",
            "locals {\n  x = file(\"${path.module}/../../secret\")\n}\n",
        )],
        &[Write("app/extra.tf", "")],
        "app: file app/extra.tf
         ! app app/main.tf:2 file path \"/app/../../secret\" escapes the repository",
    );
}

const ENV_UNIT: &str = "include \"root\" {\n  path = find_in_parent_folders()\n}\n\nlocals {\n  env = yamldecode(file(find_in_parent_folders(\"env.yaml\")))\n}\n\nterraform {\n  source = \"../../../modules//app\"\n}\n";

#[test]
fn terragrunt_units_read_their_own_environments_yaml() {
    let files = [
        (
            "live/terragrunt.hcl",
            "remote_state {\n  backend = \"s3\"\n}\n",
        ),
        ("live/qa/env.yaml", "env: qa\n"),
        ("live/prod/env.yaml", "env: prod\n"),
        ("live/qa/app/terragrunt.hcl", ENV_UNIT),
        ("live/qa/db/terragrunt.hcl", ENV_UNIT),
        ("live/prod/app/terragrunt.hcl", ENV_UNIT),
        ("modules/app/main.tf", ""),
    ];
    check(
        &files,
        &[Write("live/qa/env.yaml", "env: qa\nsize: 2\n")],
        "live/qa/app: file live/qa/env.yaml read by live/qa/app/terragrunt.hcl:6
         live/qa/db: file live/qa/env.yaml read by live/qa/db/terragrunt.hcl:6",
    );
}

#[test]
fn terragrunt_reads_in_an_included_file_are_each_units() {
    // The parent config reads `env.yaml` and a tfvars file from each including unit's place.
    let root = "remote_state {\n  backend = \"s3\"\n}\n\ninputs = merge(\n  yamldecode(file(find_in_parent_folders(\"env.yaml\"))),\n  read_tfvars_file(\"${get_terragrunt_dir()}/../common.tfvars\")\n)\n";
    let unit = "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\n\nterraform {\n  source = \"../../../modules//app\"\n}\n";
    let files = [
        ("live/root.hcl", root),
        ("live/qa/env.yaml", "env: qa\n"),
        ("live/qa/common.tfvars", "a = 1\n"),
        ("live/prod/env.yaml", "env: prod\n"),
        ("live/prod/common.tfvars", "a = 1\n"),
        ("live/qa/app/terragrunt.hcl", unit),
        ("live/prod/app/terragrunt.hcl", unit),
        ("modules/app/main.tf", ""),
    ];
    check(
        &files,
        &[
            Write("live/prod/env.yaml", "env: prod\nsize: 3\n"),
            Write("live/qa/common.tfvars", "a = 2\n"),
        ],
        "live/prod/app: file live/prod/env.yaml read by live/root.hcl:6
         live/qa/app: file live/qa/common.tfvars read by live/root.hcl:7",
    );
}
