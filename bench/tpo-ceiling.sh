#!/usr/bin/env bash
# The issue's call-rate figure, for the TPO and for Kamailio in the same spell: the
# highest rate each carries with fewer than 0.1 % failed calls, found by bisection
# with bench/tpo-calls.sh (one 10 s run a step; a step passes when failed calls are
# under 0.1 % of those placed). The two paths step in turn, so a change in the
# machine's speed (these machines are shared) falls on both alike.
# Usage: bench/tpo-ceiling.sh [LOW] [HIGH] [STEP] [SECONDS]
#   e.g. bench/tpo-ceiling.sh 6000 14000 250 10
# LOW must pass and HIGH fail for the answer to be a ceiling: a LOW that fails or a
# HIGH that passes is reported as such, not bisected past.
# Environment: TPO_BIN=PATH (the tpo binary; built from this tree otherwise), and what
# bench/tpo-calls.sh takes. Prints one line a step and the two ceilings with their
# ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
LOW=${1:-4000}; HIGH=${2:-16000}; STEP=${3:-250}; SECS=${4:-10}
for v in LOW HIGH STEP SECS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v: a whole number >= 1 expected, got '${!v}'" >&2; exit 2; }
done
[ "$LOW" -lt "$HIGH" ] || { echo "LOW ($LOW) must be below HIGH ($HIGH)" >&2; exit 2; }
if [ -z "${TPO_BIN:-}" ]; then cargo build --quiet --release -p tpo; export TPO_BIN=target/release/tpo; fi
ulimit -n 20000 2>/dev/null || echo "could not raise the open-file limit to 20000: the TPO binds fewer RTP legs" >&2

log=$(mktemp); trap 'rm -f "$log"' EXIT
# One run of PATH at RATE: sets ok (yes when under 0.1 % failed) and prints a line:
# calls placed a second (SIPp's rate over the run), completed a second (the calls
# that did not fail), failed calls.
step() { # path rate
  local line placed failed
  line=$(PATHS=$1 MEMORY=0 bench/tpo-calls.sh "$2" "$SECS" 1 2>"$log" | awk -v p="$1" '$1==p' | tail -1) || true
  [ -n "$line" ] || { echo "bench/tpo-calls.sh gave no result for $1 at $2 calls/s:" >&2; tail -20 "$log" >&2; exit 1; }
  placed=$(echo "$line" | cut -f3); failed=$(echo "$line" | cut -f4)
  if [ $((failed * 1000)) -lt $(($2 * SECS)) ]; then ok=yes; else ok=no; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$placed" \
    "$(( placed * ($2 * SECS - failed) / ($2 * SECS) ))" "$failed" "$ok"
}

declare -A lo hi done_
for p in tpo kamailio; do lo[$p]=$LOW; hi[$p]=$HIGH; done_[$p]=; done
printf 'path\toffered\tplaced_per_s\tcompleted_per_s\tfailed\tpass\n'
# The bounds first, each path in turn.
for bound in "$LOW" "$HIGH"; do
  for p in tpo kamailio; do
    [ -z "${done_[$p]}" ] || continue
    step "$p" "$bound"
    if [ "$bound" = "$LOW" ] && [ $ok = no ]; then done_[$p]="below $LOW"; fi
    if [ "$bound" = "$HIGH" ] && [ $ok = yes ]; then done_[$p]="at least $HIGH"; fi
  done
done
# Then bisection, in turn, down to STEP.
while :; do
  moved=
  for p in tpo kamailio; do
    [ -z "${done_[$p]}" ] || continue
    if [ $((hi[$p] - lo[$p])) -le "$STEP" ]; then done_[$p]=${lo[$p]}; continue; fi
    mid=$(( (lo[$p] + hi[$p]) / 2 / STEP * STEP ))
    [ "$mid" -gt "${lo[$p]}" ] || mid=$((lo[$p] + STEP))
    step "$p" "$mid"
    if [ $ok = yes ]; then lo[$p]=$mid; else hi[$p]=$mid; fi
    moved=1
  done
  [ -n "$moved" ] || break
done
echo
echo "ceiling (offered calls/s with < 0.1 % failed): tpo ${done_[tpo]}, kamailio ${done_[kamailio]}"
if [[ ${done_[tpo]} =~ ^[0-9]+$ && ${done_[kamailio]} =~ ^[0-9]+$ ]]; then
  echo "ratio tpo/kamailio: $(echo "scale=2; ${done_[tpo]} / ${done_[kamailio]}" | bc)"
fi
