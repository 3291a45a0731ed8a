#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (bubblewrap, terraform 1.0.3 and the
# null provider, the GitHub mock, Chromium), points the PostgreSQL tests at a fresh database when a server is reachable
# (always in CI), and runs every test.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"

bash scripts/install-deps.sh
export TIDEMARK_TOOLS_DIR="${TIDEMARK_TOOLS_DIR:-$target/tools}"
bash scripts/install-terraform.sh "$TIDEMARK_TOOLS_DIR" >/dev/null
# GitHub's OpenAPI description served by Prism, for the pull-request tests.
export TIDEMARK_GITHUB_MOCK_DIR="${TIDEMARK_GITHUB_MOCK_DIR:-$target/github-mock}"
bash scripts/install-github-mock.sh "$TIDEMARK_GITHUB_MOCK_DIR"
# Debian's Chromium and ChromeDriver, for the dashboard's browser test.
bash scripts/install-browser.sh

# A fresh PostgreSQL database for this run, dropped on exit. The tests create one database
# per test inside the server this URL names.
pg_admin="${TIDEMARK_TEST_POSTGRES_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
if [ -z "${TIDEMARK_TEST_POSTGRES_URL:-}" ]; then
  if command -v psql >/dev/null 2>&1 && psql "$pg_admin" -qtAc 'select 1' >/dev/null 2>&1; then
    db="tidemark_run_$$"
    psql "$pg_admin" -qc "CREATE DATABASE $db" >/dev/null
    trap 'psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
    export TIDEMARK_TEST_POSTGRES_URL="${pg_admin%/*}/$db"
  elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI=true but no PostgreSQL answers at $pg_admin" >&2
    exit 1
  else
    echo "test.sh: no PostgreSQL at $pg_admin: the PostgreSQL tests will be skipped" >&2
  fi
fi

# Unit and integration tests (the crate has no doc tests). The last line sums every binary's
# results, so the run closes on what it counted rather than on an empty test binary.
log=$(mktemp)
status=0
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
