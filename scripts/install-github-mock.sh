#!/usr/bin/env bash
# Installs the GitHub mock the pull-request tests run against, from the npm registry, pinned by
# scripts/github-mock/package-lock.json: GitHub's OpenAPI description (@octokit/openapi),
# Stoplight Prism to serve it as a validating mock (@stoplight/prism-cli 5.14.2, the last that
# runs on Node 20), and GitHub's documented webhook payloads (@octokit/webhooks-examples).
# Usage: install-github-mock.sh DIR. Quick when DIR already holds this lock file's install.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="${1:?usage: install-github-mock.sh DIR}"
lock="$root/scripts/github-mock/package-lock.json"
stamp="$dir/.installed-$(sha256sum "$lock" | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-github-mock.sh: npm is needed (Node.js 20 or later)" >&2
  exit 1
fi
mkdir -p "$dir"
cp "$root/scripts/github-mock/package.json" "$lock" "$dir/"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
test -f "$dir/node_modules/@octokit/openapi/generated/api.github.com.json"
test -x "$dir/node_modules/.bin/prism"
rm -f "$dir"/.installed-*
touch "$stamp"
