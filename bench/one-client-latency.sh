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
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
rounds=${1:-5} requests=${2:-50000}
proxy_bin=${CHAOS_PROXY:-target/release/chaos-proxy}
for tool in redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools haproxy:haproxy curl:curl python3:python3; do
  command -v "${tool%%:*}" >/dev/null || { echo "missing ${tool%%:*}: apt-get install ${tool##*:}" >&2; exit 2; }
done
[[ -x $proxy_bin ]] || { echo "no $proxy_bin: cargo build --release -p chaos_proxy" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 2; }

redis_port=$(free_port) hap_port=$(free_port) api_port=$(free_port) chaos_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$tmp" --logfile "$tmp/redis.log" &
pids+=($!)
cat >"$tmp/haproxy.cfg" <<CFG
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
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
RUST_LOG=warn "$proxy_bin" --host 127.0.0.1 --port "$api_port" 2>"$tmp/chaos.log" &
pids+=($!)
wait_port "$redis_port"; wait_port "$hap_port"; wait_port "$api_port"
curl -sf -X POST "127.0.0.1:$api_port/proxies" \
  -d "{\"name\":\"redis\",\"listen\":\"127.0.0.1:$chaos_port\",\"upstream\":\"127.0.0.1:$redis_port\"}" >/dev/null
redis-cli -p "$redis_port" set key:__rand_int__ x >/dev/null

for ((r = 1; r <= rounds; r++)); do
  for target in direct:$redis_port haproxy:$hap_port chaos-proxy:$chaos_port; do
    ops=$(timeout 120 redis-benchmark -h 127.0.0.1 -p "${target##*:}" -c 1 -n "$requests" -t get --csv \
      | tail -1 | cut -d, -f2 | tr -d '"')
    echo "${target%%:*} $ops" | tee -a "$tmp/results" >&2
  done
done

python3 - "$tmp/results" "$rounds" "$requests" <<'PY'
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
