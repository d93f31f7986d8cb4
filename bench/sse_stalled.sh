#!/usr/bin/env bash
# What stalled `GET /events` readers cost: the same flood of distinct errors (wrk, single-event
# POSTs) at two fresh daemons, the second with N event streams opened and never read. Prints
# webhook req/s and the daemon's peak RSS for both, and the ratio.
#
#   bench/sse_stalled.sh [SECONDS] [STREAMS]   (defaults 15 s, 200)
#
# Needs wrk (apt-get install wrk) and python3. SENTINEL_BIN overrides the binary (default: a
# release build).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
STREAMS=${2:-200}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
if [ -z "${SENTINEL_BIN:-}" ]; then
  cargo build --release --quiet --bin sentinel
  SENTINEL_BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/sentinel
fi
TMP=$(mktemp -d)
SPID= HOLD=
cleanup() {
  [ -n "$HOLD" ] && kill "$HOLD" 2>/dev/null || true
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

round() { # $1: streams to stall
  local dir="$TMP/r$1"
  mkdir -p "$dir"
  cat >"$dir/sentinel.yaml" <<YAML
state_dir: state
error_threshold:
  count: 1000000
api:
  listen: 127.0.0.1:0
sources:
  - type: webhook
    name: hook
    port: 0
YAML
  (cd "$dir" && RUST_LOG=sentinel=warn exec "$SENTINEL_BIN" watch) 2>"$dir/daemon.log" &
  SPID=$!
  for _ in $(seq 400); do [ -s "$dir/state/daemon.json" ] && break; sleep 0.05; done
  local hook api
  hook=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhooks"][0][1])' "$dir/state/daemon.json")
  api=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$dir/state/daemon.json")
  if [ "$1" -gt 0 ]; then
    # Streams that send their request and never read a byte.
    python3 - "$api" "$1" "$dir/held" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: " + sys.argv[1].encode() + b"\r\n\r\n")
    socks.append(s)
open(sys.argv[3], "w").write("ok")
time.sleep(3600)
PY
    HOLD=$!
    for _ in $(seq 200); do [ -s "$dir/held" ] && break; sleep 0.05; done
  fi
  wrk -t2 -c64 -d"${SECS}s" -s bench/post_distinct.lua "http://$hook/" >"$dir/wrk.txt"
  local rps hwm streams
  rps=$(awk '/Requests\/sec/{print $2}' "$dir/wrk.txt")
  hwm=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$SPID/status")
  streams=$(curl -s "http://$api/metrics" | awk '/^sentinel_sse_streams /{print $2}')
  echo "$1 stalled streams: webhook $rps req/s, peak RSS ${hwm} MiB, open streams ${streams:-0} ($(tail -1 "$dir/wrk.txt"))"
  [ -n "$HOLD" ] && { kill "$HOLD" 2>/dev/null || true; HOLD=; }
  kill -TERM "$SPID"; wait "$SPID" || true
  SPID=
  echo "$rps" >"$TMP/rps$1"
}
round 0
round "$STREAMS"
python3 -c 'import sys; a, b = (float(open(p).read()) for p in sys.argv[1:]); print(f"ratio with/without stalled streams: {b / a:.2f}")' "$TMP/rps0" "$TMP/rps$STREAMS"
