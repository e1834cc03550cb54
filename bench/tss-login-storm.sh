#!/usr/bin/env bash
# Login storm against the TSS: N turrets at once each do FTPES (TLS), an LDAP
# search-then-bind over LDAPS against a real slapd on this machine, and a profile
# download (rendered live, SIP credential minted). Prints logins/s and p50/p99 of the
# per-login time, beside a reference run of the same N bare LDAPS binds
# (ldapwhoami) against the same slapd: the machine's floor for the directory part.
#
#   bench/tss-login-storm.sh N RUNS        # e.g. bench/tss-login-storm.sh 100 3
#
# Needs (Debian): slapd ldap-utils curl openssl python3. Loopback only; every process
# it starts is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100}
RUNS=${2:-3}
[ "$N" -ge 1 ] && [ "$N" -le 500 ] || { echo "N must be 1..500" >&2; exit 2; }

for cmd in slapd slapadd ldapwhoami curl openssl python3; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || { echo "missing $cmd" >&2; exit 1; }
done

cargo build --release -q -p tss
TSS=target/release/tss

WORK=$(mktemp -d /tmp/floorwire-storm-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A CA and a certificate for 127.0.0.1, shared by slapd and the TSS.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=storm-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/req.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$WORK/san.ext"
openssl x509 -req -in "$WORK/req.pem" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/san.ext" -out "$WORK/cert.pem" 2>/dev/null

BASE="dc=floorwire,dc=test"
mkdir -p "$WORK/db"
cat > "$WORK/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $WORK/slapd.pid
TLSCertificateFile $WORK/cert.pem
TLSCertificateKeyFile $WORK/key.pem
database mdb
maxsize 104857600
suffix "$BASE"
rootdn "cn=manager,$BASE"
rootpw manager-secret
directory $WORK/db
index uid eq
access to attrs=userPassword by anonymous auth by * none
access to * by * read
EOF
python3 - "$N" "$BASE" > "$WORK/data.ldif" <<'EOF'
import sys
n, base = int(sys.argv[1]), sys.argv[2]
print(f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\no: Floorwire\ndc: floorwire\n")
print(f"dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n")
for i in range(n):
    u = f"storm{i:03d}"
    print(f"dn: uid={u},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\nuserPassword: pass-{u}\n")
EOF
/usr/sbin/slapadd -f "$WORK/slapd.conf" -l "$WORK/data.ldif" >/dev/null 2>&1
LDAPS_PORT=$(free_port)
/usr/sbin/slapd -f "$WORK/slapd.conf" -h "ldaps://127.0.0.1:$LDAPS_PORT/" -d 0 2>"$WORK/slapd.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
  LDAPTLS_CACERT="$WORK/ca.pem" ldapwhoami -x -H "ldaps://127.0.0.1:$LDAPS_PORT" \
    -D "uid=storm000,ou=people,$BASE" -w pass-storm000 >/dev/null 2>&1 && break
  sleep 0.1
done

# The floor: one site, N traders with a turret and two lines each.
python3 - "$N" > "$WORK/seed.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
seed = {
  "sites": [{"name": "paris", "tpos": ["127.0.1.21:5060", "127.0.1.22:5060"], "recorders": ["127.0.1.40:5060", "127.0.2.40:5060"]}],
  "users": [{"name": f"storm{i:03d}", "site": "paris"} for i in range(n)],
  "lines": [{"id": "SH-FX", "kind": "shared", "number": "+33142685300", "label": "FX"},
            {"id": "HOOT", "kind": "hoot", "number": "7900", "label": "Hoot"}],
  "profiles": {f"storm{i:03d}": {"appearances": [{"line": "SH-FX", "button": 1}, {"line": "HOOT", "access": "listen", "button": 2}]} for i in range(n)},
  "turrets": [{"device_id": f"T-{i:04d}", "user": f"storm{i:03d}", "model": "IQMAX", "site": "paris"} for i in range(n)],
}
print(json.dumps(seed))
EOF

export TSS__STORE__URL="sqlite://$WORK/tss.sqlite3?mode=rwc"
export TSS__ADMIN__LISTEN=127.0.0.1:0 TSS__API__LISTEN=127.0.0.1:0 TSS__FTPES__LISTEN=127.0.0.1:0
export TSS__FTPES__PASSIVE_PORT_FIRST=41000 TSS__FTPES__PASSIVE_PORT_LAST=41999
export TSS__FTPES__CERT_FILE="$WORK/cert.pem" TSS__FTPES__KEY_FILE="$WORK/key.pem"
export TSS__LDAP__URLS="[\"ldaps://127.0.0.1:$LDAPS_PORT\"]" TSS__LDAP__CA_FILE="$WORK/ca.pem"
export TSS__LDAP__BASE_DN="ou=people,$BASE" TSS__LDAP__ADMIN_GROUP_DN=""
export RUST_LOG=warn
"$TSS" seed "$WORK/seed.json" >/dev/null
"$TSS" serve > "$WORK/tss.out" 2>"$WORK/tss.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q 'tss ready' "$WORK/tss.out" && break; sleep 0.1; done
FTPES=$(sed -n 's/.*ftpes=\([^ ]*\).*/\1/p' "$WORK/tss.out")
[ -n "$FTPES" ] || { echo "tss did not start:"; cat "$WORK/tss.log"; exit 1; }

# One storm: N clients at once; prints "wall_seconds failures p50 p99".
storm() { # kind
  local kind=$1
  local times="$WORK/times.$kind"
  : > "$times"
  local start end
  start=$(date +%s.%N)
  for i in $(seq 0 $((N - 1))); do
    u=$(printf 'storm%03d' "$i")
    if [ "$kind" = tss ]; then
      ( curl -s -o /dev/null --max-time 60 -w '%{time_total} %{exitcode}\n' --ssl-reqd --cacert "$WORK/ca.pem" \
          -u "$u:pass-$u" "ftp://$FTPES/profile.json" >> "$times" ) &
    else
      ( t0=$(date +%s.%N)
        if LDAPTLS_CACERT="$WORK/ca.pem" ldapwhoami -x -H "ldaps://127.0.0.1:$LDAPS_PORT" \
             -D "uid=$u,ou=people,$BASE" -w "pass-$u" >/dev/null 2>&1; then rc=0; else rc=1; fi
        t1=$(date +%s.%N); echo "$(echo "$t1 - $t0" | bc -l) $rc" >> "$times" ) &
    fi
  done
  wait # storm runs in a subshell: its only children are this storm's clients
  end=$(date +%s.%N)
  python3 - "$start" "$end" "$times" "$N" <<'EOF'
import sys
start, end, path, n = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = [l.split() for l in open(path) if l.strip()]
times = sorted(float(r[0]) for r in rows)
fail = sum(1 for r in rows if r[1] != "0") + (n - len(rows))
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")
print(f"{end - start:.3f} {fail} {pick(0.5) * 1000:.0f} {pick(0.99) * 1000:.0f}")
EOF
}

command -v bc >/dev/null || { echo "missing bc" >&2; exit 1; }
echo "N=$N concurrent logins, $RUNS runs; columns: logins/s, failures, p50 ms, p99 ms"
for run in $(seq 1 "$RUNS"); do
  read -r wall fail p50 p99 < <(storm ldap)
  printf 'run %d  reference (bare LDAPS bind): %6.0f/s  failed %s  p50 %s ms  p99 %s ms\n' \
    "$run" "$(echo "$N / $wall" | bc -l)" "$fail" "$p50" "$p99"
  read -r wall fail p50 p99 < <(storm tss)
  printf 'run %d  tss (FTPES + LDAP + profile):  %6.0f/s  failed %s  p50 %s ms  p99 %s ms\n' \
    "$run" "$(echo "$N / $wall" | bc -l)" "$fail" "$p50" "$p99"
done
