#!/usr/bin/env bash
# The dashboard's overview with many incidents in the store: wrk's latency distribution of
# GET / (the overview's first page, its default sort), GET /?sort=count (a sort over every
# incident), and, as the baseline of the same daemon in the same run, the bare route
# GET /health; first idle, then while a second wrk floods the webhook with single events.
#
#   bench/dashboard.sh [SECONDS] [INCIDENTS] [FLOOD_CONNECTIONS]   (defaults 10 s, 100000, 64)
#
# The store is seeded by examples/seed_incidents.rs through the ingest transaction. wrk
# runs on the same machine over loopback: the figures are the server's time plus a
# loopback round trip (see /health). Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
N=${2:-100000}
CONNS=${3:-64}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin sentinel --example seed_incidents
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$(cd "$TARGET/release" && pwd)/sentinel
SEED=$(cd "$TARGET/release/examples" && pwd)/seed_incidents
TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

mkdir -p "$TMP/s"
"$SEED" "$TMP/s/state" "$N"
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
for _ in $(seq 600); do [ -s "$TMP/s/state/daemon.json" ] && break; sleep 0.05; done
HOOK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhooks"][0][1])' "$TMP/s/state/daemon.json")
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$TMP/s/state/daemon.json")
# A browser keeps its session: so does wrk.
COOKIE=$(curl -s -D - -o /dev/null "http://$API/" | awk -F'[ ;]' 'tolower($1)=="set-cookie:"{print $2}')
[ -n "$COOKIE" ] || { echo "no session cookie from GET /" >&2; exit 1; }
ROWS=$(curl -s -H "Cookie: $COOKIE" "http://$API/" | grep -o '<tr data-id=' | wc -l)
TOTAL=$(curl -s -H "Cookie: $COOKIE" "http://$API/" | grep -o 'id="total">[0-9]*' | grep -o '[0-9]*$')
echo "store: $TOTAL incidents; the overview lists $ROWS of them per page"
[ "$TOTAL" = "$N" ] || { echo "expected $N incidents on the overview" >&2; exit 1; }

lat() { awk '/Latency Distribution/{f=1;next} f&&/%/{printf "%s=%s ", $1, $2} /Requests\/sec/{f=0}' "$1"; }
measure() { # label path
  wrk -t1 -c4 -d"${SECS}s" --latency -H "Cookie: $COOKIE" "http://$API$2" >"$TMP/m.txt"
  printf '%-28s %s %s %s\n' "$1" "$(lat "$TMP/m.txt")" "$(grep Requests/sec "$TMP/m.txt")" \
    "$(grep -h Non-2xx "$TMP/m.txt" || echo 'all 2xx')"
}
echo "== idle"
measure "GET /health" /health
measure "GET / (overview)" /
measure "GET /?sort=count" "/?sort=count"
echo "== webhook flooded (wrk -c$CONNS, single events)"
wrk -t2 -c"$CONNS" -d"$((3 * SECS + 4))s" -s bench/post_event.lua "http://$HOOK/" >"$TMP/flood.txt" &
FLOOD=$!
sleep 2  # let the flood ramp up before measuring (pacing, not synchronisation)
measure "GET /health" /health
measure "GET / (overview)" /
measure "GET /?sort=count" "/?sort=count"
wait "$FLOOD"
echo "flood: $(grep Requests/sec "$TMP/flood.txt") $(grep -h Non-2xx "$TMP/flood.txt" || echo 'all 2xx')"
