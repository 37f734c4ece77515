#!/usr/bin/env bash
# demo.sh [stop] — the pgleap story on two local servers: PostgreSQL 13 (the old production
# server) and PostgreSQL 17 (its replacement), under .demo/ in the clone. Both keep running
# after the demo so you can look around; `make demo-stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD/.demo
CACHE=${PGLEAP_PG_CACHE:-$HOME/.cache/pgleap/pg}
SOURCE_MAJOR=13 TARGET_MAJOR=17
SOURCE_PORT=${DEMO_SOURCE_PORT:-15413} TARGET_PORT=${DEMO_TARGET_PORT:-15417}
OS_USER=${PGLEAP_PG_OS_USER:-postgres}

as_server_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$OS_USER" -- "$@"; else "$@"; fi
}
pg_ctl_of() { echo "$CACHE/$1/bin/pg_ctl"; }

stop_server() {
  local major=$1 data=$ROOT/pg$1
  [ -f "$data/postmaster.pid" ] && as_server_user "$(pg_ctl_of "$major")" -D "$data" -m fast -w stop >/dev/null || true
}

if [ "${1:-}" = stop ]; then
  stop_server $SOURCE_MAJOR
  stop_server $TARGET_MAJOR
  echo "demo servers stopped (data kept in $ROOT; make clean removes it)"
  exit 0
fi

start_server() {
  local major=$1 port=$2 data=$ROOT/pg$1
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    chmod 700 "$data"
    [ "$(id -u)" = 0 ] && chown "$OS_USER" "$data" "$ROOT"
    as_server_user "$CACHE/$major/bin/initdb" --no-sync -D "$data" -U postgres -A trust -E UTF8 --locale C >/dev/null
  fi
  if ! as_server_user "$(pg_ctl_of "$major")" -D "$data" status >/dev/null 2>&1; then
    as_server_user "$(pg_ctl_of "$major")" -D "$data" -l "$data/server.log" -w start \
      -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data -c wal_level=logical" >/dev/null \
      || { echo "demo: PostgreSQL $major did not start; its log:" >&2; tail -n 20 "$data/server.log" >&2; exit 1; }
  fi
  echo "PostgreSQL $major running on 127.0.0.1:$port (data in $data)"
}

mkdir -p "$ROOT"
[ "$(id -u)" = 0 ] && chmod 755 "$ROOT"
start_server $SOURCE_MAJOR "$SOURCE_PORT"
start_server $TARGET_MAJOR "$TARGET_PORT"

SOURCE="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=shop"
TARGET="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=shop"
if ! psql -XqtA "host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=postgres" -c "SELECT 1 FROM pg_database WHERE datname = 'shop'" | grep -q 1; then
  echo "loading a sample shop database into the PostgreSQL $SOURCE_MAJOR server"
  psql -Xq "host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=postgres" -c "CREATE DATABASE shop"
  pgbench -q -i -s 5 "$SOURCE" >/dev/null 2>&1
  psql -Xq -v ON_ERROR_STOP=1 "$SOURCE" -f scripts/demo-data.sql
fi
psql -Xq "host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'shop'" | grep -q 1 \
  || psql -Xq "host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres" -c "CREATE DATABASE shop"

pgleap_check() {
  echo
  echo "\$ bin/pgleap check --source '$SOURCE' --target '$TARGET'"
  bin/pgleap check --source "$SOURCE" --target "$TARGET"
}

# The sample database has two tables without a primary key (pgbench's own history table
# among them): check reports them as blockers (exit 1), each with its fix. The demo applies
# the fixes and checks again.
status=0
pgleap_check || status=$?
if [ "$status" = 1 ]; then
  fixes="ALTER TABLE audit_log ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;"
  echo
  echo "pgleap check found blockers. Applying the fixes it suggests:"
  echo "$fixes"
  psql -Xq -v ON_ERROR_STOP=1 "$SOURCE" -c "$fixes"
  pgleap_check
elif [ "$status" != 0 ]; then
  exit "$status"
fi

echo
echo "\$ bin/pgleap migrate --no-follow --source '$SOURCE' --target '$TARGET'"
bin/pgleap migrate --no-follow --source "$SOURCE" --target "$TARGET"
echo
echo "\$ bin/pgleap verify --schema --source '$SOURCE' --target '$TARGET'"
bin/pgleap verify --schema --source "$SOURCE" --target "$TARGET"
echo
echo "Rows per table on both servers:"
count_rows="SELECT string_agg(format('%s %s', relname, n_live_tup), ', ' ORDER BY relname) FROM pg_stat_user_tables WHERE schemaname <> 'pgleap'"
for side in "$SOURCE" "$TARGET"; do
  psql -XqtA "$side" -c "SELECT pg_stat_clear_snapshot()" -c "ANALYZE" -c "$count_rows" | tail -n 1
done
echo
echo "The servers keep running: psql '$SOURCE'. Stop them with: make demo-stop"
