#!/usr/bin/env bash
# A burst of signed webhook deliveries against the real binary: starts `tidemark serve` on
# SQLite with a one-stack repository and a webhook secret, then sends DELIVERIES (default
# 1000) signed `push` deliveries, each with its own X-GitHub-Delivery id, over CONNECTIONS
# (default 50) connections with wrk (installed from Debian's packages when missing), and
# prints wrk's latency percentiles, the answers by status and the service's RSS. (wrk runs
# for 20 s, but each thread stops after its share of the deliveries.)
#
#   bash scripts/bench-webhooks.sh [DELIVERIES] [CONNECTIONS]
#
# PROFILE=release builds an optimised binary first (about 13 minutes on 2 cores the first
# time); the default is the debug build the tests use.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deliveries="${1:-1000}"
connections="${2:-50}"
threads=2
profile="${PROFILE:-dev}"
target="${CARGO_TARGET_DIR:-$root/target}"

if ! command -v wrk >/dev/null 2>&1; then
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends wrk
fi
command -v openssl >/dev/null 2>&1 || { echo "bench-webhooks: openssl is needed to sign" >&2; exit 1; }

cargo build --quiet --profile "$profile" --bin tidemark
dir=debug
[ "$profile" = "release" ] && dir=release
bin="$target/$dir/tidemark"

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A bare remote with one stack; polling is slow, so each delivery's nudge is what polls.
git init -q -b main "$work/src"
mkdir -p "$work/src/stacks/app"
printf 'resource "null_resource" "this" {}\n' >"$work/src/stacks/app/main.tf"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@tidemark.invalid commit -q -m one
git clone -q --bare "$work/src" "$work/infra.git"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/tidemark.hcl" <<HCL
listen             = "127.0.0.1:$port"
database           = "sqlite://$work/tidemark.db"
data_dir           = "$work/data"
sandbox            = "none"
webhook_secret_env = "BENCH_WEBHOOK_SECRET"

repo "infra" {
  url           = "file://$work/infra.git"
  poll_interval = "1h"
}
HCL
export BENCH_WEBHOOK_SECRET=bench-secret
"$bin" serve --config "$work/tidemark.hcl" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }

body=$(printf '{"ref":"refs/heads/main","repository":{"full_name":"bench/infra","clone_url":"file://%s/infra.git"}}' "$work")
signature="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$BENCH_WEBHOOK_SECRET" -r | cut -d' ' -f1)"
per_thread=$(( (deliveries + threads - 1) / threads ))
cat >"$work/burst.lua" <<LUA
local body = [[$body]]
sent, answered, statuses = 0, 0, {}
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function request()
  sent = sent + 1
  return wrk.format("POST", "/webhooks/github", {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-GitHub-Delivery"] = string.format("burst-%d-%d", tid, sent),
    ["X-Hub-Signature-256"] = "$signature",
  }, body)
end
function response(status)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered >= $per_thread then wrk.thread:stop() end
end
function done(summary, latency)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format("%s: %d", k, v)) end
  io.write(string.format("deliveries %d; answers by status: %s\n",
    summary.requests, table.concat(parts, ", ")))
  io.write(string.format("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
LUA
wrk -t "$threads" -c "$connections" -d 20s --timeout 10s -s "$work/burst.lua" "http://127.0.0.1:$port" \
  | grep -E '^(deliveries|latency ms|  Socket errors)' || true
echo "service RSS after the burst: $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status")"
