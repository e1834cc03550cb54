#!/usr/bin/env python3
"""Waits until a SIP server on UDP answers: sends OPTIONS with Max-Forwards: 0 (any
answer will do, a 483 included) every 200 ms. Usage: sip-ready.py HOST PORT SECONDS.
Exits 0 once answered, 1 when SECONDS pass without an answer."""
import socket
import sys
import time

host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.settimeout(0.2)
local = sock.getsockname()[1]
start = time.monotonic()
while time.monotonic() - start < limit:
    n = time.monotonic_ns()
    probe = (
        f"OPTIONS sip:probe@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ready{n}\r\n"
        "Max-Forwards: 0\r\n"
        "From: <sip:probe@127.0.0.1>;tag=ready\r\n"
        f"To: <sip:probe@{host}>\r\n"
        f"Call-ID: ready-{n}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    sock.sendto(probe.encode(), (host, port))
    try:
        sock.recvfrom(4096)
        print(f"{host}:{port} answered after {time.monotonic() - start:.1f} s", file=sys.stderr)
        sys.exit(0)
    except socket.timeout:
        pass
print(f"{host}:{port} did not answer within {limit} s", file=sys.stderr)
sys.exit(1)
