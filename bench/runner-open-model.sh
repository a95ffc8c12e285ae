#!/usr/bin/env bash
# The runner is never the bottleneck: the open model (chaos_runner::load, what every drill uses)
# at a fixed arrival rate against the testbed's cheapest endpoint (GET /health: no database, no
# Redis), side by side with `hey -q` (a fixed-rate load tool) and `wrk` (the endpoint's ceiling),
# in the same run, on loopback.
#
#   bench/runner-open-model.sh [--rate 5000] [--seconds 20] [--rounds 3] [--soak-seconds 0]
#
# Prints one TSV line per measurement: tool, round, target rate, achieved rate, p50 / p99 latency
# (ms), and for the runner: start lag p50 / p99 (us), arrivals later than 1 ms (%), its CPU
# (% of one core), RSS (KiB).
# --soak-seconds N adds one long runner run at the same rate sampling RSS every minute (memory
# flat over a soak). Needs hey and wrk (Debian packages of the same names).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATE=5000 SECONDS_=20 ROUNDS=3 SOAK=0
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --rate) need_arg "$@"; RATE=$2; shift 2 ;;
    --seconds) need_arg "$@"; SECONDS_=$2; shift 2 ;;
    --soak-seconds) need_arg "$@"; SOAK=$2; shift 2 ;;
    *) bench_opt "$@"; shift "$OPT_SHIFT" ;;
  esac
done
uints_or_die RATE SECONDS_ ROUNDS SOAK
MISSING_TOOLS=()
need_tool hey hey
need_tool wrk wrk
tools_or_die

ROOT=$(repo_root)
bench_tmp runner-open-model
log "building (release)"
(cd "$ROOT" && cargo build --release -q -p chaos_runner && cargo bench -q -p chaos_runner --bench open_model --no-run 2>/dev/null)
BENCH_BIN=$(ls -t "$ROOT"/target/release/deps/open_model-* | grep -v '\.d$' | head -n 1)
read -r PORT MCP_PORT <<<"$(pick_ports 2)"

# The testbed with nothing behind it: /health answers without a database or Redis.
start_bg testbed env DATABASE_URL="postgres://x:x@127.0.0.1:9/x" REDIS_URL="redis://127.0.0.1:9/0" \
  "$ROOT/target/release/chaos" testbed serve --no-worker --listen "127.0.0.1:$PORT" --mcp-listen "127.0.0.1:$MCP_PORT"
TESTBED=$LAST_PID
health() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health") == 200 ]]; }
wait_for 100 "$TESTBED" testbed "did not answer /health within 10 s" health
URL="http://127.0.0.1:$PORT/health"

printf 'tool\tround\ttarget_rps\tachieved_rps\tp50_ms\tp99_ms\tlag_p50_us\tlag_p99_us\tlate_pct\tcpu_pct\trss_kib\n'
for ((round = 1; round <= ROUNDS; round++)); do
  run_bg $((SECONDS_ + 60)) "$TMP/runner.json" "$BENCH_BIN" --url "$URL" --rate "$RATE" --seconds "$SECONDS_"
  python3 - "$TMP/runner.json" "$round" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
late = 100.0 * r["late_over_1ms"] / max(r["started"], 1)
print(f"runner\t{sys.argv[2]}\t{r['target_rate']:.0f}\t{r['achieved_rate']:.1f}\t{r['latency_ms']['p50']:.3f}\t"
      f"{r['latency_ms']['p99']:.3f}\t{r['start_lag_us']['p50']}\t{r['start_lag_us']['p99']}\t{late:.2f}\t{r['cpu_pct']:.0f}\t{r['rss_kib']['end']}")
PY
  # hey: 50 workers, each held to RATE/50 requests per second.
  run_bg $((SECONDS_ + 60)) "$TMP/hey.txt" hey -z "${SECONDS_}s" -c 50 -q $((RATE / 50)) "$URL"
  python3 - "$TMP/hey.txt" "$round" "$RATE" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
pct = dict(re.findall(r"(\d+)% in ([\d.]+) secs", t))
print(f"hey -q\t{sys.argv[2]}\t{sys.argv[3]}\t{rps:.1f}\t{float(pct['50'])*1000:.3f}\t{float(pct['99'])*1000:.3f}\t-\t-\t-\t-\t-")
PY
  run_bg $((SECONDS_ + 60)) "$TMP/wrk.txt" wrk -t 2 -c 50 -d "${SECONDS_}s" --latency "$URL"
  python3 - "$TMP/wrk.txt" "$round" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def ms(label):
    v, unit = re.search(label + r"%\s+([\d.]+)(us|ms|s)", t).groups()
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
print(f"wrk (max)\t{sys.argv[2]}\t-\t{rps:.1f}\t{ms('50'):.3f}\t{ms('99'):.3f}\t-\t-\t-\t-\t-")
PY
done
if ((SOAK > 0)); then
  log "soak: $SOAK s at $RATE/s"
  run_bg $((SOAK + 120)) "$TMP/soak.json" "$BENCH_BIN" --url "$URL" --rate "$RATE" --seconds "$SOAK" --sample 60
  cat "$TMP/soak.json"
fi
