#!/usr/bin/env bash
# `sentinel watch` on many files under a low descriptor limit (issue 25): N files of one
# error line each, the daemon started under `ulimit -n LIMIT` (soft and hard). Prints the
# time to the first count and to all N counted (from /metrics), the most descriptors the
# daemon held (/proc/PID/fd, sampled every 5 ms), its idle CPU over 10 s once settled, and
# how long one append to each of 500 random files takes to be counted.
#
#   bench/many_files.sh [FILES] [LIMIT]   (defaults 5000, 256)
#
# Needs python3 and curl. SENTINEL_BIN overrides the binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-5000}
LIMIT=${2:-256}
if [ -z "${SENTINEL_BIN:-}" ]; then
  cargo build --release --quiet --bin sentinel
  SENTINEL_BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/sentinel
fi
TMP=$(mktemp -d)
SPID=
cleanup() {
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/logs"
cat >"$TMP/sentinel.yaml" <<YAML
state_dir: state
api:
  listen: 127.0.0.1:0
sources:
  - type: file
    path: logs/*.log
YAML
python3 - "$TMP/logs" "$FILES" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{d}/f{i}.log", "w") as f:
        f.write(f"INFO boot {i}\nERROR [PACT:svc{i % 37}:m{i % 3}] failed at boot\n")
PY
cd "$TMP"
START=$(date +%s.%N)
sh -c "ulimit -n $LIMIT && exec \"\$0\" watch" "$SENTINEL_BIN" 2>"$TMP/daemon.log" &
SPID=$!
python3 - "$TMP" "$SPID" "$FILES" "$START" "$LIMIT" <<'PY'
import json, os, random, sys, time, urllib.request
tmp, pid, files, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
limit = sys.argv[5]
deadline = time.time() + 120
info = None
while info is None:
    try:
        info = json.load(open(f"{tmp}/state/daemon.json"))
        if info["pid"] != pid:
            info = None
    except (OSError, ValueError):
        pass
    if time.time() > deadline:
        sys.exit("daemon not ready")
    time.sleep(0.005)
url = f"http://{info['api']}/metrics"

def metric(name):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0

def fds():
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0

def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

peak, first, last_poll = 0, None, 0.0
while True:
    peak = max(peak, fds())
    now = time.time()
    if now - last_poll >= 0.02:
        last_poll = now
        n = metric("sentinel_error_lines_total")
        if n > 0 and first is None:
            first = now - start
        if n >= files:
            break
    if now > deadline:
        sys.exit(f"only {n} of {files} counted in 120 s")
    time.sleep(0.005)
all_counted = time.time() - start
open_now = metric("sentinel_files_open")
time.sleep(5)  # settle: files read 10 s ago back off to their idle poll
c0, t0 = cpu(), time.time()
end = t0 + 10
while time.time() < end:
    peak = max(peak, fds())
    time.sleep(0.005)
idle = (cpu() - c0) / (time.time() - t0)
before = metric("sentinel_error_lines_total")
t_app = time.time()
for i in random.Random(7).sample(range(files), 500):
    with open(f"{tmp}/logs/f{i}.log", "a") as f:
        f.write(f"ERROR [PACT:late:x] appended to {i}\n")
while metric("sentinel_error_lines_total") < before + 500:
    peak = max(peak, fds())
    if time.time() > t_app + 60:
        sys.exit("appends not counted in 60 s")
    time.sleep(0.005)
appended = time.time() - t_app
print(f"files {files}, ulimit -n {limit}")
print(f"first count        {first:.3f} s after start")
print(f"all {files} counted  {all_counted:.3f} s after start")
print(f"descriptors held   at most {peak} (/proc/PID/fd); sentinel_files_open {open_now:.0f} when all counted")
print(f"idle CPU           {idle * 100:.1f}% of a core (10 s, once settled)")
print(f"500 appends spread {appended:.3f} s until all counted")
print(f"refusals           {metric('sentinel_descriptor_refusals_total'):.0f} (EMFILE/ENFILE)")
PY
grep -c "Too many open files" "$TMP/daemon.log" | sed 's/^/"Too many open files" in the log: /' || true
