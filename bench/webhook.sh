#!/usr/bin/env bash
# Webhook throughput with every acknowledged event durable, against a bare axum handler,
# both under the same wrk load on loopback in the same run; then NDJSON bodies of 1 000
# events; then checks that Sentinel counted exactly the events it acknowledged.
#
#   bench/webhook.sh [SECONDS] [CONNECTIONS] [ROUNDS]   (defaults 10 s, 64 connections, 3)
#
# Needs wrk (apt-get install wrk). SENTINEL_BIN / BARE_AXUM_BIN: use these binaries. Prints one line per round and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
ROUNDS=${3:-3}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
# SENTINEL_BIN and BARE_AXUM_BIN override the binaries (e.g. to compare two builds in one go).
if [ -z "${SENTINEL_BIN:-}" ] || [ -z "${BARE_AXUM_BIN:-}" ]; then
  cargo build --release --quiet --bin sentinel --example bare_axum
fi
BIN=$(realpath "${SENTINEL_BIN:-$TARGET/release/sentinel}")
BARE_BIN=$(realpath "${BARE_AXUM_BIN:-$TARGET/release/examples/bare_axum}")
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }

# 1. The baseline: a bare axum handler.
"$BARE_BIN" 127.0.0.1:0 >"$TMP/bare.out" &
BPID=$!
PIDS+=($BPID)
for _ in $(seq 200); do grep -q listening "$TMP/bare.out" && break; sleep 0.05; done
BARE=$(sed -n 's/listening on //p' "$TMP/bare.out")

# 2. Sentinel: a webhook source, every 2xx after the events are durable (fdatasync of the
#    ingest log).
mkdir -p "$TMP/s"
cat >"$TMP/s/sentinel.yaml" <<YAML
state_dir: state
api:
  listen: 127.0.0.1:0
sources:
  - type: webhook
    name: hook
    port: 0
YAML
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
(cd "$TMP/s" && RUST_LOG=sentinel=warn exec "$BIN" watch) 2>"$TMP/s/daemon.log" &
SPID=$!
PIDS+=($SPID)
for _ in $(seq 400); do [ -s "$TMP/s/state/daemon.json" ] && break; sleep 0.05; done
HOOK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhooks"][0][1])' "$TMP/s/state/daemon.json")
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$TMP/s/state/daemon.json")

# 3. Rounds: bare, Sentinel (one JSON event per request), Sentinel (NDJSON x 1000), each
#    under the same wrk load, back to back, so that a noisy neighbour hits both sides of a
#    ratio alike. The median round is the figure.
ACKED=0
RATIOS=()
MEVS=()
for r in $(seq "$ROUNDS"); do
  wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/post_event.lua "http://$BARE/" >"$TMP/wrk-bare.txt"
  wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/post_event.lua "http://$HOOK/" >"$TMP/wrk-json.txt"
  wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/post_ndjson.lua "http://$HOOK/" >"$TMP/wrk-ndjson.txt"
  BARE_RPS=$(rps "$TMP/wrk-bare.txt")
  JSON_RPS=$(rps "$TMP/wrk-json.txt")
  EVENTS=$(sed -n 's/.*events_acked \([0-9]*\).*/\1/p' "$TMP/wrk-ndjson.txt")
  ACKED=$(( ACKED + $(sed -n 's/^acked \([0-9]*\).*/\1/p' "$TMP/wrk-json.txt") + EVENTS ))
  RATIO=$(python3 -c "print(f'{$JSON_RPS/$BARE_RPS:.2f}')")
  MEV=$(python3 -c "print(f'{$EVENTS/$SECS/1e6:.2f}')")
  RATIOS+=("$RATIO")
  MEVS+=("$MEV")
  echo "round $r: bare axum $BARE_RPS req/s; sentinel JSON $JSON_RPS req/s ($(tail -1 "$TMP/wrk-json.txt")) = ${RATIO}x; NDJSON x1000 $MEV M events/s ($(tail -1 "$TMP/wrk-ndjson.txt"))"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
HWM=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SPID/status")
echo "median ratio sentinel/bare: $(median "${RATIOS[@]}") (rounds: ${RATIOS[*]})"
echo "median NDJSON: $(median "${MEVS[@]}") M events/s (rounds: ${MEVS[*]})"
echo "sentinel peak RSS: ${HWM} MiB"

# 4. Every acknowledged event counted exactly once: after a clean stop, the store's
#    incident counts sum to the events acknowledged (no other traffic reached it).
kill -TERM "$SPID"; wait "$SPID" || true
COUNTED=$(cd "$TMP/s" && "$BIN" report --json --limit 1000000 | python3 -c 'import json,sys; print(sum(i["count"] for i in json.load(sys.stdin)))')
echo "acknowledged events: $ACKED, in the store: $COUNTED"
[ "$ACKED" -le "$COUNTED" ] || { echo "LOST acknowledged events" >&2; exit 1; }
