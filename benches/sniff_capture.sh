#!/usr/bin/env bash
# What http_capture's sniff mode captures under load: wrk at a set rate over
# keep-alive connections against a service (a hostwatch /health endpoint),
# hostwatch sniffing its port on `lo`. Prints requests sent, transactions
# recorded, the capture's CPU and peak memory. Needs root (CAP_NET_RAW), wrk
# (Debian: apt-get install wrk) and a release build.
#   benches/sniff_capture.sh [seconds] [connections] [ms between requests per connection]
# 20 connections with 1 ms between requests: about 20,000 requests/s.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=${1:-30}
CONNS=${2:-20}
DELAY_MS=${3:-1}
BIN=target/release/hostwatch
W=$(mktemp -d)
trap 'kill $UP $SN 2>/dev/null; rm -rf "$W"' EXIT
cat >"$W/up.yaml" <<YAML
data_dir: $W/a
api: {address: "127.0.0.1:18687"}
log: {level: warn}
sources:
  gen: {type: generator, rate: 0.01}
sinks:
  out: {type: file, inputs: [gen], path: $W/a/out.ndjson}
YAML
cat >"$W/sniff.yaml" <<YAML
data_dir: $W/b
log: {level: warn}
api: {address: "127.0.0.1:18688"}
sources:
  web: {type: http_capture, mode: sniff, interface: lo, ports: [18687]}
sinks:
  out: {type: file, inputs: [web], path: $W/b/events.ndjson, batch: {timeout: 100ms}}
YAML
cat >"$W/delay.lua" <<LUA
function delay()
  return $DELAY_MS
end
LUA
$BIN run --config "$W/up.yaml" & UP=$!
$BIN run --config "$W/sniff.yaml" & SN=$!
sleep 1
OUT=$(wrk -t2 -c"$CONNS" -d"${SECONDS_}s" -s "$W/delay.lua" http://127.0.0.1:18687/health)
echo "$OUT" | grep -E "Requests/sec|requests in"
sleep 2
grep VmHWM "/proc/$SN/status"
awk -v s="$SECONDS_" '{cpu=($14+$15)/100; printf "sniff CPU seconds: %.2f (%.0f%% of one core over the run)\n", cpu, 100*cpu/s}' "/proc/$SN/stat"
curl -s http://127.0.0.1:18688/metrics | grep -E "^hostwatch_http_capture_(packets|kernel_drops|gaps|malformed)" || true
kill $SN; wait $SN 2>/dev/null || true
REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
EV=$(wc -l <"$W/b/events.ndjson")
OKS=$(grep -c '"status":200' "$W/b/events.ndjson" || true)
echo "requests: $REQ, transactions: $EV (status 200: $OKS), captured: $(awk -v e="$EV" -v r="$REQ" 'BEGIN {printf "%.3f%%", 100*e/r}')"
