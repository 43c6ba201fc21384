#!/usr/bin/env bash
# Events per second from `ingest` to an http sink, end to end: the
# benchkit sinkhole (../shared/tools/benchkit) counts every event and checks
# every sequence number; examples/ingest_load.rs publishes.
#
#   benches/ingest_throughput.sh [EVENTS] [PER_REQUEST] [CONNECTIONS] [CONFIG]
#
# CONFIG defaults to benches/configs/ingest-to-http.yaml (memory buffer);
# benches/configs/ingest-to-http-disk.yaml puts a disk buffer in between.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
per_request=${2:-1000}
connections=${3:-4}
config=${4:-benches/configs/ingest-to-http.yaml}
kit=${BENCHKIT_TARGET:-${TMPDIR:-/tmp}/benchkit-target}
if [ ! -x "$kit/release/sinkhole" ]; then
    CARGO_TARGET_DIR="$kit" cargo build --release --quiet --manifest-path ../shared/tools/benchkit/Cargo.toml
fi
cargo build --release --quiet --bin hostwatch --example ingest_load
work=$(mktemp -d)
sink_port=19900
"$kit/release/sinkhole" --listen 127.0.0.1:$sink_port --summary "$work/sinkhole.json" >/dev/null 2>&1 &
sink=$!
sed -e "s#{data_dir}#$work/data#" -e "s#{sink_url}#http://127.0.0.1:$sink_port/ingest#" \
    "$config" > "$work/agent.yaml"
target/release/hostwatch run --config "$work/agent.yaml" 2>"$work/agent.log" &
agent=$!
trap 'kill $agent $sink 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18687/ && break; sleep 0.05; done
target/release/examples/ingest_load --url http://127.0.0.1:18687/events --events "$events" \
    --per-request "$per_request" --connections "$connections" --sinkhole "http://127.0.0.1:$sink_port/stats"
echo "agent peak RSS: $(grep VmHWM /proc/$agent/status | awk '{print $2/1024 " MiB"}'), CPU: $(ps -o cputime= -p $agent)"
