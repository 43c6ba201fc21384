#!/usr/bin/env bash
# Sniff mode against real nginx under wrk: are transactions paired with the
# right request? nginx serves /small (return 200, short text), /big (a
# 200 KB file), /missing (404), /old (301), /text.txt (gzip'd, chunked) and
# /ret (return 200) on a loopback port, writing an access log that the same
# agent tails; wrk drives a mix of those paths over keep-alive connections.
# Each captured transaction is checked against what nginx logged for its
# path: a transaction whose status (or, without gap, size) is not its own
# path's is mispaired. Prints requests, the rate, transactions captured
# (with a status, and with gap), kernel drops and mispaired. Needs root
# (CAP_NET_RAW), nginx and wrk (Debian: apt-get install nginx wrk), python3
# and a release build.
#   benches/sniff_nginx.sh [seconds] [connections] [ring_size]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=${1:-20}
CONNS=${2:-50}
RING=${3:-}
PORT=${PORT:-18790}
BIN=${BIN:-target/release/hostwatch}
W=$(mktemp -d)
chmod 755 "$W"
NGINX=
AGENT=
trap '[ -n "$AGENT" ] && kill $AGENT 2>/dev/null; [ -n "$NGINX" ] && kill $NGINX 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W/www" "$W/a"
head -c 153600 /dev/urandom | base64 -w 100 >"$W/www/big"
head -c 3000 /dev/urandom | base64 -w 76 >"$W/www/text.txt"
cat >"$W/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/error.log;
events { worker_connections 1024; }
http {
  access_log $W/access.log;
  client_body_temp_path $W;
  proxy_temp_path $W;
  fastcgi_temp_path $W;
  uwsgi_temp_path $W;
  scgi_temp_path $W;
  keepalive_requests 1000000;
  gzip_types text/plain;
  gzip_min_length 1;
  server {
    listen 127.0.0.1:$PORT;
    root $W/www;
    default_type text/plain;
    location = /small { return 200 "small\n"; }
    location = /ret { return 200; }
    location = /old { return 301 /text.txt; }
    location = /big { }
    location = /text.txt { gzip on; }
  }
}
CONF
/usr/sbin/nginx -c "$W/nginx.conf" & NGINX=$!
RINGLINE=""
[ -n "$RING" ] && RINGLINE="ring_size: $RING"
cat >"$W/agent.yaml" <<YAML
data_dir: $W/a
log: {level: warn}
api: {address: "127.0.0.1:18791"}
sources:
  web:
    type: http_capture
    mode: sniff
    interface: lo
    ports: [$PORT]
    $RINGLINE
  access:
    type: file
    include: ["$W/access.log"]
sinks:
  out: {type: file, inputs: [web], path: $W/a/events.ndjson, batch: {timeout: 100ms}}
  log: {type: file, inputs: [access], path: $W/a/access.ndjson, batch: {timeout: 100ms}}
YAML
: >"$W/access.log"
$BIN run --config "$W/agent.yaml" 2>"$W/agent.log" & AGENT=$!
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18791/health >/dev/null 2>&1 && curl -s "http://127.0.0.1:$PORT/probe" >/dev/null 2>&1 && break
  sleep 0.1
done
cat >"$W/mix.lua" <<'LUA'
local paths = {"/small", "/small", "/small", "/ret", "/ret", "/missing", "/old", "/text.txt", "/big"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {["Accept-Encoding"] = "gzip"})
end
LUA
OUT=$(wrk -t2 -c"$CONNS" -d"${SECONDS_}s" -s "$W/mix.lua" "http://127.0.0.1:$PORT")
echo "$OUT" | grep -E "Requests/sec|requests in"
# Let the last transactions and log lines arrive.
sleep 3
METRICS=$(curl -s http://127.0.0.1:18791/metrics | grep -E "^hostwatch_http_capture_(packets|kernel_drops|gaps|malformed)" || true)
echo "$METRICS"
grep -c "kernel dropped" "$W/agent.log" | sed 's/^/drop warnings logged: /' || true
kill $AGENT; wait $AGENT 2>/dev/null || true
AGENT=
python3 - "$W/a/events.ndjson" "$W/a/access.ndjson" "$(echo "$OUT" | awk '/requests in/ {print $1}')" <<'PY'
import json, sys, collections
events, log, sent = sys.argv[1], sys.argv[2], int(sys.argv[3])
# What nginx answered per path (its access log, as the agent tailed it).
status_of = collections.defaultdict(collections.Counter)
logged = 0
for line in open(log):
    parts = json.loads(line)["data"]["message"].split('"')
    status_of[parts[1].split()[1]][int(parts[2].split()[0])] += 1
    logged += 1
evs = [json.loads(line)["data"] for line in open(events)]
# Each path's whole response has one size (nginx's heads have a fixed
# length): the size most whole transactions of the path carry.
sizes = collections.defaultdict(collections.Counter)
for d in evs:
    if d["status"] is not None and not d["gap"] and not d.get("error"):
        sizes[d["path"]][d["response_bytes"]] += 1
size_of = {p: c.most_common(1)[0][0] for p, c in sizes.items()}
n = len(evs)
with_status = gaps = wrong = 0
errors = collections.Counter()
for d in evs:
    gaps += d.get("gap", False)
    if d.get("error"):
        errors[d["error"]] += 1
    if d["status"] is None:
        continue
    with_status += 1
    whole = not d["gap"] and not d.get("error")
    ok = set(status_of[d["path"]]) == {d["status"]} and (not whole or d["response_bytes"] == size_of[d["path"]])
    if not ok:
        wrong += 1
        if wrong <= 5:
            print("mispaired:", d["path"], d["status"], d["response_bytes"], "gap", d["gap"],
                  "expected", dict(status_of[d["path"]]), size_of.get(d["path"]))
print("per path (status: count, whole response bytes):",
      {p: (dict(status_of[p]), size_of.get(p)) for p in sorted(status_of)})
print(f"requests sent: {sent}, logged by nginx: {logged}; transactions: {n} ({100*n/sent:.2f} %), "
      f"with a status: {with_status} ({100*with_status/sent:.2f} %), gap: {gaps}; "
      f"errors: {dict(errors)}; mispaired: {wrong}")
PY
