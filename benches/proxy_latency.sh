#!/usr/bin/env bash
# Latency that http_capture's proxy mode adds, and whether it records every
# request: wrk against a service (a hostwatch /health endpoint), directly
# and through the proxy. Needs wrk (Debian: apt-get install wrk) and a
# release build.
#   benches/proxy_latency.sh [seconds] [connections] [ms between requests per connection]
# Without the third argument wrk sends as fast as it can (the proxy saturated);
# 24 connections with 1 ms between requests are about 18,000 requests/s.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=${1:-10}
CONNS=${2:-20}
DELAY_MS=${3:-0}
BIN=target/release/hostwatch
W=$(mktemp -d)
trap 'kill $UP $PX 2>/dev/null; rm -rf "$W"' EXIT
cat >"$W/up.yaml" <<YAML
data_dir: $W/a
api: {address: "127.0.0.1:18686"}
log: {level: warn}
sources:
  gen: {type: generator, rate: 0.01}
sinks:
  out: {type: file, inputs: [gen], path: $W/a/out.ndjson}
YAML
cat >"$W/proxy.yaml" <<YAML
data_dir: $W/b
log: {level: warn}
sources:
  web: {type: http_capture, mode: proxy, listen: "127.0.0.1:18081", upstream: "127.0.0.1:18686"}
sinks:
  out: {type: file, inputs: [web], path: $W/b/events.ndjson, batch: {timeout: 100ms}}
YAML
printf 'function delay()\n  return %s\nend\n' "$DELAY_MS" >"$W/delay.lua"
$BIN run --config "$W/up.yaml" & UP=$!
$BIN run --config "$W/proxy.yaml" & PX=$!
sleep 1
echo "== direct"
wrk -t1 -c"$CONNS" -d"${SECONDS_}s" -s "$W/delay.lua" --latency http://127.0.0.1:18686/health | grep -E "Requests/sec|^ +(50|90|99)%|requests in"
echo "== through the proxy"
OUT=$(wrk -t1 -c"$CONNS" -d"${SECONDS_}s" -s "$W/delay.lua" --latency http://127.0.0.1:18081/health)
echo "$OUT" | grep -E "Requests/sec|^ +(50|90|99)%|requests in"
sleep 1
grep VmHWM "/proc/$PX/status"
awk '{print "proxy CPU seconds:", ($14+$15)/100}' "/proc/$PX/stat"
kill $PX; wait $PX 2>/dev/null || true
echo "requests: $(echo "$OUT" | awk '/requests in/ {print $1}'), events: $(wc -l <"$W/b/events.ndjson")"
