#!/usr/bin/env bash
# Start (or reuse) a throwaway local PostgreSQL server for the store tests.
#
# Idempotent: if a server is already answering on the port, it is reused; the
# test database is created only when missing. Works as root (initdb refuses to
# run as root, so the server runs as the `postgres` user) and as a normal user.
#
# Usage:  eval "$(scripts/start_test_postgres.sh)"
# The last line printed on stdout is the export line; progress goes to stderr.
#
# Settings (environment): PGTEST_DIR (default /tmp/pg), PGTEST_PORT (55432),
# PGTEST_DB (chatmem_test), PGTEST_BIN (/usr/lib/postgresql/15/bin).
set -euo pipefail

DIR="${PGTEST_DIR:-/tmp/pg}"
PORT="${PGTEST_PORT:-55432}"
DB="${PGTEST_DB:-chatmem_test}"
BIN="${PGTEST_BIN:-}"
HOST=127.0.0.1

if [[ -z "$BIN" ]]; then
    for candidate in /usr/lib/postgresql/*/bin; do
        [[ -x "$candidate/pg_ctl" ]] && BIN="$candidate"
    done
fi
if [[ -z "$BIN" || ! -x "$BIN/pg_ctl" ]]; then
    echo "start_test_postgres: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 1
fi

# Run a command as the server's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [[ "$(id -u)" == "0" ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if "$BIN/pg_isready" -q -h "$HOST" -p "$PORT"; then
    echo "start_test_postgres: reusing the server already running on $HOST:$PORT" >&2
else
    mkdir -p "$DIR"
    if [[ "$(id -u)" == "0" ]]; then
        chown postgres "$DIR"
    fi
    if [[ ! -f "$DIR/data/PG_VERSION" ]]; then
        echo "start_test_postgres: initdb in $DIR/data" >&2
        as_owner "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >"$DIR/initdb.log" 2>&1 || {
            cat "$DIR/initdb.log" >&2
            exit 1
        }
    fi
    # A stale pid file from a killed server would make pg_ctl refuse to start.
    if ! as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
        rm -f "$DIR/data/postmaster.pid"
    fi
    echo "start_test_postgres: starting the server on $HOST:$PORT" >&2
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -w -t 60 \
        -o "-p $PORT -k $DIR -c listen_addresses=$HOST -c fsync=off" \
        -l "$DIR/log" start >&2 || {
        tail -n 30 "$DIR/log" >&2 || true
        exit 1
    }
fi

for _ in $(seq 1 60); do
    "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" && break
    sleep 0.5
done

exists="$("$BIN/psql" -h "$HOST" -p "$PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'")"
if [[ "$exists" != "1" ]]; then
    "$BIN/createdb" -h "$HOST" -p "$PORT" -U postgres "$DB"
    echo "start_test_postgres: created database $DB" >&2
fi

echo "export CHATMEM_TEST_DATABASE_URL=postgresql://postgres@$HOST:$PORT/$DB"
