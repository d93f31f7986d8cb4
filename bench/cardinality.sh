#!/usr/bin/env bash
# High cardinality (issue 23), both sides in one go:
#  1. `scan` of 1,000,000 error lines of one key that are all different, vs the same number
#     of lines repeating 50 messages: wall and CPU time, peak RSS, store size, counts; then
#     the distinct lines with the template miner on.
#  2. the webhook flooded with distinct errors vs repeated ones (wrk, single-event POSTs):
#     req/s, every 2xx counted, the daemon's log lines.
#
#   bench/cardinality.sh [LINES] [SECONDS]   (defaults 1000000, 10)
#
# Needs wrk and GNU time. SENTINEL_BIN: use this binary.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-1000000}
SECS=${2:-10}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${SENTINEL_BIN:-}" ]; then cargo build --release --quiet --bin sentinel; fi
BIN=$(realpath "${SENTINEL_BIN:-$TARGET/release/sentinel}")
BENCH=$(pwd)/bench
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
cd "$TMP"

"$BIN" gen-corpus --distinct-errors "$LINES" --out distinct.log >/dev/null
"$BIN" gen-corpus --distinct-errors "$LINES" --messages 50 --out repeat.log >/dev/null
# `templates`: the distinct lines again with `grouping.templates: true`.
for c in repeat distinct templates; do
  input=$c.log
  printf 'state_dir: st-%s\n' "$c" >"$c.yaml"
  if [ "$c" = templates ]; then
    input=distinct.log
    printf 'grouping:\n  templates: true\n' >>"$c.yaml"
  fi
  /usr/bin/time -f "%e %U %S %M" -o "$c.time" "$BIN" --config "$c.yaml" scan --json --no-progress "$input" >"$c.json"
  read -r wall user sys rss <"$c.time"
  python3 - "$c" "$wall" "$user" "$sys" "$rss" "$(stat -c %s "$input")" "$(stat -c %s "st-$c/sentinel.redb")" <<'PY'
import json, sys
c, wall, user, sys_, rss, inp, db = sys.argv[1:]
d = json.load(open(f"{c}.json"))
print(f"scan {c}: {wall} s wall, {float(user)+float(sys_):.2f} s CPU, peak RSS {int(rss)/1024:.1f} MiB, "
      f"redb {int(db)/1e6:.1f} MB = {int(db)/int(inp):.2f}x input; key count {d['error_key_counts']}, "
      f"distinct {d['distinct_fingerprints']} (estimated: {d['distinct_fingerprints_estimated']}), "
      f"new {d['incidents_new']}, folded {d['incidents_folded']}")
PY
done
python3 - <<'PY'
r = [float(x) for x in open("repeat.time").read().split()]
d = [float(x) for x in open("distinct.time").read().split()]
print(f"distinct/repeat: wall {d[0]/r[0]:.2f}x, CPU {(d[1]+d[2])/(r[1]+r[2]):.2f}x")
PY

# 2. The webhook.
mkdir -p w
cat >w/sentinel.yaml <<YAML
state_dir: state
api:
  listen: 127.0.0.1:0
sources:
  - type: webhook
    name: hook
    port: 0
YAML
(cd w && exec "$BIN" watch) 2>w/daemon.log &
SPID=$!
PIDS+=($SPID)
for _ in $(seq 400); do [ -s w/state/daemon.json ] && break; sleep 0.05; done
HOOK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhooks"][0][1])' w/state/daemon.json)
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' w/state/daemon.json)
rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }
acked() { sed -n 's/^acked \([0-9]*\).*/\1/p' "$1"; }
L0=$(wc -l <w/daemon.log)
wrk -t2 -c64 -d"${SECS}s" -s "$BENCH/post_event.lua" "http://$HOOK/" >wrk-repeat.txt
wrk -t2 -c64 -d"${SECS}s" -s "$BENCH/post_distinct.lua" "http://$HOOK/" >wrk-distinct.txt
R=$(rps wrk-repeat.txt)
D=$(rps wrk-distinct.txt)
ACKED=$(( $(acked wrk-repeat.txt) + $(acked wrk-distinct.txt) ))
echo "webhook: repeated $R req/s, distinct $D req/s = $(python3 -c "print(f'{$D/$R:.2f}')")x; acked $ACKED"
echo "webhook: $(curl -s "http://$API/metrics" | grep '^sentinel_incidents_overflow_total' || true)"
echo "webhook: daemon log lines during the floods: $(( $(wc -l <w/daemon.log) - L0 ))"
kill -TERM "$SPID"
wait "$SPID" || true
# Every acknowledged event is counted: the incidents' counts add up to at least the 2xx
# (wrk may close connections whose requests were counted but not yet answered).
N=$(cd w && "$BIN" report --json --limit 1000000 | python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)))')
echo "webhook: counted $N, acknowledged $ACKED; redb $(( $(stat -c %s w/state/sentinel.redb) / 1000000 )) MB"
