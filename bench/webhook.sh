#!/usr/bin/env bash
# Webhook throughput with every acknowledged event durable, against a bare axum handler,
# both under the same wrk load on loopback in the same run; then NDJSON bodies of 1 000
# events; then checks that Sentinel counted exactly the events it acknowledged.
#
#   bench/webhook.sh [SECONDS] [CONNECTIONS]      (defaults 10 s, 64 connections)
#
# Needs wrk (apt-get install wrk). Prints one summary line per run and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin sentinel --example bare_axum
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/sentinel
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }

# 1. The baseline: a bare axum handler.
"$TARGET/release/examples/bare_axum" 127.0.0.1:0 >"$TMP/bare.out" &
PIDS+=($!)
for _ in $(seq 200); do grep -q listening "$TMP/bare.out" && break; sleep 0.05; done
BARE=$(sed -n 's/listening on //p' "$TMP/bare.out")
wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/post_event.lua "http://$BARE/" >"$TMP/wrk-bare.txt"
kill "${PIDS[0]}"
BARE_RPS=$(rps "$TMP/wrk-bare.txt")
echo "bare axum:        $BARE_RPS req/s   ($(tail -1 "$TMP/wrk-bare.txt"))"

# 2. Sentinel: a webhook source, every 2xx after a durable (fsync) group commit.
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
wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/post_event.lua "http://$HOOK/" >"$TMP/wrk-json.txt"
JSON_RPS=$(rps "$TMP/wrk-json.txt")
echo "sentinel (JSON):  $JSON_RPS req/s   ($(tail -1 "$TMP/wrk-json.txt"))"
wrk -t2 -c"$CONNS" -d"${SECS}s" -s bench/post_ndjson.lua "http://$HOOK/" >"$TMP/wrk-ndjson.txt"
EVENTS=$(sed -n 's/.*events_acked \([0-9]*\).*/\1/p' "$TMP/wrk-ndjson.txt")
echo "sentinel (NDJSON x1000): $(rps "$TMP/wrk-ndjson.txt") req/s = $(python3 -c "print(f'{$EVENTS/$SECS/1e6:.2f}')") M events/s   ($(tail -1 "$TMP/wrk-ndjson.txt"))"
HWM=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SPID/status")
echo "sentinel peak RSS: ${HWM} MiB"
python3 -c "print(f'ratio sentinel/bare: {$JSON_RPS/$BARE_RPS:.2f}')"

# 3. Every acknowledged event counted exactly once.
ACKED=$(( $(sed -n 's/^acked \([0-9]*\).*/\1/p' "$TMP/wrk-json.txt") + EVENTS ))
COUNTED=$(curl -s "http://$API/metrics" | sed -n 's/^sentinel_webhook_events_total{outcome="accepted",source="hook"} \([0-9]*\)/\1/p')
echo "acknowledged events: $ACKED, counted: $COUNTED"
kill -TERM "$SPID"; wait "$SPID" || true
[ "$ACKED" -le "$COUNTED" ] || { echo "LOST acknowledged events" >&2; exit 1; }
