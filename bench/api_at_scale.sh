#!/usr/bin/env bash
# Every GET route of the API with a million incidents in the store (issue 27): wrk's latency
# distribution (p50 / p90 / p99) of filtered GET /incidents with and without matches,
# filters combined, a second page (cursor), GET /incidents/{id}, /status, /metrics.json and
# /metrics, with the bare route /health of the same daemon as the baseline (a loopback round
# trip). Fails when a route's p99 is over the target.
#
#   bench/api_at_scale.sh [SECONDS] [INCIDENTS] [TARGET_P99_MS]   (defaults 5 s, 1000000, 50)
#
# The store is seeded by examples/seed_incidents.rs in its `noisy` shape (95% of the
# incidents from one component, no `high` incident) through the ingest transaction, then
# served by `sentinel serve` (no sources). wrk runs on the same machine over loopback with
# one thread and 4 connections. Needs wrk (apt-get install wrk). SENTINEL_BENCH_STATE=DIR
# keeps (or reuses) the seeded state directory; a store of an older schema version there is
# migrated by the daemon's start (the start-up time printed includes the migration).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
N=${2:-1000000}
TARGET_MS=${3:-50}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin sentinel --example seed_incidents
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$(cd "$TARGET/release" && pwd)/sentinel
SEED=$(cd "$TARGET/release/examples" && pwd)/seed_incidents
TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

STATE=${SENTINEL_BENCH_STATE:-$TMP/state}
if [ ! -s "$STATE/sentinel.redb" ]; then
  echo "seeding $N incidents into $STATE"
  "$SEED" "$STATE" "$N" noisy
fi
echo "store: $(du -h "$STATE/sentinel.redb" | cut -f1)"
rm -f "$STATE/daemon.json"
cat >"$TMP/sentinel.yaml" <<YAML
state_dir: $STATE
api:
  listen: 127.0.0.1:0
YAML
started=$(date +%s.%N)
(cd "$TMP" && RUST_LOG=sentinel=warn exec "$BIN" serve) 2>"$TMP/daemon.log" &
SPID=$!
# Up to 10 minutes: the first start on a store of an older schema version migrates it.
for _ in $(seq 12000); do
  [ -s "$STATE/daemon.json" ] && break
  kill -0 "$SPID" 2>/dev/null || break
  sleep 0.05
done
[ -s "$STATE/daemon.json" ] || { cat "$TMP/daemon.log" >&2; echo "the daemon did not start" >&2; exit 1; }
echo "start-up: $(python3 -c "print(f'{$(date +%s.%N) - $started:.2f} s')")"
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$STATE/daemon.json")

count() { python3 -c 'import json,sys; print(len(json.load(sys.stdin)["incidents"]))'; }
TOTAL=$(curl -sf "http://$API/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["incidents"])')
echo "GET /status: $TOTAL incidents"
[ "$TOTAL" = "$N" ] || { echo "expected $N incidents" >&2; exit 1; }
ID=$(curl -sf "http://$API/incidents?component=svc_3&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["incidents"][0]["id"])')
CURSOR=$(curl -sf "http://$API/incidents?component=svc_3&limit=10" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"])')
for q in "severity=high" "component=nope" "component=svc_3" "severity=critical&status=active"; do
  echo "GET /incidents?$q&limit=10: $(curl -sf "http://$API/incidents?$q&limit=10" | count) incidents"
done

# wrk's 99% line in ms (wrk prints us, ms or s).
p() { awk -v q="$2" '$1==q { v=$2; u=v; gsub(/[0-9.]/,"",u); sub(/[a-z]+$/,"",v);
  if (u=="us") v/=1000; else if (u=="s") v*=1000; else if (u=="m") v*=60000; printf "%.2f", v }' "$1"; }
fail=0
measure() { # label path
  wrk -t1 -c4 -d"${SECS}s" --latency "http://$API$2" >"$TMP/m.txt"
  local p99; p99=$(p "$TMP/m.txt" 99%)
  local ok=ok; awk -v a="$p99" -v b="$TARGET_MS" 'BEGIN{exit !(a>b)}' && { ok="OVER ${TARGET_MS} ms"; fail=1; }
  local non2xx; non2xx=$(grep -h Non-2xx "$TMP/m.txt" || echo 'all 2xx')
  printf '| %-58s | %6s / %6s / %7s ms | %8s | %s | %s |\n' "\`$1\`" "$(p "$TMP/m.txt" 50%)" \
    "$(p "$TMP/m.txt" 90%)" "$p99" "$(awk '/Requests\/sec/{print $2}' "$TMP/m.txt")" "$non2xx" "$ok"
}
echo
echo "| GET | p50 / p90 / p99 | req/s | answers | p99 ≤ ${TARGET_MS} ms |"
echo "|---|---|---|---|---|"
measure "/health (baseline)" /health
measure "/incidents?limit=10 (no filter)" "/incidents?limit=10"
measure "/incidents?severity=high&limit=10 (no match)" "/incidents?severity=high&limit=10"
measure "/incidents?component=nope&limit=10 (no match)" "/incidents?component=nope&limit=10"
measure "/incidents?component=svc_3&limit=10 (0.25%)" "/incidents?component=svc_3&limit=10"
measure "/incidents?component=svc_3&limit=10&cursor=… (page 2)" "/incidents?component=svc_3&limit=10&cursor=$CURSOR"
measure "/incidents?severity=critical&limit=10" "/incidents?severity=critical&limit=10"
measure "/incidents?status=active&limit=10" "/incidents?status=active&limit=10"
measure "/incidents?status=active&component=svc_3&severity=low&limit=10" "/incidents?status=active&component=svc_3&severity=low&limit=10"
measure "/incidents?component=noisy&severity=high&limit=10 (no match)" "/incidents?component=noisy&severity=high&limit=10"
measure "/incidents?component=noisy&limit=100" "/incidents?component=noisy&limit=100"
measure "/incidents/{id}" "/incidents/$ID"
measure "/status" /status
measure "/metrics.json" /metrics.json
measure "/metrics" /metrics
exit "$fail"
