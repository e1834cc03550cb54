#!/usr/bin/env bash
# Calls through the SBC: SIPp's built-in uac (as a TPO, 127.0.8.21) -> sbc-shim
# (127.0.8.30, numbers normalised, policy, media anchored: two RTP port pairs and a
# relay per call) -> SIPp's built-in uas (as the carrier, 127.0.8.3). Reference on the
# same machine in the same run: the same SIPp pair back to back. Reports calls/s
# achieved, failed calls, and the SBC's CPU µs per call and peak RSS.
# Loopback only; every run is bounded by -m and -timeout.
# Usage: bench/sbc-calls.sh [RATE] [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000}; SECS=${2:-10}; RUNS=${3:-3}
CALLS=$((RATE * SECS))
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true' EXIT; echo "logs: $work" >&2
cargo build --quiet --release -p sbc-shim
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

cat > "$work/sbc.toml" <<TOML
[admin]
listen = "127.0.8.30:9200"
[sip]
listen = "127.0.8.30:5060"
max_calls = 100000
[media]
first_port = 20000
last_port = 59999
[rules]
[carrier]
address = "127.0.8.3:5060"
trunk = "carrier"
[tpo]
addresses = ["127.0.8.21:5060"]
trunk = "tpo"
[[trunk]]
name = "carrier"
max_concurrent_calls = 100000
max_calls_per_second = 100000
codecs = ["PCMA", "PCMU", "telephone-event"]
[ha]
mode = "standalone"
node = "bench"
listen = "127.0.8.30:5070"
peer = "127.0.8.31:5070"
heartbeat_ms = 100
dead_after_ms = 500
TOML

run_uac() { # $1 = target; prints "elapsed_s failed"
  local start end
  start=$(date +%s.%N)
  if sipp "$1" -sn uac -s 0142685300 -i 127.0.8.21 -p 5060 -r "$RATE" -m "$CALLS" -l $((RATE * 2)) \
      -nostdin -buff_size 4194304 -timeout $((SECS * 3))s -timeout_error \
      -trace_stat -stf "$work/stat.csv" > "$work/uac.txt" 2>&1; then :; fi
  end=$(date +%s.%N)
  # Failed = not successful: calls still hanging when the timeout ends the run count too.
  local ok; ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") c=i} END{print $c}' "$work/stat.csv")
  rm -f "$work/stat.csv"
  echo "$(echo "$end - $start" | bc) $((CALLS - ${ok:-0}))"
}

start_carrier() {
  (cd "$work" && exec sipp -sn uas -i 127.0.8.3 -p 5060 -nostdin -buff_size 4194304 -trace_err > "$work/uas.txt" 2>&1) &
  uas=$!
  sleep 0.5
  kill -0 "$uas" || { echo "the SIPp carrier did not start:" >&2; cat "$work/uas.txt" >&2; exit 1; }
}

printf 'path\tcalls\tcalls_per_s\tfailed\tsbc_cpu_us_per_call\tsbc_peak_rss_mb\n'
for _ in $(seq "$RUNS"); do
  start_carrier
  read -r elapsed failed < <(run_uac 127.0.8.3:5060)
  kill -TERM "$uas"; wait "$uas" 2>/dev/null || true
  printf 'sipp-direct\t%s\t%s\t%s\t-\t-\n' "$CALLS" "$(echo "scale=0; $CALLS / $elapsed" | bc)" "$failed"

  start_carrier
  target/release/sbc-shim serve --config "$work/sbc.toml" > "$work/sbc.txt" 2>&1 &
  sbc=$!
  until grep -q "ready: admin=" "$work/sbc.txt"; do sleep 0.1; done
  before=$(cpu_ns $sbc)
  read -r elapsed failed < <(run_uac 127.0.8.30:5060)
  after=$(cpu_ns $sbc)
  rss_mb=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$sbc/status")
  curl -s http://127.0.8.30:9200/metrics > "$work/sbc-metrics.txt" || true
  kill -TERM "$sbc" "$uas"; wait "$sbc" "$uas" 2>/dev/null || true
  printf 'through-sbc\t%s\t%s\t%s\t%s\t%s\n' "$CALLS" "$(echo "scale=0; $CALLS / $elapsed" | bc)" "$failed" \
    "$(echo "scale=1; ($after - $before) / 1000 / $CALLS" | bc)" "$rss_mb"
done
