#!/usr/bin/env bash
# Makes sure MariaDB (127.0.0.1:3306, root without password) and PostgreSQL
# (127.0.0.1:5432, user postgres, trust on loopback) answer, starting and configuring
# them on a fresh Debian 12 machine. Run as root. Tests override the URLs with
# TSS_TEST_MYSQL_URL / TSS_TEST_POSTGRES_URL.
set -euo pipefail

log() { printf '== %s\n' "$*"; }

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$what did not come up" >&2
  return 1
}

mariadb_up() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1'; }
if ! mariadb_up >/dev/null 2>&1; then
  log "starting MariaDB"
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_for "MariaDB socket" mariadb -u root -e 'SELECT 1'
  # Debian's root uses unix_socket auth; the tests connect over TCP without a password.
  mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE DATABASE IF NOT EXISTS test; FLUSH PRIVILEGES;" || true
  wait_for "MariaDB on 127.0.0.1:3306" mariadb_up
fi

postgres_up() { psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1'; }
if ! postgres_up >/dev/null 2>&1; then
  log "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for "PostgreSQL on 127.0.0.1:5432" postgres_up
  psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test'
fi
log "MariaDB and PostgreSQL answer on loopback"
