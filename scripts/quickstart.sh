#!/usr/bin/env bash
# Starts Tidemark on its embedded default: SQLite under .tidemark/, the example IaC repository
# from examples/infra served as a local git remote, and real plans with terraform 1.0.3
# (installed by scripts/install-terraform.sh when missing). Ctrl-C stops it.
#
# Then, in another terminal:  target/debug/tidemark runs --config .tidemark/tidemark.hcl
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="$root/.tidemark"
mkdir -p "$state"

bash scripts/install-deps.sh
eval "$(bash scripts/install-terraform.sh "$state/tools")"

# The example repository becomes a bare remote, as any git server would serve it.
remote="$state/example/infra.git"
if [ ! -d "$remote" ]; then
  work=$(mktemp -d)
  cp -R examples/infra/. "$work/"
  git -C "$work" init -q -b main
  git -C "$work" add -A
  git -C "$work" -c user.name=Tidemark -c user.email=quickstart@tidemark.invalid \
    commit -q -m "Example infrastructure"
  mkdir -p "$(dirname "$remote")"
  git clone -q --bare "$work" "$remote"
  rm -rf "$work"
  echo "quickstart: example repository at file://$remote" >&2
fi

config="$state/tidemark.hcl"
if [ ! -f "$config" ]; then
  cat > "$config" <<HCL
listen   = "127.0.0.1:8080"
database = "sqlite://$state/tidemark.db"
data_dir = "$state"

repo "example" {
  url           = "file://$remote"
  branch        = "main"
  poll_interval = "10s"
}
HCL
fi

cargo build --quiet --bin tidemark
bin="${CARGO_TARGET_DIR:-$root/target}/debug/tidemark"
echo "quickstart: dashboard on http://127.0.0.1:8080 ; runs: $bin runs --config $config" >&2
exec "$bin" serve --config "$config"
