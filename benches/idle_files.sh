#!/usr/bin/env bash
# CPU the file source spends on many idle files: 5,000 files of one line in
# 50 directories, read once (at most 100 open at a time), then left alone.
# Prints the CPU seconds the agent used in SECONDS idle seconds, after its
# files were closed (idle_timeout). The budget: under 0.25 s in 5 s.
#
#   benches/idle_files.sh [SECONDS] [FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
files=${2:-5000}
cargo build --release --quiet --bin hostwatch
work=$(mktemp -d)
for d in $(seq 0 49); do mkdir -p "$work/logs/d$d"; done
for i in $(seq 0 $((files - 1))); do
    echo "$((1795751400 + i)) INFO request served path=/api/v1/items status=200 seq=$i" >"$work/logs/d$((i % 50))/f$i.log"
done
cat >"$work/agent.yaml" <<YAML
data_dir: $work/data
sources:
  logs:
    type: file
    include: ["$work/logs/**/*.log"]
    max_open_files: 100
    idle_timeout: 2s
sinks:
  out:
    type: file
    inputs: [logs]
    path: "$work/out.ndjson"
YAML
target/release/hostwatch run --config "$work/agent.yaml" 2>"$work/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null || true; rm -rf "$work"' EXIT
# Every file read, then every file closed.
until [ "$(cat "$work"/out*.ndjson 2>/dev/null | wc -l)" -ge "$files" ]; do sleep 0.1; done
until [ "$(ls /proc/$agent/fd | wc -l)" -le 40 ]; do sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
before=$(ticks)
sleep "$seconds"
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "idle over $files files: $(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN {printf "%.3f", t / hz}') CPU seconds in $seconds s, $(ls /proc/$agent/fd | wc -l) descriptors open"
