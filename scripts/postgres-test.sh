#!/usr/bin/env bash
# Start a private PostgreSQL server for the test suite and print its URL on stdout (nothing else
# goes to stdout). Idempotent: a second run finds the server up and only prints the URL.
#
# The server is Debian's PostgreSQL, run as the `postgres` user from its own data folder
# (CORRAL_TEST_PG_DIR, default /var/tmp/corral-pg) on 127.0.0.1:CORRAL_TEST_PG_PORT (default
# 55432) and a unix socket in that folder, so it never touches the distribution's own cluster.
# Tuned for tests (no fsync): never keep data you care about in it. Role and database are both
# `corral_test`, with a fixed password over loopback; the superuser is reachable only by peer auth.
# Setting it up needs root; once it runs, any user may run this to get the URL.
set -euo pipefail

DIR=${CORRAL_TEST_PG_DIR:-/var/tmp/corral-pg}
PORT=${CORRAL_TEST_PG_PORT:-55432}
NAME=corral_test
URL="postgresql+psycopg://${NAME}:${NAME}@127.0.0.1:${PORT}/${NAME}"

log() { echo "postgres-test: $*" >&2; }

# Ready and provisioned: the fast path, also for non-root users.
if command -v psql >/dev/null 2>&1 &&
  PGPASSWORD=$NAME PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$PORT" -U $NAME -d $NAME \
    -Atqc 'select 1' </dev/null >/dev/null 2>&1; then
  echo "$URL"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "error: no test server on 127.0.0.1:$PORT, and setting one up needs root"
  exit 1
fi

# One setup at a time (parallel test runs share the server).
exec 9>"/var/tmp/corral-pg.lock"
flock -w 600 9

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bindir)" ] || ! command -v psql >/dev/null 2>&1; then
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 9>&-
  apt-get install -y -q --no-install-recommends postgresql >&2 9>&-  # may start services
fi
BIN=$(bindir)
as_pg() { runuser -u postgres -- "$@" </dev/null 9>&-; } # the lock stays ours, not the server's

DATA="$DIR/data"
mkdir -p "$DIR"
chown postgres:postgres "$DIR"
chmod 700 "$DIR"
if [ ! -s "$DATA/PG_VERSION" ]; then
  log "creating a cluster in $DATA"
  rm -rf "$DATA"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >&2
  cat >>"$DATA/postgresql.conf" <<EOF
# corral test server (scripts/postgres-test.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
fi

ready() { as_pg "$BIN/pg_isready" -q -h "$DIR" -p "$PORT"; }
alive() { [ -n "$1" ] && grep -q '^State:[[:space:]]*[^Z]' "/proc/$1/status" 2>/dev/null &&
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = postgres ]; }
if ! ready; then
  # A server that is starting answers soon; a killed one's pid lingers a moment as a zombie.
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
  for _ in $(seq 60); do
    alive "$pid" && ! ready || break
    sleep 1
  done
  if ! ready && ! alive "$pid"; then
    # Lock files left by a killed server (their pid may belong to another process by now).
    rm -f "$DATA/postmaster.pid" "$DIR/.s.PGSQL.$PORT" "$DIR/.s.PGSQL.$PORT.lock"
    log "starting the server on 127.0.0.1:$PORT"
    # A killed server's children may hold its shared memory for a moment: try a few times.
    for try in 1 2 3 4 5; do
      as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "-p $PORT" -w -t 60 start >&2 &&
        break
      [ "$try" -lt 5 ] && sleep 2
    done
  fi
  if ! ready; then
    log "error: the server does not answer; see $DIR/server.log"
    exit 1
  fi
fi

psql_su() { as_pg psql -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
if [ -z "$(psql_su -c "select 1 from pg_roles where rolname = '$NAME'")" ]; then
  log "creating role $NAME"
  psql_su -c "create role $NAME login password '$NAME'" >&2
fi
if [ -z "$(psql_su -c "select 1 from pg_database where datname = '$NAME'")" ]; then
  log "creating database $NAME"
  psql_su -c "create database $NAME owner $NAME" >&2
fi

echo "$URL"
