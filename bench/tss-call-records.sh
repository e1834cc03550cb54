#!/usr/bin/env bash
# Call-record ingest through the real TSS: how many records a second it stores, on each
# store backend, posted as a TPO posts them — spool batches of 512 records to
# `POST /api/call-records/batch` on one kept connection, one batch at a time.
# A TSS that stores fewer records a second than the TPOs end calls fills their spools
# (bounded: 100,000 records each) and, past that, records are refused; so the figure
# to hold it against is the TPO's call rate (docs/benchmarks.md).
#
#   bench/tss-call-records.sh [RECORDS] [RUNS]    # e.g. bench/tss-call-records.sh 51200 3
#
# Environment: BACKENDS="sqlite mariadb postgres" (all three by default; MariaDB at
# 127.0.0.1:3306 as root, PostgreSQL at 127.0.0.1:5432 as postgres, each given a
# database of its own, floorwire_bench_cr, dropped and made again a run), CONNS=N
# posters at once (1: one TPO; 2: a TPO pair), TSS_BIN=PATH (A/B of two builds).
# Every run checks afterwards that the store holds exactly the records posted.
# Loopback only; the TSS it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-51200}; RUNS=${2:-3}; CONNS=${CONNS:-1}
for v in RECORDS RUNS CONNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v: a whole number >= 1 expected, got '${!v}'" >&2; exit 2; }
done
BACKENDS=${BACKENDS:-sqlite mariadb postgres}
TSS_BIN=${TSS_BIN:-}
[ -n "$TSS_BIN" ] || { cargo build --quiet --release -p tss; TSS_BIN=target/release/tss; }
work=$(mktemp -d /tmp/floorwire-cr-XXXXXX)
tss_pid=
cleanup() { [ -z "$tss_pid" ] || kill "$tss_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
TOKEN=bench-tpo-token
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

fresh_store() { # backend -> store URL, on a database of its own made empty
  case $1 in
    sqlite) rm -f "$work"/cr.sqlite3*; echo "sqlite://$work/cr.sqlite3?mode=rwc" ;;
    mariadb)
      mysql -h 127.0.0.1 -u root -e 'DROP DATABASE IF EXISTS floorwire_bench_cr; CREATE DATABASE floorwire_bench_cr' >&2
      echo "mysql://root@127.0.0.1:3306/floorwire_bench_cr" ;;
    postgres)
      psql -q -h 127.0.0.1 -U postgres -d postgres -c 'DROP DATABASE IF EXISTS floorwire_bench_cr' \
        -c 'CREATE DATABASE floorwire_bench_cr' >&2
      echo "postgres://postgres@127.0.0.1:5432/floorwire_bench_cr" ;;
    *) echo "unknown backend '$1' (sqlite, mariadb, postgres)" >&2; exit 2 ;;
  esac
}

echo "records=$RECORDS a run, batches of 512, $CONNS poster(s) at once"
printf 'backend\trun\trecords\tseconds\trecords_per_s\tbatch_p50_ms\tbatch_p99_ms\n'
for backend in $BACKENDS; do
  for run in $(seq 1 "$RUNS"); do
    url=$(fresh_store "$backend")
    TSS__STORE__URL="$url" TSS__ADMIN__LISTEN=127.0.0.1:0 TSS__API__LISTEN="127.0.0.1:$port" \
      TSS__API__TLS=false TSS__API__TPO_TOKENS="[\"$TOKEN\"]" TSS__FTPES__ENABLED=false \
      RUST_LOG=warn "$TSS_BIN" serve > "$work/tss.out" 2> "$work/tss.log" &
    tss_pid=$!
    for _ in $(seq 1 100); do grep -q 'tss ready' "$work/tss.out" && break; sleep 0.1; done
    grep -q 'tss ready' "$work/tss.out" || { echo "tss did not start:" >&2; cat "$work/tss.log" >&2; exit 1; }
    python3 - "$port" "$TOKEN" "$RECORDS" "$CONNS" "$backend" "$run" <<'PY'
import http.client, json, statistics, sys, threading, time
port, token, total, conns, backend, run = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
BATCH = 512
def record(n):
    return {"record_id": f"tpo-bench-{n:09d}", "tpo": "tpo-bench", "call_id": f"{n}-bench@127.0.20.10",
            "user": "trader01", "line": "DT-2", "direction": "internal", "calling": "7001",
            "called": "7101", "started_at": "2026-12-03T09:00:00.000Z",
            "answered_at": "2026-12-03T09:00:00.200Z", "ended_at": "2026-12-03T09:00:01.000Z",
            "outcome": "answered", "recordings": ["rec-a-%d" % n, "rec-b-%d" % n]}
# The bodies are made before the clock starts: what is timed is the TSS.
bodies = [json.dumps([record(n) for n in range(s, min(s + BATCH, total))]).encode()
          for s in range(0, total, BATCH)]
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
times, errors = [], []
def poster(mine):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for body in mine:
        t0 = time.perf_counter()
        c.request("POST", "/api/call-records/batch", body, headers)
        r = c.getresponse(); answer = r.read()
        times.append(time.perf_counter() - t0)
        if r.status != 200:
            errors.append(f"{r.status} {answer[:200]!r}"); return
        results = json.loads(answer)["results"]
        bad = [x for x in results if x["status"] != 201]
        if bad: errors.append(f"not stored: {bad[:3]}"); return
threads = [threading.Thread(target=poster, args=(bodies[i::conns],)) for i in range(conns)]
start = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
wall = time.perf_counter() - start
if errors: sys.exit(f"{backend} run {run}: {errors[0]}")
times.sort()
print(f"{backend}\t{run}\t{total}\t{wall:.2f}\t{total / wall:.0f}\t{statistics.median(times) * 1000:.1f}\t{times[min(len(times) - 1, int(0.99 * len(times)))] * 1000:.1f}")
PY
    kill "$tss_pid"; wait "$tss_pid" 2>/dev/null || true; tss_pid=
    # What the store holds, read straight from it: every record posted, once.
    case $backend in
      sqlite) stored=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from call_records").fetchone()[0])' "$work/cr.sqlite3") ;;
      mariadb) stored=$(mysql -h 127.0.0.1 -u root -N -e 'SELECT COUNT(*) FROM floorwire_bench_cr.call_records') ;;
      postgres) stored=$(psql -h 127.0.0.1 -U postgres -d floorwire_bench_cr -Atc 'SELECT COUNT(*) FROM call_records') ;;
    esac
    [ "$stored" = "$RECORDS" ] || { echo "$backend run $run: the store holds $stored records, $RECORDS were posted" >&2; exit 1; }
  done
done
