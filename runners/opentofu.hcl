# How Tidemark runs OpenTofu. Every step runs in the sandbox: only the workspace is writable,
# the binary and the provider mirror named by the CLI config are bound read-only, the
# environment holds only what is listed here plus the stack's variables and secrets.
#
# Override any attribute from the server config (or a runners directory) with a block of the
# same name, e.g. `runner "opentofu" { sandbox { network = true } }` for stacks whose providers
# call cloud APIs. `{plan_file}` is replaced by the path of the run's plan file.
runner "opentofu" {
  binary = "tofu"

  # Copied from Tidemark's own environment when set there; nothing else is.
  env_allow = [
    "TF_CLI_CONFIG_FILE",
    "TF_LOG",
    "TF_REGISTRY_CLIENT_TIMEOUT",
    "SSL_CERT_FILE",
    "HTTPS_PROXY",
    "NO_PROXY",
  ]
  env = {
    CHECKPOINT_DISABLE = "1"
    TF_IN_AUTOMATION   = "1"
    TF_INPUT           = "0"
  }
  cli_config_env = "TF_CLI_CONFIG_FILE"

  step "init" {
    args = ["init", "-input=false", "-no-color"]
  }
  step "version" {
    args    = ["version", "-json"]
    timeout = "60s"
  }
  step "plan" {
    args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", "-out={plan_file}"]
    # 2 means "changes present" but also "the Go runtime crashed": changes are decided from
    # `show -json`, never from this code alone.
    exit_codes = { "0" = "ok", "2" = "changes" }
  }
  step "show" {
    args = ["show", "-json", "-no-color", "{plan_file}"]
  }
  step "apply" {
    args = ["apply", "-input=false", "-no-color", "-auto-approve", "{plan_file}"]
  }
  step "state_pull" {
    args = ["state", "pull"]
  }

  sandbox {
    # A read-only view of the host's system: /usr (and the merged-/usr links /bin, /lib, ...),
    # certificates, /etc/alternatives and a generated /etc/passwd naming only the run's user,
    # so local-exec, the external data source and providers that call aws, kubectl or jq work.
    # The rest of /etc, home directories and Tidemark's data dir stay invisible.
    system            = true
    network           = false
    address_space_mib = 4096 # like terraform, tofu needs at least 768
    cpu_seconds       = 1800
    file_size_mib     = 4096
    open_files        = 4096
    output_cap_kib    = 2048
    timeout           = "30m"
  }
}
