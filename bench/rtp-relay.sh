#!/usr/bin/env bash
# RTP relay throughput: floorwire's relay against the machine's forwarding limit (the
# C forwarder of ../shared/bench/udpbench.c), same generator, sink and core pinning,
# in one run. Loopback only; every process is bounded by SECONDS.
# Usage: bench/rtp-relay.sh [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}; RUNS=${2:-3}
IN=41000; OUT=42000
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/udpbench" ../shared/bench/udpbench.c
cargo build --quiet --release -p floorwire --example relay_forward
relay=target/release/examples/relay_forward

one() { # $1 = label, rest = forwarder command
  local label=$1; shift
  taskset -c 1 "$work/udpbench" sink $OUT 1 $((SECS + 2)) > "$work/sink.txt" &
  local sink=$!
  taskset -c 0 "$@" > "$work/fwd.txt" &
  local fwd=$!
  sleep 0.5
  taskset -c 1 "$work/udpbench" gen 127.0.0.1 $IN 1 0 "$SECS" 172 32 > "$work/gen.txt"
  wait $fwd; wait $sink
  local pps; pps=$(sed -n 's/.*avg=\([0-9]*\) pps.*/\1/p' "$work/sink.txt")
  printf '%s\t%s\t%s\n' "$label" "$pps" "$(cat "$work/fwd.txt" | tr '\n' ' ')"
}

printf 'forwarder\tsink_pps\tforwarder_report\n'
for _ in $(seq "$RUNS"); do
  one udpbench-fwd-plain "$work/udpbench" fwd plain $IN $OUT 1 $((SECS + 1))
  one floorwire-relay "$relay" $IN $OUT $((SECS + 1))
done
