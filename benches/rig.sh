#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md ("The gateway in the shared rig"), in one command:
# agentgate side by side with nginx and with hitting the backend directly, in the same
# compare.sh run of the shared SSE proxy-overhead rig (../shared/rig, see its README), for
#   1. ui-message client ← agentgate (chatbase front) ← ui-message backend   config/bench/ui-to-ui.toml
#   2. session-delta client ← agentgate (guayaba front, "stream": true) ← ui-message backend
#                                                                            config/bench/ui-to-sd.toml
#   3. as 1 with policy on: key check, rate limit, credit reservation and settlement
#                                                                            config/bench/ui-to-ui-policy.toml
#   3b. as 2 with policy on (`benches/rig.sh policy-sd`)                       config/bench/ui-to-sd-policy.toml
#   4. as 3 with the ledger in PostgreSQL, a reservation per request          config/bench/ui-to-ui-pg.toml
#   5. as 3 with the ledger in PostgreSQL, credit lease mode                  config/bench/ui-to-ui-pg-lease.toml
#      (4 and 5 only when asked for: `benches/rig.sh pg`, `benches/rig.sh pg-lease`; they need
#      PostgreSQL at AGENTGATE_BENCH_PG, default postgres://postgres@127.0.0.1:5432, and psql)
#   6. OpenAI Chat Completions client ← agentgate (openai front, key, SQLite ledger, transcripts)
#      ← OpenAI-compatible backend, beside LiteLLM on the same backend   config/bench/oa-to-oa.toml
#      (only when asked for: `benches/rig.sh oa`; needs LiteLLM in target/rig/litellm/.venv,
#      see the rig's README)
# Runs 1 and 2 use an open front (require_key = false: policy off).
# All gateway rows are measured against direct-ui and nginx-ui: the same backend stream, passed
# through untouched by nginx, transcoded (run 2) by agentgate.
#
#   benches/rig.sh                   # LITELLM=0 ROUNDS=3 SECS=5, both runs
#   ROUNDS=5 SECS=10 benches/rig.sh  # any compare.sh setting passes through (N, CHUNK, CONNS, ...)
#   benches/rig.sh ui-to-sd          # one run only (ui-to-ui, policy, ui-to-sd, policy-sd)
#   AGENTGATE_BIN=path benches/rig.sh policy   # measure that binary instead of building this tree
#
# Needs wrk, nginx and curl (apt-get install -y wrk nginx curl). The shared rig is read-only, so
# it is copied to target/rig (RIG_DIR) and its upstream built there; agentgate is built with
# `cargo build --release`. Tables land in target/rig/results/<run>-<time>/table.txt.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="${RIG_SRC:-$repo/../shared/rig}"
rig="${RIG_DIR:-$repo/target/rig}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install -y wrk nginx curl" >&2; exit 1; }
done
if [[ ! -x "$rig/compare.sh" ]]; then
  [[ -r "$shared/compare.sh" ]] || { echo "no rig at $shared (set RIG_SRC)" >&2; exit 1; }
  mkdir -p "$rig" && cp -a "$shared/." "$rig/" && chmod -R u+w "$rig"
fi
(cd "$rig/upstream" && env -u CARGO_TARGET_DIR cargo build --release -q)
if [[ -n "${AGENTGATE_BIN:-}" ]]; then
  bin="$AGENTGATE_BIN"   # another build to measure (e.g. the one before a change), as it is
else
  (cd "$repo" && CARGO_TARGET_DIR="$target_dir" cargo build --release -q --bin agentgate)
  bin="$target_dir/release/agentgate"
fi

export LITELLM="${LITELLM:-0}" ROUNDS="${ROUNDS:-3}" SECS="${SECS:-5}"
port=18090   # [server] listen of config/bench/*.toml

# The "policy on" configs need a key and credits in their store (config/bench/*-policy.toml).
db="$repo/target/rig/bench.db"
mkdir -p "$(dirname "$db")"
rm -f "$db" "$db-wal" "$db-shm"   # every run starts from an empty ledger
key="$("$bin" keys create --store "sqlite://$db" --account bench --kind master | awk '/^key:/ {print $2}')"
"$bin" credits grant --store "sqlite://$db" --account bench --credits 1000000000 >/dev/null

run() {  # name config path body [auth] [format]
  local name=$1 config=$2 path=$3 body=$4 auth=${5:-} fmt=${6:-ui}
  echo "=== $name: $config"
  OUT="$rig/results/$name-$(date +%Y%m%d-%H%M%S)" \
  GATEWAY_CMD="$bin serve --config $repo/config/bench/$config" \
  GATEWAY_URL="http://127.0.0.1:$port$path" GATEWAY_FMT="$fmt" GATEWAY_NAME="$name" \
  GATEWAY_READY="http://127.0.0.1:$port/healthz" BODY="$body" GATEWAY_AUTH="$auth" \
    "$rig/compare.sh"
}

want="${1:-all}"
if [[ "$want" == oa ]]; then
  # agentgate's openai front against LiteLLM, both before the same `oa` backend (base: direct-oa).
  [[ -x "$rig/litellm/.venv/bin/litellm" ]] || { echo "LiteLLM missing: see $rig/README.md" >&2; exit 1; }
  LITELLM=1 run agentgate oa-to-oa.toml /v1/chat/completions \
    '{"model":"fake-model","messages":[{"role":"user","content":"Say hello"}],"stream":true}' "$key" oa
  exit 0
fi
if [[ "$want" == pg || "$want" == pg-lease ]]; then
  # The same account in a PostgreSQL database of its own (the configs name agentgate_bench).
  pg_server="${AGENTGATE_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
  psql "$pg_server/postgres" -qc 'DROP DATABASE IF EXISTS agentgate_bench WITH (FORCE)'
  psql "$pg_server/postgres" -qc 'CREATE DATABASE agentgate_bench'
  pg_key="$("$bin" keys create --store "$pg_server/agentgate_bench" --account bench --kind master | awk '/^key:/ {print $2}')"
  "$bin" credits grant --store "$pg_server/agentgate_bench" --account bench --credits 1000000000 >/dev/null
  run "agentgate-$want" "ui-to-ui-$want.toml" /api/v2/agents/bench/chat '{"message":"Say hello"}' "$pg_key"
  exit 0
fi
if [[ "$want" == all || "$want" == ui-to-ui ]]; then
  run agentgate ui-to-ui.toml /api/v2/agents/bench/chat '{"message":"Say hello"}'
fi
if [[ "$want" == all || "$want" == policy ]]; then
  # The same ui-message passthrough with keys, rate limits and credits on (base: direct-ui).
  run agentgate-policy ui-to-ui-policy.toml /api/v2/agents/bench/chat '{"message":"Say hello"}' "$key"
fi
if [[ "$want" == all || "$want" == policy-sd ]]; then
  # Policy on, transcoding to session-delta (the guayaba front; base: direct-ui).
  run agentgate2sd-policy ui-to-sd-policy.toml /api/v1/agents/bench/chat '{"message":"Say hello","stream":true}' "$key"
fi
if [[ "$want" == all || "$want" == ui-to-sd ]]; then
  # Row name: agentgate turning the ui backend stream into session-delta (base: direct-ui).
  run agentgate2sd ui-to-sd.toml /api/v1/agents/bench/chat '{"message":"Say hello","stream":true}'
fi
