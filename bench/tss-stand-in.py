#!/usr/bin/env python3
"""A TSS stand-in for the benchmarks: serves the files under a folder (GET, as
http.server does: the TPO's /api/tpo/config) and takes every POST of call records
with 201 (a batch with one result a record, as the TSS does), counting what it took.
HTTP/1.1 with keep-alive, as the TSS (axum) does, so the TPO's kept connection is
exercised. Usage: tss-stand-in.py FOLDER HOST PORT."""
import functools
import http.server
import json
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    posted = 0

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/api/call-records/batch":
            # As the TSS answers a batch: one result a record.
            records = json.loads(body)
            Handler.posted += len(records)
            answer = json.dumps({"results": [{"record_id": r.get("record_id"), "status": 201}
                                             for r in records]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        Handler.posted += 1
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


folder, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, directory=folder))
server.serve_forever()
