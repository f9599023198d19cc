#!/usr/bin/env bash
# CPU per answer of the gateway and of its store thread alone, under the rig's load:
# wrk (32 connections, closed loop) → agentgate → the rig's sse-upstream (55-event ui-message
# answers), for a config of config/bench/ with a master key (a fresh SQLite ledger each run).
#
#   benches/store-cpu.sh [CONFIG] [SECS]      # default ui-to-ui-policy.toml 10
#   AGENTGATE_BIN=path benches/store-cpu.sh   # another build (e.g. the one before a change)
#   CONNS=1 SYNCS=1 benches/store-cpu.sh      # one connection; also count the writer's fsyncs
#                                             # per answer (strace on its thread: slows it)
#
# Needs the rig built by benches/rig.sh (target/rig). Prints one line: req/s, the gateway's
# CPU µs per answer, the store writer thread's (`agentgate-store`, SQLite) CPU µs per answer.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
rig="${RIG_DIR:-$repo/target/rig}"
cfg="${1:-ui-to-ui-policy.toml}"; secs="${2:-10}"; conns="${CONNS:-32}"
bin="${AGENTGATE_BIN:-$repo/target/release/agentgate}"
path=/api/v2/agents/bench/chat; body='{"message":"Say hello"}'
if grep -q guayaba "$repo/config/bench/$cfg"; then path=/api/v1/agents/bench/chat; body='{"message":"Say hello","stream":true}'; fi
db="$rig/bench.db"; rm -f "$db" "$db-wal" "$db-shm"
key="$("$bin" keys create --store "sqlite://$db" --account bench --kind master | awk '/^key:/ {print $2}')"
"$bin" credits grant --store "sqlite://$db" --account bench --credits 1000000000 >/dev/null
"$rig/upstream/target/release/sse-upstream" --addr 127.0.0.1:18080 --threads 1 --fmt ui >/dev/null 2>&1 &
up=$!
"$bin" serve --config "$repo/config/bench/$cfg" >/dev/null 2>&1 &
gw=$!
trap 'kill $gw $up 2>/dev/null || true; wait $gw $up 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18090/healthz && break; sleep 0.2; done
ticks() { sed 's/^.*) //' "$1" | awk '{print $12 + $13}'; }
writer=""
for t in /proc/$gw/task/*; do [[ "$(cat "$t/comm")" == agentgate-store ]] && writer="$t"; done
BODY="$body" AUTH="$key" "$rig/bench.sh" "http://127.0.0.1:18090$path" - 2 32 >/dev/null   # warm-up
syncs_log=""
if [[ "${SYNCS:-0}" == 1 ]]; then
  syncs_log="$(mktemp)"
  strace -c -e trace=fsync,fdatasync -o "$syncs_log" -p "${writer##*/}" 2>/dev/null &
  tracer=$!; sleep 0.5
fi
g0=$(ticks /proc/$gw/stat); w0=$(ticks "$writer/stat")
line=$(BODY="$body" AUTH="$key" "$rig/bench.sh" "http://127.0.0.1:18090$path" - "$secs" "$conns")
g1=$(ticks /proc/$gw/stat); w1=$(ticks "$writer/stat")
if [[ -n "$syncs_log" ]]; then kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true; fi
reqs=$(sed -n 's/.*reqs=\([0-9]*\).*/\1/p' <<<"$line"); rps=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$line")
tck=$(getconf CLK_TCK)
awk -v r="$reqs" -v g=$((g1 - g0)) -v w=$((w1 - w0)) -v t="$tck" -v rps="$rps" -v c="$cfg" 'BEGIN {
  printf "%s rps=%s gateway_us_per_answer=%.1f store_thread_us_per_answer=%.1f\n", c, rps, g / t * 1e6 / r, w / t * 1e6 / r }'
if [[ -n "$syncs_log" ]]; then
  syncs=$(awk '$NF ~ /^f(data)?sync$/ {n += $4} END {print n + 0}' "$syncs_log")
  awk -v s="$syncs" -v r="$reqs" 'BEGIN { printf "fsyncs=%d answers=%d fsyncs_per_answer=%.2f (the tracer also counts the 0.5 s before and after)\n", s, r, s / r }'
  rm -f "$syncs_log"
fi
