#!/usr/bin/env bash
# Starts the Floorwire lab on its embedded defaults (foreground; Ctrl-C stops it).
# Builds the services first (release), then runs `turret-sim lab`, which starts every
# service as a child process and prints `lab ready: PATH` (PATH is lab.json) once
# every service is healthy. Extra arguments go to `turret-sim lab` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bins
exec target/release/turret-sim lab "$@"
