#!/usr/bin/env bash
# RTP relay for many calls at once: floorwire's relays (one per stream, one thread:
# examples/relay_many) against the machine's forwarding limit for the same streams
# (`udpbench fwd epoll`: epoll over the sockets, recvmmsg drain + sendmmsg, from
# ../shared/bench/udpbench.c), same generator, sink and core pinning, in one run.
# STREAMS streams of 172-byte G.711 packets (a call is two streams); the generator
# sends at RATE packets/s in all (0: as fast as it can). Loopback only; every process
# is bounded by SECONDS.
# Usage: bench/rtp-calls.sh [STREAMS] [RATE] [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${1:-1000}; RATE=${2:-0}; SECS=${3:-10}; RUNS=${4:-3}
IN=20000; OUT=24000
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/udpbench" ../shared/bench/udpbench.c
cargo build --quiet --release -p floorwire --example relay_many
relay=target/release/examples/relay_many

one() { # $1 = label, rest = forwarder command
  local label=$1; shift
  taskset -c 1 "$work/udpbench" sink $OUT "$STREAMS" $((SECS + 3)) > "$work/sink.txt" &
  local sink=$!
  taskset -c 0 "$@" > "$work/fwd.txt" &
  local fwd=$!
  sleep 1
  taskset -c 1 "$work/udpbench" gen 127.0.0.1 $IN "$STREAMS" "$RATE" "$SECS" 172 32 > "$work/gen.txt"
  wait $fwd; wait $sink
  local pps; pps=$(sed -n 's/.*avg=\([0-9]*\) pps.*/\1/p' "$work/sink.txt")
  printf '%s\t%s\t%s\t%s\n' "$label" "$pps" "$(tr '\n' ' ' < "$work/sink.txt")" "$(tr '\n' ' ' < "$work/fwd.txt")"
}

printf 'forwarder\tsink_pps\tsink_report\tforwarder_report\n'
for _ in $(seq "$RUNS"); do
  one udpbench-fwd-epoll "$work/udpbench" fwd epoll $IN $OUT "$STREAMS" $((SECS + 2)) 64
  one floorwire-relays "$relay" $IN $OUT "$STREAMS" $((SECS + 2))
done
