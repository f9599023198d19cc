#!/usr/bin/env bash
# Schema-based fuzzing of every front: schemathesis (PyPI) reads each front's
# `{prefix}/openapi.json` from a running agentgate and sends what the document allows (and what
# it does not), checking that no answer is a 5xx and that every answer matches its documented
# schema. The documents are also checked by openapi-spec-validator (OpenAPI 3.1).
#
#   tests/schemathesis.sh                     # every front, 100 examples per operation
#   MAX_EXAMPLES=500 tests/schemathesis.sh    # more
#   SEED=1 tests/schemathesis.sh              # reproducible
#   PREFIXES=/openai tests/schemathesis.sh    # some fronts only
#
# The gateway runs the four seed fronts and the openai front of the quick start (keys required)
# plus an open chatbase front (`/open`, `require_key = false`), in front of four
# `agentgate demo-agent` echo backends
# (one per upstream API, no pause between words), with its own store in a temporary directory
# holding a master key with ample credits. Needs python3 (venv) and network access to PyPI the
# first time; the venv stays in target/schemathesis-venv.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target_dir/schemathesis-venv"
MAX_EXAMPLES="${MAX_EXAMPLES:-100}"
SEED="${SEED:-$RANDOM}"

if [[ ! -x "$venv/bin/schemathesis" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi
(cd "$repo" && cargo build --release -q --bin agentgate)
bin="$target_dir/release/agentgate"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 100); do curl -sf -o /dev/null --max-time 2 "$1" && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}

# Four echo backends, one per upstream API.
agents=""
n=1
for api in pharen chatbase agents guayaba; do
  port="$(free_port)"
  "$bin" demo-agent --api "$api" --listen "127.0.0.1:$port" --delay-ms 0 >"$work/demo-$api.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/health"
  agents+="
[[agent]]
id = \"00000000-0000-4000-8000-00000000000$n\"
upstream = \"http://127.0.0.1:$port\"
upstream_api = \"$api\"
"
  n=$((n + 1))
done
# A team of all four, the first also its summariser (team chat is fuzzed with its id).
agents+="
[[team]]
id = \"research\"
members = [\"00000000-0000-4000-8000-000000000001\", \"00000000-0000-4000-8000-000000000002\", \"00000000-0000-4000-8000-000000000003\", \"00000000-0000-4000-8000-000000000004\"]
modes = [\"brainstorm\", \"debate\"]
summarizer = \"00000000-0000-4000-8000-000000000001\"
"

port="$(free_port)"
cat >"$work/agentgate.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
drain_timeout_s = 1

[store]
url = "sqlite://$work/agentgate.db"

[[front]]
api = "pharen"
prefix = "/pharen"

[[front]]
api = "chatbase"
prefix = "/chatbase"

[[front]]
api = "agents"
prefix = "/agents"

[[front]]
api = "guayaba"
prefix = "/guayaba"

[[front]]
api = "openai"
prefix = "/openai"

[[front]]
api = "chatbase"
prefix = "/open"
require_key = false
$agents
EOF

key="$("$bin" keys create --store "sqlite://$work/agentgate.db" --account fuzz --kind master | awk '/^key:/ {print $2}')"
"$bin" credits grant --store "sqlite://$work/agentgate.db" --account fuzz --credits 1000000000000 >/dev/null
"$bin" serve --config "$work/agentgate.toml" >"$work/agentgate.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$port"
wait_http "$base/healthz"

# Most generated requests name a configured agent (so they reach a backend); the rest fuzz
# the id.
cat >"$work/schemathesis.toml" <<'EOF'
[dictionaries.agents]
values = [
  "00000000-0000-4000-8000-000000000001",
  "00000000-0000-4000-8000-000000000002",
  "00000000-0000-4000-8000-000000000003",
  "00000000-0000-4000-8000-000000000004",
]

[parameters]
"path.agent_uuid" = { dictionary = "agents", probability = 0.8 }
"path.agentId" = { dictionary = "agents", probability = 0.8 }
"path.id" = { dictionary = "agents", probability = 0.8 }
"path.model" = { dictionary = "agents", probability = 0.8 }

[dictionaries.teams]
values = ["research"]

# Team chat names the team (a warning says this filter matches nothing on the other fronts).
[[operations]]
include-path-regex = "/api/teams/"
parameters = { "path.id" = { dictionary = "teams", probability = 0.8 } }
EOF

status=0
started=$SECONDS
for prefix in ${PREFIXES:-/pharen /chatbase /agents /guayaba /openai /open}; do
  url="$base$prefix/openapi.json"
  echo "=== $url"
  curl -sf "$url" -o "$work/doc.json"
  "$venv/bin/openapi-spec-validator" "$work/doc.json" || status=1
  # From the temporary directory: schemathesis keeps a cache in its working directory.
  (cd "$work" && "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$url" \
    --checks not_a_server_error,response_schema_conformance \
    --header "Authorization: Bearer $key" \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --request-timeout 20 --workers 1 --no-color \
    --report junit --report-dir "$target_dir/schemathesis-report${prefix//\//-}") \
    || status=1
done
# The gateway's log, without colours: answers by status, and anything logged as an error.
sed 's/\x1b\[[0-9;]*m//g' "$work/agentgate.log" >"$work/plain.log"
echo "answers by status (from the gateway's log):"
{ grep -o 'status=[0-9]*' "$work/plain.log" || true; } | sort | uniq -c | sed 's/^/  /'
echo "schemathesis: seed $SEED, $MAX_EXAMPLES examples per operation, $((SECONDS - started)) s, exit $status"
if grep -qE 'panicked| ERROR ' "$work/plain.log"; then
  echo "agentgate logged errors:" >&2
  grep -E 'panicked| ERROR ' "$work/plain.log" | head -20 >&2
  status=1
fi
exit "$status"
