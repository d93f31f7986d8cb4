#!/usr/bin/env bash
# GET latency of the API while the webhook source is flooded, in the same daemon: wrk POSTs
# single events at the webhook with many connections while a second wrk reads /incidents
# (and /status) with a few; prints the GET latency distribution (p50/p90/p99) and, for
# reference, the GET latency of the same daemon when idle.
#
#   bench/api_under_flood.sh [SECONDS] [FLOOD_CONNECTIONS]   (defaults 10 s, 128)
#
# Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-128}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin sentinel
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$(cd "$TARGET/release" && pwd)/sentinel
TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

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
(cd "$TMP/s" && RUST_LOG=sentinel=warn exec "$BIN" watch) 2>"$TMP/s/daemon.log" &
SPID=$!
for _ in $(seq 400); do [ -s "$TMP/s/state/daemon.json" ] && break; sleep 0.05; done
HOOK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhooks"][0][1])' "$TMP/s/state/daemon.json")
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$TMP/s/state/daemon.json")
# Some incidents to list.
for i in $(seq 50); do
  curl -s -o /dev/null -X POST -H 'content-type: application/json' \
    --data "{\"message\": \"ERROR [PACT:svc:op] failure kind $((i % 7)) x$i\"}" "http://$HOOK/"
done
lat() { awk '/Latency Distribution/{f=1;next} f&&/%/{printf "%s=%s ", $1, $2} /Requests\/sec/{f=0}' "$1"; }
wrk -t1 -c4 -d"${SECS}s" --latency "http://$API/incidents?limit=50" >"$TMP/idle.txt"
echo "GET /incidents idle:          $(lat "$TMP/idle.txt") $(grep Requests/sec "$TMP/idle.txt") $(grep -h Non-2xx "$TMP/idle.txt" || echo 'all 2xx')"
wrk -t2 -c"$CONNS" -d"$((SECS + 2))s" -s bench/post_event.lua "http://$HOOK/" >"$TMP/flood.txt" &
FLOOD=$!
sleep 1  # let the flood ramp up before measuring (pacing, not synchronisation)
wrk -t1 -c4 -d"${SECS}s" --latency "http://$API/incidents?limit=50" >"$TMP/busy.txt"
wait "$FLOOD"
echo "GET /incidents under flood:   $(lat "$TMP/busy.txt") $(grep Requests/sec "$TMP/busy.txt") $(grep -h Non-2xx "$TMP/busy.txt" || echo 'all 2xx')"
echo "webhook flood:                $(grep Requests/sec "$TMP/flood.txt") ($(tail -1 "$TMP/flood.txt"))"
kill -TERM "$SPID"; wait "$SPID" || true
SPID=
