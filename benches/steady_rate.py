#!/usr/bin/env python3
"""CPU of the agent under a steady load, rather than a burst.

Writes RATE lines per second for SECONDS into a log file that the agent
tails with a config template of ../shared/bench/bench.py (placeholders
{data_dir} {log_dir} {sink_url}), receives its HTTP requests, and prints the
agent's CPU seconds over the run, its peak RSS, and the lines sent and
received. A disk buffer whose reader keeps up should cost little more CPU
than a memory buffer here.

    benches/steady_rate.py target/release/hostwatch benches/configs/file-to-http-disk.yaml 100000 10
"""
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time


def main():
    binary, template, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    work = tempfile.mkdtemp(prefix="steady-")
    logs, data = os.path.join(work, "logs"), os.path.join(work, "data")
    os.mkdir(logs)
    os.mkdir(data)
    received = [0]

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received[0] += body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(template) as f:
        config = (
            f.read()
            .replace("{data_dir}", data)
            .replace("{log_dir}", logs)
            .replace("{sink_url}", f"http://127.0.0.1:{server.server_port}/")
        )
    config_path = os.path.join(work, "agent.yaml")
    with open(config_path, "w") as f:
        f.write(config)
    log = open(os.path.join(logs, "app.log"), "a")
    agent = subprocess.Popen([binary, "run", "--config", config_path])
    time.sleep(1.0)

    def cpu():
        fields = open(f"/proc/{agent.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    cpu_start, start, sent = cpu(), time.time(), 0
    text = "x" * 150
    while time.time() - start < seconds:
        due = int((time.time() - start) * rate)
        if due > sent:
            log.write("".join(f"{text} {i}\n" for i in range(sent, due)))
            log.flush()
            sent = due
        time.sleep(0.005)
    time.sleep(2)
    cpu_used = cpu() - cpu_start
    peak = next(l for l in open(f"/proc/{agent.pid}/status") if l.startswith("VmHWM")).split()[1]
    agent.terminate()
    agent.wait()
    print(f"sent {sent} received {received[0]} cpu_s {cpu_used:.2f} peak_rss_kib {peak}")


if __name__ == "__main__":
    main()
