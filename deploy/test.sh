#!/usr/bin/env bash
# Floorwire's whole test suite, on a fresh Debian 12 machine as root (or this one):
# installs the real peers the tests talk to, then runs lint and every test.
# Needs ../shared/corpora beside the repository (the RFC torture corpora).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

# Real peers, from Debian's packages: SIPp (sip-tester) and baresip (a real phone,
# with real RTP) for call tests, curl for the
# REST API, MariaDB and PostgreSQL for the TSS store backends, OpenLDAP slapd for
# directory logins.
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v lftp >/dev/null 2>&1 || need+=(lftp)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/sbin/slapd ] || need+=(slapd ldap-utils)
# promtool and prometheus check deploy/prometheus and scrape the lab (turret-sim's lab test).
command -v promtool >/dev/null 2>&1 || need_prometheus=1
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need[*]}: run as root so they can be installed with apt-get" >&2
    exit 1
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The tests run their own slapd instances: the package's default directory is not needed.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -n "${need_prometheus:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "missing prometheus (promtool): run as root so it can be installed with apt-get" >&2; exit 1; }
  log "installing prometheus"
  export DEBIAN_FRONTEND=noninteractive
  [ ${#need[@]} -gt 0 ] || apt-get update -qq
  # Without its recommended node exporter: that one listens on every address's port
  # 9100, the lab's admin port. The package's own server is not needed running: the
  # test starts one of its own.
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

# The SIP services ask for a 4 MiB socket receive buffer; a stock Debian caps it at
# 208 KiB (docs/operations.md, "Host settings"). Raise the cap as an operator would, so
# the tests see what a production host gives.
if [ "$(cat /proc/sys/net/core/rmem_max)" -lt 4194304 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    sysctl -qw net.core.rmem_max=4194304 || echo "could not raise net.core.rmem_max" >&2
  else
    echo "net.core.rmem_max is below 4 MiB: the SIP services get less than they ask (run as root to raise it)" >&2
  fi
fi

# The store suites create a database per test on 127.0.0.1:3306 (root, no password)
# and 127.0.0.1:5432 (user postgres, trust): start the servers if they are not up.
bash deploy/test-databases.sh

if [ ! -f ../shared/corpora/rfc4475/MANIFEST.tsv ]; then
  echo "../shared/corpora is missing: the conformance tests read the RFC 4475/5118 corpora from there" >&2
  exit 1
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test --workspace"
cargo test --workspace
