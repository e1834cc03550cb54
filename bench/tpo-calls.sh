#!/usr/bin/env bash
# Calls through the TPO against Kamailio as a stateful proxy, the same SIPp pair:
#   SIPp built-in uac (turret dev-T-0001, 127.0.20.1:5061, registered with digest)
#     -> tpo (release, 127.0.20.10:5060: B2BUA, two dialogs, RTP anchored: two port
#        pairs and a relay per call) -> SIPp built-in uas (turret dev-T-0002,
#        127.0.20.2:5062, registered) on line 7101;
#   reference: the same uac -> kamailio (bench/kamailio/kamailio.cfg, tm + rr, one
#   child, 127.0.0.1:5060) -> the same built-in uas on 127.0.0.1:5080.
# The TPO's configuration is a static file served over HTTP, and its call records are
# taken with 201, by bench/tss-stand-in.py (a TSS that refused them would make the
# records pile up in the spool and be retried during the runs). TSS=real puts the real
# TSS (release, SQLite store, plain HTTP API) in its place: seeded with the same two
# turrets and line, the turrets' SIP credentials minted through its API, and after each
# run the call records in its store are counted against the calls SIPp completed.
# Then memory per established call: 400 calls held up 20 s, the TPO's heap and RSS
# before and with them up.
# Loopback only; every run is bounded by -m and -timeout.
# Usage: bench/tpo-calls.sh [RATE] [SECONDS] [RUNS]
# Environment: PATHS="kamailio tpo" (which paths to run, both by default), MEMORY=0 to
# skip the memory part, TPO_LOG=FILTER for the TPO's RUST_LOG (warn), PERF=FILE to record a perf profile of the TPO's runs in FILE.
# PERF_GRAPH="--call-graph dwarf" for call graphs through code without frame pointers.
# TPO_BIN=PATH runs that tpo binary instead of building this tree's (A/B of two builds).
# HOLD_MS=N keeps each call up N ms before the uac hangs up (0, the default: at once),
# so that RATE x N/1000 calls are established at once during the run.
# FLOOR=N adds a trading floor to the configuration: N more users with a turret each,
# 5N lines and 20 line appearances a user (none registered): what routing reads.
# TSS=real (stand-in by default) runs against the real TSS; TSS_BIN=PATH for its binary.
# TPOS=2 (with TSS=real) runs a TPO pair instead of one TPO: 127.0.20.10 and
# 127.0.20.11, each with its own SIPp pair at RATE (turrets T-0001 -> line 7101 on
# T-0002, and T-0003 -> line 7102 on T-0004), both posting their call records to the
# one TSS; after each run the records in its store are counted against the calls both
# uacs completed. Not peers: each TPO's calls stay on it.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}; SECS=${2:-10}; RUNS=${3:-3}; HOLD_MS=${HOLD_MS:-0}; FLOOR=${FLOOR:-0}
for v in RATE SECS RUNS HOLD_MS FLOOR; do
  [[ ${!v} =~ ^(0|[1-9][0-9]*)$ ]] || { echo "$v: a whole number expected, got '${!v}'" >&2; exit 2; }
done
PATHS=${PATHS:-kamailio tpo}; MEMORY=${MEMORY:-1}; PERF=${PERF:-}; TSS=${TSS:-stand-in}; TPOS=${TPOS:-1}
case $TPOS in 1|2) ;; *) echo "TPOS: 1 or 2 expected, got '$TPOS'" >&2; exit 2 ;; esac
if [ "$TPOS" = 2 ] && [ "$TSS" != real ]; then echo "TPOS=2 needs TSS=real" >&2; exit 2; fi
if [ "$TPOS" = 2 ] && [ -n "$PERF" ]; then echo "PERF is for one TPO only (TPOS=1)" >&2; exit 2; fi
case $TSS in stand-in|real) ;; *) echo "TSS: stand-in or real expected, got '$TSS'" >&2; exit 2 ;; esac
if [ "$TSS" = real ] && [ "$FLOOR" != 0 ]; then echo "FLOOR is for the stand-in only (TSS=stand-in)" >&2; exit 2; fi
CALLS=$((RATE * SECS))
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true' EXIT; echo "logs: $work" >&2
TPO_BIN=${TPO_BIN:-}
[ -n "$TPO_BIN" ] || { cargo build --quiet --release -p tpo; TPO_BIN=target/release/tpo; }
TSS_BIN=${TSS_BIN:-}
if [ "$TSS" = real ] && [ -z "$TSS_BIN" ]; then cargo build --quiet --release -p tss; TSS_BIN=target/release/tss; fi
command -v kamailio >/dev/null || { echo "kamailio missing: apt-get install kamailio" >&2; exit 1; }
# perf, when there, times the SIPp uac's CPU (it exits before /proc could tell).
uac_timed=0
if command -v perf >/dev/null; then
  uac_timed=1
else
  echo "perf missing: the SIPp uac's CPU a call is not reported (apt-get install linux-perf)" >&2
fi
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{print s+0}'; }  # all threads
threads() { # name, CPU ns, context switches of each thread
  for t in /proc/"$1"/task/*; do
    echo "$(cat "$t/comm") $(awk '{print $1}' "$t/schedstat") $(awk '/ctxt_switches/{s+=$2} END{print s}' "$t/status")"
  done 2>/dev/null; }
metric() { # name [TPO address]
  curl -s "http://${2:-127.0.20.10}:9100/metrics" | awk -v n="$1" '$1==n{print $2}'; }

# The TSS's answer to /api/tpo/config, as a file: two devices, line 7101 on trader02.
mkdir -p "$work/www/api/tpo"
python3 - "$work/www/api/tpo/config" "$FLOOR" <<'PY'
import hashlib, json, sys
def ha1(u, p, alg): return getattr(hashlib, alg)(f"{u}:floorwire:{p}".encode()).hexdigest()
devices = [{"username": f"dev-T-000{n}", "device_id": f"T-000{n}", "user": f"trader0{n}",
            "realm": "floorwire", "ha1_md5": ha1(f"dev-T-000{n}", f"pass-{n}", "md5"),
            "ha1_sha256": ha1(f"dev-T-000{n}", f"pass-{n}", "sha256")} for n in (1, 2)]
json.dump({"revision": 1, "devices": devices,
           "lines": [{"id": "DT-2", "kind": "dial_tone", "number": "7101", "label": "DT"}],
           "appearances": [{"user": "trader02", "line": "DT-2", "access": "talk", "button": 1}],
           "dial_plan": [{"prefix": "7", "route": "internal"}],
           "users": [], "sites": []}, open(sys.argv[1], "w"))
floor = int(sys.argv[2])
if floor:
    config = json.load(open(sys.argv[1]))
    # The bench's own devices, line and appearance go in the middle of the floor's.
    middle = lambda ours, floor_items: floor_items[:len(floor_items) // 2] + ours + floor_items[len(floor_items) // 2:]
    config["devices"] = middle(config["devices"], [{"username": f"dev-F-{n}", "device_id": f"F-{n}", "user": f"floor{n}",
                           "realm": "floorwire", "ha1_md5": "0" * 32, "ha1_sha256": "0" * 64}
                          for n in range(floor)])
    config["lines"] = middle(config["lines"], [{"id": f"FL-{n}", "kind": "dial_tone", "number": f"8{n:06d}", "label": ""}
                        for n in range(5 * floor)])
    config["appearances"] = middle(config["appearances"], [{"user": f"floor{n}", "line": f"FL-{(n * 7 + k * 13) % (5 * floor)}",
                               "access": "talk" if k % 2 else "listen", "button": k + 1}
                              for n in range(floor) for k in range(20)])
    json.dump(config, open(sys.argv[1], "w"))
PY
wait_ready() { # what pid log ready-line: waits up to 30 s for the line; a process that
  # dies or never gets there ends the script with its log.
  for _ in $(seq 300); do
    grep -q "$4" "$3" && return 0
    kill -0 "$2" 2>/dev/null || { echo "$1 did not start:" >&2; tail "$3" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 was not ready in 30 s:" >&2; tail "$3" >&2; exit 1
}

# SIP credentials of the two turrets (username password); the real TSS mints its own.
creds1=(dev-T-0001 pass-1); creds2=(dev-T-0002 pass-2)
revision=1  # of the configuration the TPO must have before a run
leftover=0  # call records the run before left in the spool
if [ "$TSS" = stand-in ]; then
python3 bench/tss-stand-in.py "$work/www" 127.0.20.9 8080 > "$work/http.txt" 2>&1 &
tss_pid=$!
until curl -sf -o /dev/null http://127.0.20.9:8080/api/tpo/config; do
  kill -0 "$tss_pid" 2>/dev/null || { echo "the TSS stand-in did not start:" >&2; cat "$work/http.txt" >&2; exit 1; }
  sleep 0.1
done
else
# The same floor as the stand-in's file, as a seed: trader01 calls line 7101 (DT-2),
# which appears on trader02's turret; no recorder (the stand-in names none either).
cat > "$work/seed.json" <<'JSON'
{"sites": [{"name": "bench", "tpos": ["127.0.20.10:5060"], "recorders": []}],
 "users": [{"name": "admin", "role": "admin", "site": "bench", "password": "bench-admin"},
           {"name": "trader01", "site": "bench"}, {"name": "trader02", "site": "bench"}],
 "lines": [{"id": "DT-2", "kind": "dial_tone", "number": "7101", "label": "DT"}],
 "profiles": {"trader02": {"appearances": [{"line": "DT-2", "button": 1}]}},
 "turrets": [{"device_id": "T-0001", "user": "trader01", "model": "IQMAX", "site": "bench"},
             {"device_id": "T-0002", "user": "trader02", "model": "IQMAX", "site": "bench"}],
 "dial_plan": [{"prefix": "7", "route": "internal"}]}
JSON
if [ "$TPOS" = 2 ]; then
  # The second TPO's floor: trader03 calls line 7102 (DT-3), on trader04's turret.
  python3 - "$work/seed.json" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1]))
seed["sites"][0]["tpos"].append("127.0.20.11:5060")
seed["users"] += [{"name": "trader03", "site": "bench"}, {"name": "trader04", "site": "bench"}]
seed["lines"].append({"id": "DT-3", "kind": "dial_tone", "number": "7102", "label": "DT"})
seed["profiles"]["trader04"] = {"appearances": [{"line": "DT-3", "button": 1}]}
seed["turrets"] += [{"device_id": f"T-000{n}", "user": f"trader0{n}", "model": "IQMAX", "site": "bench"}
                    for n in (3, 4)]
json.dump(seed, open(sys.argv[1], "w"))
PY
fi
tss_env=(TSS__STORE__URL="sqlite://$work/tss.sqlite3?mode=rwc" TSS__ADMIN__LISTEN=127.0.20.9:9200
  TSS__API__LISTEN=127.0.20.9:8080 TSS__API__TLS=false TSS__API__TPO_TOKENS='["bench"]'
  TSS__FTPES__ENABLED=false)
env "${tss_env[@]}" "$TSS_BIN" seed "$work/seed.json" > "$work/tss-seed.txt" 2>&1 \
  || { echo "tss seed failed:" >&2; cat "$work/tss-seed.txt" >&2; exit 1; }
env "${tss_env[@]}" RUST_LOG=warn "$TSS_BIN" serve > "$work/tss.txt" 2>&1 &
tss_pid=$!
wait_ready "the TSS" "$tss_pid" "$work/tss.txt" "tss ready:"
mint() { # device -> "username password", minted by the TSS
  curl -sf -u admin:bench-admin -X POST "http://127.0.20.9:8080/api/turrets/$1/sip-credential" \
    | python3 -c 'import json,sys; c=json.load(sys.stdin)["credential"]; print(c["username"], c["password"])' \
    || { echo "minting $1's SIP credential failed" >&2; exit 1; }
}
creds1=($(mint T-0001)) || true; creds2=($(mint T-0002)) || true
[ ${#creds1[@]} = 2 ] && [ ${#creds2[@]} = 2 ] || { echo "the TSS minted no SIP credential" >&2; exit 1; }
if [ "$TPOS" = 2 ]; then
  creds3=($(mint T-0003)) || true; creds4=($(mint T-0004)) || true
  [ ${#creds3[@]} = 2 ] && [ ${#creds4[@]} = 2 ] || { echo "the TSS minted no SIP credential" >&2; exit 1; }
fi
revision=$(curl -sf -H "Authorization: Bearer bench" http://127.0.20.9:8080/api/tpo/config \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])') \
  || { echo "the TSS did not give its TPO configuration" >&2; exit 1; }
fi
stored_records() { # call records in the real TSS's store
  python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM call_records").fetchone()[0])' \
    "$work/tss.sqlite3"
}

start_tpo() { # [1: the pair's second TPO, 127.0.20.11, its RTP ports above the first's]
  local i=${1:-0} sfx=${1:-}; local ip=127.0.20.1$i
  TPO__ADMIN__LISTEN=$ip:9100 TPO__SIP__LISTEN=$ip:5060 \
  TPO__TSS__URL=http://127.0.20.9:8080 TPO__TSS__TOKEN=bench TPO__TSS__POLL_INTERVAL_MS=2000 \
  TPO__CALL_RECORDS__SPOOL_DIR="$work/spool$sfx" TPO__CALLS__MAX_CALLS=100000 \
  TPO__MEDIA__FIRST_PORT=$((20000 + i * 20000)) TPO__MEDIA__LAST_PORT=$((TPOS == 2 ? 39999 + i * 20000 : 59999)) \
  TPO__MEDIA__RTP_TIMEOUT_SECS=0 RUST_LOG=${TPO_LOG:-warn} "$TPO_BIN" serve > "$work/tpo$sfx.txt" 2>&1 &
  tpo=$!
  wait_ready "the TPO ($TPO_BIN)" "$tpo" "$work/tpo$sfx.txt" "tpo ready:"
  for _ in $(seq 300); do [ "$(metric floorwire_tpo_config_revision "$ip")" = "$revision" ] && break; sleep 0.1; done
  [ "$(metric floorwire_tpo_config_revision "$ip")" = "$revision" ] || { echo "the TPO got no configuration (revision $revision) in 30 s:" >&2; tail "$work/tpo$sfx.txt" >&2; exit 1; }
}

register() { # device password ip port [TPO address]
  (cd "$work" && sipp "${5:-127.0.20.10}:5060" -sf floorwire/tests/sipp/uac-register-digest.xml -s "$1" -au "$1" -ap "$2" \
    -i "$3" -p "$4" -m 1 -nostdin -timeout 10s -timeout_error > "$work/register.txt" 2>&1) \
    || { echo "registration of $1 failed:" >&2; tail "$work/register.txt" >&2; exit 1; }
}
# sipp is run from $work: scenario paths are from the repository.
ln -sfn "$PWD/floorwire" "$work/floorwire"

start_uas() { # ip port [log suffix]
  (cd "$work" && exec sipp -sn uas -i "$1" -p "$2" -nostdin -buff_size 4194304 > "$work/uas${3:-}.txt" 2>&1) &
  uas=$!
  sleep 0.5
  kill -0 "$uas" || { echo "the SIPp uas did not start:" >&2; cat "$work/uas${3:-}.txt" >&2; exit 1; }
}

run_uac() { # target [caller-ip number log-suffix uas-pid] -> "elapsed_s failed"; the SIPp
  # pair's CPU a call to stderr
  local caller=${2:-127.0.20.1} number=${3:-7101} sfx=${4:-} uas_pid=${5:-$uas}
  local start end ok uas0 timer=()
  [ "$uac_timed" = 0 ] || timer=(perf stat -x, -e task-clock -o "$work/uac-cpu$sfx.txt")
  start=$(date +%s.%N); uas0=$(cpu_ns "$uas_pid")
  if (cd "$work" && exec "${timer[@]}" sipp "$1" -sn uac -s "$number" -i "$caller" -p 5061 -r "$RATE" -m "$CALLS" -l $((RATE * (2 + HOLD_MS / 1000))) \
      -d "$HOLD_MS" -nostdin -buff_size 4194304 -timeout $((SECS * 3 + HOLD_MS / 1000))s -timeout_error \
      -trace_stat -stf "$work/stat$sfx.csv" > "$work/uac$sfx.txt" 2>&1); then :; fi
  end=$(date +%s.%N)
  echo "  SIPp uac$sfx $( [ -s "$work/uac-cpu$sfx.txt" ] && awk -F, -v c="$CALLS" '/task-clock/{printf "%.1f", $1 * 1000 / c}' "$work/uac-cpu$sfx.txt" || echo -) us/call," \
    "uas $(echo "scale=1; ($(cpu_ns "$uas_pid") - $uas0) / 1000 / $CALLS" | bc) us/call" >&2
  ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") c=i} END{print $c}' "$work/stat$sfx.csv")
  rm -f "$work/stat$sfx.csv"
  # The last calls' hold is not time spent placing calls: calls/s is of the rest.
  echo "$(echo "scale=3; $end - $start - $HOLD_MS / 1000" | bc) $((CALLS - ${ok:-0}))"
}

# Runs start alike: the next one starts once this one's call records are all with the
# TSS (it may take them slower than calls end, on the same two cores, and a backlog
# would take CPU from the next run). How long that took is reported; what is left
# waiting is in $waiting.
drain_records() { # TPO address...
  local drained; drained=$(date +%s.%N)
  for _ in $(seq 1200); do
    waiting=0
    for ip in "$@"; do
      # Each TPO's own count, never below 0 (one restarted on a spool delivers records
      # it did not count as spooled): it must not hide the other's backlog.
      waiting=$((waiting + $(curl -s "http://$ip:9100/metrics" | awk '$1 ~ /^floorwire_tpo_call_records_total/ {
        if ($1 ~ /"spooled"/) w += $2; else if ($1 ~ /"(delivered|rejected)"/) w -= $2 } END {print (w > 0 ? w : 0)}')))
    done
    [ "$waiting" -le 0 ] && break
    sleep 0.1
  done
  echo "  call records still waiting after the run: drained in $(echo "$(date +%s.%N) - $drained" | bc | cut -c1-5) s (left: $waiting)" >&2
}
tpo_report() { # TPO address, log suffix, failed calls: the TPO's metrics after a run
  curl -s "http://$1:9100/metrics" > "$work/metrics$2.txt" || true
  # Why calls failed, when some did: what the TPO refused or shed, by counter.
  if [ "$3" != 0 ]; then
    grep -E '^floorwire_(sip_(rejected|shed)|tpo_calls_(refused|failed))[^ ]* [1-9]' "$work/metrics$2.txt" | sed "s/^/  $1 /" >&2 || true
  fi
  # Call records the spool refused (full: the TSS takes them slower than calls end)
  # are lost records, whatever the calls did. The spool is kept between runs.
  grep -E '^floorwire_tpo_call_records_total\{result="spool_refused"\} [1-9]' "$work/metrics$2.txt" | sed "s/^/  LOST RECORDS at $1: /" >&2 || true
}
check_records() { # completed calls: every one ended with a record in the TSS's store
  # (calls the TPO refused or that failed may have one too, with their outcome).
  local stored=$(( $(stored_records) - records0 ))
  echo "  call records stored by the TSS: $stored for $1 completed calls$(
    [ "$leftover" = 0 ] || echo " (the count may hold up to $leftover records of the run before, not drained in time)")" >&2
  if [ "$waiting" -gt 0 ]; then
    echo "  $waiting records still in the TPOs' spools: not counted as lost (they are sent on)" >&2
  elif [ "$stored" -lt "$1" ]; then
    echo "  LOST RECORDS: $(($1 - stored)) completed calls have no record in the TSS" >&2
  fi
}

printf 'path\tcalls\tcalls_per_s\tfailed\tcpu_us_per_call\tpeak_rss_mb\n'
for _ in $(seq "$RUNS"); do
 if [[ " $PATHS " == *" kamailio "* ]]; then
  start_uas 127.0.0.1 5080
  kamailio -f bench/kamailio/kamailio.cfg -DD -A CHILDREN=1 -m 4096 -M 32 -x fm > "$work/kamailio.txt" 2>&1 &
  kam=$!
  # Kamailio locks its 4 GB of shared memory before it answers: seconds, not one.
  bench/sip-ready.py 127.0.0.1 5060 60 || { tail "$work/kamailio.txt" >&2; exit 1; }
  kam_pids="$kam $( (pgrep -P "$kam" || true) | tr "\n" " ")"
  before=0; for p in $kam_pids; do before=$((before + $(cpu_ns "$p"))); done
  read -r elapsed failed < <(run_uac 127.0.0.1:5060)
  after=0; for p in $kam_pids; do after=$((after + $(cpu_ns "$p" 2>/dev/null || echo 0))); done
  kill -TERM "$kam"; wait "$kam" 2>/dev/null || true
  kill -TERM "$uas"; wait "$uas" 2>/dev/null || true
  printf 'kamailio\t%s\t%s\t%s\t%s\t-\n' "$CALLS" "$(echo "scale=0; $CALLS / $elapsed" | bc)" "$failed" \
    "$(echo "scale=1; ($after - $before) / 1000 / $CALLS" | bc)"
 fi
 if [[ " $PATHS " == *" tpo "* ]] && [ "$TPOS" = 2 ]; then
  # The TPO pair: each TPO with its own SIPp pair at RATE, at the same time.
  start_tpo; tpo0=$tpo; start_tpo 1; tpo1=$tpo
  register "${creds2[@]}" 127.0.20.2 5062; register "${creds1[@]}" 127.0.20.1 5061
  register "${creds4[@]}" 127.0.20.4 5062 127.0.20.11; register "${creds3[@]}" 127.0.20.3 5061 127.0.20.11
  start_uas 127.0.20.2 5062; uas0=$uas; start_uas 127.0.20.4 5062 1; uas1=$uas
  records0=$(stored_records); before0=$(cpu_ns $tpo0); before1=$(cpu_ns $tpo1); tss0=$(cpu_ns $tss_pid)
  run_uac 127.0.20.10:5060 127.0.20.1 7101 "" "$uas0" > "$work/run.txt" & run0=$!
  run_uac 127.0.20.11:5060 127.0.20.3 7102 1 "$uas1" > "$work/run1.txt" & run1=$!
  wait "$run0" || { echo "the first SIPp uac's run failed:" >&2; tail "$work/uac.txt" >&2; exit 1; }
  wait "$run1" || { echo "the second SIPp uac's run failed:" >&2; tail "$work/uac1.txt" >&2; exit 1; }
  read -r elapsed0 failed0 < "$work/run.txt"; read -r elapsed1 failed1 < "$work/run1.txt"
  after0=$(cpu_ns $tpo0); after1=$(cpu_ns $tpo1)
  echo "  TSS real (not the TPOs') $(echo "scale=1; ($(cpu_ns $tss_pid) - $tss0) / 1000 / (2 * $CALLS)" | bc) us/call of the pair during the run" >&2
  tpo_report 127.0.20.10 "" "$failed0"; tpo_report 127.0.20.11 1 "$failed1"
  drain_records 127.0.20.10 127.0.20.11
  check_records $((2 * CALLS - failed0 - failed1))
  leftover=$waiting
  rss0=$(awk '/VmHWM/{print int($2/1024)}' /proc/$tpo0/status); rss1=$(awk '/VmHWM/{print int($2/1024)}' /proc/$tpo1/status)
  kill -TERM "$uas0" "$uas1"; wait "$uas0" "$uas1" 2>/dev/null || true
  kill -TERM "$tpo0" "$tpo1"; wait "$tpo0" "$tpo1" 2>/dev/null || true
  for n in 0 1; do
    e=elapsed$n f=failed$n b=before$n a=after$n r=rss$n
    printf 'tpo-%s\t%s\t%s\t%s\t%s\t%s\n' "$((n + 1))" "$CALLS" "$(echo "scale=0; $CALLS / ${!e}" | bc)" "${!f}" \
      "$(echo "scale=1; (${!a} - ${!b}) / 1000 / $CALLS" | bc)" "${!r}"
  done
 elif [[ " $PATHS " == *" tpo "* ]]; then
  start_tpo
  register "${creds2[@]}" 127.0.20.2 5062
  register "${creds1[@]}" 127.0.20.1 5061
  start_uas 127.0.20.2 5062
  [ "$TSS" = stand-in ] || records0=$(stored_records)
  if [ -n "$PERF" ]; then perf record -q -F 999 ${PERF_GRAPH:--g} -o "$PERF" -p "$tpo" 2>/dev/null & perf=$!; fi
  before=$(cpu_ns $tpo); threads $tpo > "$work/threads0.txt"; tss0=$(cpu_ns $tss_pid)
  read -r elapsed failed < <(run_uac 127.0.20.10:5060)
  after=$(cpu_ns $tpo); threads $tpo > "$work/threads1.txt"
  echo "  TSS $TSS (not the TPO's) $(echo "scale=1; ($(cpu_ns $tss_pid) - $tss0) / 1000 / $CALLS" | bc) us/call during the run" >&2
  # CPU per call by thread name, to stderr.
  awk -v calls="$CALLS" 'NR==FNR{b[$1]+=$2; w[$1]+=$3; next} {a[$1]+=$2; x[$1]+=$3}
    END{for(t in a) printf "  %s %.1f us/call, %.1f context switches/call\n", t, (a[t]-b[t])/1000/calls, (x[t]-w[t])/calls}' \
    "$work/threads0.txt" "$work/threads1.txt" | sort >&2
  if [ -n "$PERF" ]; then kill -INT "$perf" 2>/dev/null || true; wait "$perf" 2>/dev/null || true; fi
  rss=$(awk '/VmHWM/{print int($2/1024)}' /proc/$tpo/status)
  tpo_report 127.0.20.10 "" "$failed"
  drain_records 127.0.20.10
  [ "$TSS" = stand-in ] || check_records $((CALLS - failed))
  leftover=$waiting
  kill -TERM "$uas"; wait "$uas" 2>/dev/null || true
  kill -TERM "$tpo"; wait "$tpo" 2>/dev/null || true
  printf 'tpo\t%s\t%s\t%s\t%s\t%s\n' "$CALLS" "$(echo "scale=0; $CALLS / $elapsed" | bc)" "$failed" \
    "$(echo "scale=1; ($after - $before) / 1000 / $CALLS" | bc)" "$rss"
 fi
done
if [ "$MEMORY" = 0 ]; then exit 0; fi

# Memory per established call: 400 calls held 20 s (800 port pairs of the range).
start_tpo
register "${creds2[@]}" 127.0.20.2 5062
register "${creds1[@]}" 127.0.20.1 5061
start_uas 127.0.20.2 5062
sleep 1.5
heap0=$(metric floorwire_tpo_heap_allocated_bytes); rss0=$(awk '/VmRSS/{print $2}' /proc/$tpo/status)
(cd "$work" && sipp 127.0.20.10:5060 -sn uac -s 7101 -i 127.0.20.1 -p 5061 -r 200 -m 400 -d 20000 \
  -nostdin -timeout 60s > "$work/hold.txt" 2>&1) &
held=$!
until [ "$(metric floorwire_tpo_calls_active)" = "400" ]; do sleep 0.2; done
sleep 1.5
heap1=$(metric floorwire_tpo_heap_allocated_bytes); rss1=$(awk '/VmRSS/{print $2}' /proc/$tpo/status)
wait "$held" || true
printf '\nestablished calls\theap_bytes_per_call\trss_kib_per_call\n400\t%s\t%s\n' \
  "$(echo "($heap1 - $heap0) / 400" | bc)" "$(echo "scale=1; ($rss1 - $rss0) / 400" | bc)"
kill -TERM "$tpo"; wait "$tpo" 2>/dev/null || true
