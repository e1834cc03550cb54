#!/usr/bin/env python3
"""A TSS stand-in for the benchmarks: serves the files under a folder (GET, as
http.server does: the TPO's /api/tpo/config) and takes every POST (the call records)
with 201, counting what it took. HTTP/1.1 with keep-alive, as the TSS (axum) does, so
the TPO's kept connection is exercised. Usage: tss-stand-in.py FOLDER HOST PORT."""
import functools
import http.server
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    posted = 0

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        Handler.posted += 1
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


folder, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, directory=folder))
server.serve_forever()
