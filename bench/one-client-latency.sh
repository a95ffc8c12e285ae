#!/usr/bin/env bash
# One client, one request in flight: the round trip a proxy adds, direct vs HAProxy vs chaos-proxy.
#
# redis-benchmark's p50 comes in 8 us buckets, too coarse for a ~25 us difference, so this takes
# the mean round trip (1 / ops/s) of `redis-benchmark -c 1 -t get` runs, alternating targets
# every round, and reports medians. Loopback only; everything it starts is stopped on exit.
#
# Usage: bench/one-client-latency.sh [ROUNDS (5)] [REQUESTS (50000)]
#   CHAOS_PROXY=path/to/chaos-proxy (default target/release/chaos-proxy)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(repo_root)
cd "$ROOT"
rounds=${1:-5} requests=${2:-50000}
proxy_bin=$(chaos_bin_path)
need_tool redis-server redis-server
need_tool redis-benchmark redis-tools
need_tool haproxy haproxy
need_tool curl curl
need_lib_tools
tools_or_die 2
[[ -x $proxy_bin ]] || { echo "no $proxy_bin: cargo build --release -p chaos_proxy" >&2; exit 2; }

bench_tmp one-client-latency
export RUST_LOG=warn
read -r redis_port hap_port API_PORT chaos_port <<<"$(pick_ports 4)"
[[ -n ${chaos_port:-} ]] || die "could not find 4 free loopback ports"
start_bg redis redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$TMP" --logfile ""
wait_ping "$redis_port" "$LAST_PID" redis-server
cat >"$TMP/haproxy.cfg" <<CFG
global
    maxconn 1000
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen redis
    bind 127.0.0.1:$hap_port
    server redis 127.0.0.1:$redis_port
CFG
start_bg haproxy haproxy -db -f "$TMP/haproxy.cfg"
wait_ping "$hap_port" "$LAST_PID" haproxy
start_chaos "$proxy_bin"
api_expect "200 201" POST /proxies \
  "{\"name\":\"redis\",\"listen\":\"127.0.0.1:$chaos_port\",\"upstream\":\"127.0.0.1:$redis_port\"}"
wait_ping "$chaos_port" "$CHAOS_PID" chaos-proxy
rcli "$redis_port" set key:__rand_int__ x >/dev/null

for ((r = 1; r <= rounds; r++)); do
  for target in direct:$redis_port haproxy:$hap_port chaos-proxy:$chaos_port; do
    ops=$(timeout 120 redis-benchmark -h 127.0.0.1 -p "${target##*:}" -c 1 -n "$requests" -t get --csv \
      | tail -1 | cut -d, -f2 | tr -d '"')
    echo "${target%%:*} $ops" | tee -a "$TMP/results" >&2
  done
done

python3 - "$TMP/results" "$rounds" "$requests" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, ops = line.split()
    rows.setdefault(name, []).append(1e6 / float(ops))
direct = statistics.median(rows["direct"])
print(f"| target | median round trip us | added us | ({sys.argv[2]} rounds x {sys.argv[3]} GETs, c=1) |")
print("|---|---:|---:|---|")
for name, values in rows.items():
    m = statistics.median(values)
    print(f"| {name} | {m:.1f} | {m - direct:.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
PY
