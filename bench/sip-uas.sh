#!/usr/bin/env bash
# SIP call handling: SIPp's built-in uac against floorwire's answering UAS
# (`turret-sim answer`) and, as the reference on the same machine, against SIPp's own
# built-in uas. Reports calls/s achieved, failed calls and CPU µs per call of the UAS
# (from /proc/PID/schedstat). Loopback only; each run is bounded by -m and -timeout.
# Usage: bench/sip-uas.sh [RATE] [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}; SECS=${2:-10}; RUNS=${3:-3}
CALLS=$((RATE * SECS))
work=$(mktemp -d); trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
cargo build --quiet --release -p turret-sim
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

run_uac() { # $1 = UAS port; prints "elapsed_s failed"
  local start end
  start=$(date +%s.%N)
  if taskset -c 1 sipp 127.0.0.1:"$1" -sn uac -i 127.0.0.1 -p 5070 -r "$RATE" -m "$CALLS" -l $((RATE * 2)) \
      -nostdin -buff_size 4194304 -timeout $((SECS * 3))s -timeout_error \
      -trace_stat -stf "$work/stat.csv" > "$work/uac.txt" 2>&1; then :; fi
  end=$(date +%s.%N)
  local failed; failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$work/stat.csv")
  echo "$(echo "$end - $start" | bc) ${failed:-?}"
}

measure() { # $1 = label, $2 = port, rest = UAS command
  local label=$1 port=$2; shift 2
  taskset -c 0 "$@" > "$work/uas.txt" 2>&1 &
  local pid=$!
  sleep 1
  local before; before=$(cpu_ns $pid)
  read -r elapsed failed < <(run_uac "$port")
  local after; after=$(cpu_ns $pid)
  local rss_mb; rss_mb=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status")
  kill -TERM $pid; wait $pid 2>/dev/null || true
  local us_per_call; us_per_call=$(echo "scale=1; ($after - $before) / 1000 / $CALLS" | bc)
  local cps; cps=$(echo "scale=0; $CALLS / $elapsed" | bc)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$CALLS" "$cps" "$failed" "$us_per_call" "$rss_mb"
}

printf 'uas\tcalls\tcalls_per_s\tfailed\tuas_cpu_us_per_call\tuas_peak_rss_mb\n'
for _ in $(seq "$RUNS"); do
  measure sipp-uas 5080 sipp -sn uas -i 127.0.0.1 -p 5080 -nostdin -buff_size 4194304
  measure floorwire-answer 5090 target/release/turret-sim answer --sip 127.0.0.1:5090
done
