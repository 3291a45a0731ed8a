//! Detection on layouts taken from real repositories (issue 14): heredocs holding lines that
//! start with their marker, self-calling modules, symlinks, Terragrunt expressions and parents.

use super::*;

#[test]
fn heredoc_line_starting_with_its_marker_is_content() {
    let main = "resource \"null_resource\" \"x\" {\n  provisioner \"local-exec\" {\n    command = <<EOF\necho \"\nEOF\" >> /tmp/out\nEOF\n  }\n}\n\nmodule \"m\" {\n  source = \"../modules/m\"\n}\n";
    check(
        &[
            ("app/main.tf", main),
            ("modules/m/main.tf", ""),
        ],
        &[Write("modules/m/main.tf", "# c\n")],
        "app: module modules/m/main.tf via modules/m",
    );
}

#[test]
fn indented_heredoc_forms_end_only_at_their_marker_line() {
    let main = "locals {\n  a = <<-EOT\n    EOT2 is not the end\n    EOT-ish\n    EOT\" >> ${path.module}/out\n    EOT\n  b = <<EOT\nEOTX\nEOT\n}\n\nmodule \"m\" {\n  source = \"../modules/m\"\n}\n";
    check(
        &[
            ("app/main.tf", main),
            ("modules/m/main.tf", ""),
        ],
        &[Write("modules/m/main.tf", "# c\n")],
        "app: module modules/m/main.tf via modules/m",
    );
}

#[test]
fn module_calling_itself_stays_a_stack_with_an_error() {
    let main = "resource \"null_resource\" \"x\" {}\n\nmodule \"again\" {\n  source = \"./\"\n}\n";
    check(
        &[("app/main.tf", main)],
        &[Write("app/extra.tf", "# c\n")],
        "app: file app/extra.tf
         ! app app/main.tf:4 module source is the module's own directory (it calls itself)",
    );
    check(
        &[
            ("a/stack.hcl", STACK),
            ("a/main.tf", "module \"me\" {\n  source = \"../a\"\n}\n"),
        ],
        &[Write("a/main.tf", "module \"me\" {\n  source = \"../a/\"\n}\n")],
        "a: file a/main.tf
         ! a a/main.tf:2 module source is the module's own directory (it calls itself)",
    );
}
