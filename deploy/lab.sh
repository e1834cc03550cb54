#!/usr/bin/env bash
# Starts the Floorwire lab on its embedded defaults (foreground; Ctrl-C stops it).
# Prints `lab ready: PATH` when every service is up; PATH is lab.json.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p turret-sim -- lab "$@"
