#!/usr/bin/env python3
"""An HTTP receiver that parses every request with the official CloudEvents
SDK (https://github.com/cloudevents/sdk-python, `pip install cloudevents`),
binary or structured mode, and counts what it accepts and rejects.

    cloudevents_receiver.py [--fail-every K]

Prints `listening PORT` once it listens on 127.0.0.1. POST: one CloudEvent;
answers 200, or 400 when the SDK (or a check of the required attributes)
rejects it, or 503 to every K-th request (nothing recorded) to make the
sender retry. GET /counts: what arrived so far, as JSON.
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # SDK 1.x
    from cloudevents.http import from_http
except ImportError:  # SDK 2.x keeps the same API here
    from cloudevents.v1.http import from_http
try:  # SDK 2.x also has the newer, stricter binding
    from cloudevents.core.bindings.http import HTTPMessage
    from cloudevents.core.bindings.http import from_http as core_from_http
    from cloudevents.core.formats.json import JSONFormat
except ImportError:
    core_from_http = None

LOCK = threading.Lock()
STATE = {
    "requests": 0,
    "accepted": 0,
    "rejected": 0,
    "failed_on_purpose": 0,
    "errors": [],
    "modes": {},
    "seqs": {},
    # Events without a generator sequence number, as the SDK read them.
    "others": [],
    # Whether the SDK percent-decodes binary-mode header values.
    "sdk_decodes": core_from_http is not None,
}
FAIL_EVERY = 0


def check(headers, body):
    """The event as the SDK reads it, or an exception."""
    event = from_http(headers, body)
    attrs = event.get_attributes()
    for name in ("specversion", "id", "source", "type"):
        if not attrs.get(name):
            raise ValueError(f"missing `{name}`")
    if attrs["specversion"] != "1.0":
        raise ValueError(f"specversion {attrs['specversion']!r}")
    data = event.get_data()
    if core_from_http is not None:
        # The newer binding also percent-decodes header values, as the
        # binding's spec says receivers must (the older one leaves them).
        core = core_from_http(HTTPMessage(headers=headers, body=body), JSONFormat())
        if core.get_id() != attrs["id"] or core.get_type() != attrs["type"]:
            raise ValueError("the two SDK bindings disagree")
        attrs, data = core.get_attributes(), core.get_data()
    return attrs, data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            body = json.dumps(STATE).encode()
        self.answer(200, body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            STATE["requests"] += 1
            if FAIL_EVERY and STATE["requests"] % FAIL_EVERY == 0:
                STATE["failed_on_purpose"] += 1
                return self.answer(503)
        try:
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
                del headers["content-encoding"]
            attrs, data = check(headers, body)
        except Exception as e:  # any refusal of the SDK counts
            with LOCK:
                STATE["rejected"] += 1
                if len(STATE["errors"]) < 10:
                    STATE["errors"].append(f"{type(e).__name__}: {e}; headers {headers}; body {body[:200]!r}")
            return self.answer(400, str(e).encode())
        mode = "binary" if "ce-specversion" in headers else "structured"
        with LOCK:
            STATE["accepted"] += 1
            STATE["modes"][mode] = STATE["modes"].get(mode, 0) + 1
            if isinstance(data, dict) and "seq" in data:
                seq = str(data["seq"])
                STATE["seqs"][seq] = STATE["seqs"].get(seq, 0) + 1
            else:
                if isinstance(data, (bytes, bytearray)):
                    data = {"raw": data.decode("latin-1")}
                elif isinstance(data, str):
                    data = {"raw": data}
                STATE["others"].append({"attributes": {k: str(v) for k, v in attrs.items()}, "data": data,
                                        "content_type": headers.get("content-type")})
        self.answer(200)


def main():
    global FAIL_EVERY
    if len(sys.argv) == 3 and sys.argv[1] == "--fail-every":
        FAIL_EVERY = int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
