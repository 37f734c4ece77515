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
# Each demo starts from an empty target: what an earlier run left (its slot and publication
# on the source, its copy on the target) goes first.
if psql -Xq "host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'shop'" | grep -q 1; then
  bin/pgleap cleanup --source "$SOURCE" --target "$TARGET" >/dev/null
  psql -Xq "host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres" -c "DROP DATABASE shop"
fi
psql -Xq "host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres" -c "CREATE DATABASE shop"

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

# migrate copies everything, then follows the source until it is stopped; it runs in the
# background while the "application" keeps writing to the old server.
echo
echo "\$ bin/pgleap migrate --source '$SOURCE' --target '$TARGET' &"
bin/pgleap migrate --source "$SOURCE" --target "$TARGET" >"$ROOT/migrate.log" 2>&1 &
migrate_pid=$!
trap 'kill -INT $migrate_pid 2>/dev/null || true' EXIT
phase() { psql -XqtA "$TARGET" -c "SELECT phase FROM pgleap.migration" 2>/dev/null || true; }
for _ in $(seq 600); do
  [ "$(phase)" = streaming ] && break
  kill -0 $migrate_pid 2>/dev/null || { echo "demo: pgleap migrate stopped:" >&2; cat "$ROOT/migrate.log" >&2; exit 1; }
  sleep 0.2
done
grep -v '^time=' "$ROOT/migrate.log"

echo
echo "The application keeps writing to PostgreSQL $SOURCE_MAJOR: pgbench for 8 seconds, while pgleap streams."
pgbench -n -c 2 -T 8 "$SOURCE" >"$ROOT/pgbench.log" 2>&1 &
pgbench_pid=$!
sleep 2
echo "Meanwhile pgleap verify compares every row of both servers at one point of the source's"
echo "history: the apply stops there for a moment while the target's snapshot is taken."
echo "\$ bin/pgleap verify --source '$SOURCE' --target '$TARGET'"
bin/pgleap verify --source "$SOURCE" --target "$TARGET"
wait $pgbench_pid
grep -E '^(number of transactions actually processed|tps)' "$ROOT/pgbench.log"
caught_up() { bin/pgleap status --json --sample 0 --source "$SOURCE" --target "$TARGET" | grep -q '"lag_bytes": 0,'; }
for _ in $(seq 300); do caught_up && break; sleep 0.2; done
echo
echo "\$ bin/pgleap status --source '$SOURCE' --target '$TARGET'"
bin/pgleap status --source "$SOURCE" --target "$TARGET"
echo
echo "\$ bin/pgleap verify --schema --source '$SOURCE' --target '$TARGET'"
bin/pgleap verify --schema --source "$SOURCE" --target "$TARGET"
echo
echo "Once caught up, a hash of every row of pgbench's tables, computed by psql on each server:"
for side in "$SOURCE" "$TARGET"; do
  psql -XqtA "$side" -c "SELECT string_agg(x, ', ' ORDER BY x) FROM (
    SELECT 'accounts ' || md5(string_agg(md5(a::text), '' ORDER BY aid)) AS x FROM pgbench_accounts a
    UNION ALL SELECT 'tellers ' || md5(string_agg(md5(t::text), '' ORDER BY tid)) FROM pgbench_tellers t
    UNION ALL SELECT 'history ' || count(*) || ' rows ' || md5(coalesce(string_agg(md5(h::text), '' ORDER BY md5(h::text)), '')) FROM pgbench_history h) s"
done
echo
echo "Stopping pgleap migrate with Ctrl-C (running it again resumes where it stopped):"
kill -INT $migrate_pid
wait $migrate_pid
trap - EXIT
tail -n 1 "$ROOT/migrate.log"
echo
echo "The servers keep running: psql '$SOURCE'. The target is read-only for everyone but pgleap"
echo "until cutover; bin/pgleap cleanup ends the migration. Stop the servers with: make demo-stop"
