#!/bin/sh
# keepalived vrrp_script for the Floorwire SBC pair (see keepalived.conf beside it).
# Exits 0 when the local sbc-shim's admin port answers /healthz with 200; otherwise
# exits with curl's non-zero status. The standby answers 200 too: the check is
# "the process is up", not "this node is active".
# SBC_HEALTH_URL overrides the URL (keepalived passes little environment: set it
# with e.g. script "/usr/bin/env SBC_HEALTH_URL=... /etc/keepalived/sbc-health.sh").
# With enable_script_security, keep this file owned by root and not writable by others.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
url="${SBC_HEALTH_URL:-http://127.0.0.1:9200/healthz}"
status=0
curl -fsS --max-time 1 "$url" > /dev/null || status=$?
exit "$status"
