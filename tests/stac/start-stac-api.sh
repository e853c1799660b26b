#!/usr/bin/env bash
# Brings up a real STAC API on 127.0.0.1 for tests: stac-fastapi-pgstac (uvicorn) on a throw-away
# PostgreSQL cluster with PostGIS and the pgstac schema. Safe to run twice: what is already up is
# kept. Prints the API's URL as its last line. tests/stac/README.md has the details.
#
#   STAC_API_DIR      cluster, logs and pid files      (default /tmp/snakemap-stac-api)
#   STAC_API_PG_PORT  PostgreSQL's port on 127.0.0.1   (default 55432)
#   STAC_API_PORT     the API's port on 127.0.0.1      (default 8082)
#   STAC_API_PYTHON   python with stac-fastapi.pgstac, pypgstac and uvicorn
#                     (default: the repository's .venv/bin/python, else python3)
#   STAC_API_TIMEOUT  seconds to wait for the API to answer (default 60)
#   STAC_API_PG_BIN   PostgreSQL's bin directory (default: the one of `postgres` on PATH)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

DIR="${STAC_API_DIR:-/tmp/snakemap-stac-api}"
PG_PORT="${STAC_API_PG_PORT:-55432}"
API_PORT="${STAC_API_PORT:-8082}"
TIMEOUT="${STAC_API_TIMEOUT:-60}"
HOST=127.0.0.1            # loopback only, never anything else
PG_USER=snakemap          # the cluster's superuser (runs the migration and serves the API)
PG_PASSWORD=snakemap      # a throw-away cluster on loopback; password auth, no trust
PG_DB=pgstac
MARKER=.snakemap-stac-api # stop-stac-api.sh removes only a directory that holds this file

die() { echo "start-stac-api.sh: $*" >&2; exit 1; }
log() { echo "start-stac-api.sh: $*" >&2; }

[[ "$DIR" = /* ]] || die "STAC_API_DIR must be an absolute path (got '$DIR')"
[[ "$PG_PORT" =~ ^[0-9]+$ && "$API_PORT" =~ ^[0-9]+$ ]] || die "ports must be numbers"
[[ "$PG_PORT" != "$API_PORT" ]] || die "STAC_API_PG_PORT and STAC_API_PORT must differ"

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
uvicorn_pid() {  # the uvicorn this script started, while it runs
    local pid
    pid="$(cat "$DIR/uvicorn.pid" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q uvicorn "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}
if port_open "$API_PORT" && ! uvicorn_pid >/dev/null; then
    die "port $HOST:$API_PORT is taken by another program: set STAC_API_PORT"
fi

# --- python ----------------------------------------------------------------------------------
if [[ -n "${STAC_API_PYTHON:-}" ]]; then PY="$STAC_API_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else PY="$(command -v python3)" || die "no python3"
fi
"$PY" -c 'import stac_fastapi.pgstac.app, pypgstac.migrate, uvicorn, psycopg' 2>/dev/null \
    || die "$PY lacks stac-fastapi.pgstac, pypgstac[psycopg] or uvicorn: pip install -e '.[dev]'"

# --- PostgreSQL and PostGIS ------------------------------------------------------------------
if [[ -n "${STAC_API_PG_BIN:-}" ]]; then PG_BIN="$STAC_API_PG_BIN"
elif command -v postgres >/dev/null 2>&1; then PG_BIN="$(dirname "$(readlink -f "$(command -v postgres)")")"
else PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
fi
[[ -x "$PG_BIN/postgres" && -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] \
    || die "PostgreSQL server not found (apt-get install postgresql)"
PG_MAJOR="$("$PG_BIN/postgres" --version | awk '{print $3}' | cut -d. -f1)"   # "postgres (PostgreSQL) 15.18 ..."
PG_SHARE="$("$PG_BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$PG_MAJOR")"
[[ -d "$PG_SHARE/extension" ]] || PG_SHARE="/usr/share/postgresql/$PG_MAJOR"

if [[ ! -f "$PG_SHARE/extension/postgis.control" ]]; then
    PKG="postgresql-$PG_MAJOR-postgis-3"
    if [[ "$(id -u)" != 0 ]]; then
        die "PostGIS for PostgreSQL $PG_MAJOR is missing and this is not root: run 'sudo apt-get install $PKG'"
    fi
    command -v apt-get >/dev/null 2>&1 || die "PostGIS is missing and there is no apt-get: install PostGIS for PostgreSQL $PG_MAJOR"
    log "installing $PKG (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$PKG" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$PKG" >/dev/null; } \
        || die "apt-get install $PKG failed"
    [[ -f "$PG_SHARE/extension/postgis.control" ]] || die "$PKG installed, but $PG_SHARE/extension/postgis.control is missing"
fi

# --- who runs postgres: PostgreSQL refuses root --------------------------------------------
if [[ "$(id -u)" = 0 ]]; then
    if id -u postgres >/dev/null 2>&1; then RUNAS=postgres
    else
        RUNAS=snakemap-pg
        id -u "$RUNAS" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$RUNAS"
    fi
    as_pg() { runuser -u "$RUNAS" -- "$@"; }
else
    RUNAS="$(id -un)"
    as_pg() { "$@"; }
fi

PGDATA="$DIR/pgdata"
mkdir -p "$DIR"
touch "$DIR/$MARKER"
if [[ "$(id -u)" = 0 ]]; then
    chown "$RUNAS" "$DIR"
    as_pg test -w "$DIR" \
        || die "user '$RUNAS' cannot write to $DIR (a parent directory is closed to it): use a STAC_API_DIR under /tmp"
fi

pg_running() { [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

if [[ -d "$PGDATA" && ! -f "$PGDATA/PG_VERSION" ]]; then
    log "removing a half-made cluster in $PGDATA"; rm -rf "$PGDATA"
fi
if [[ ! -d "$PGDATA" ]]; then
    log "creating a PostgreSQL $PG_MAJOR cluster in $PGDATA (user $RUNAS)"
    PWFILE="$DIR/.pgpass-init"
    printf '%s\n' "$PG_PASSWORD" > "$PWFILE"
    chown "$RUNAS" "$PWFILE" 2>/dev/null || true
    chmod 600 "$PWFILE"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$PG_USER" --pwfile="$PWFILE" --auth=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
        || { rm -f "$PWFILE"; die "initdb failed: $DIR/initdb.log"; }
    rm -f "$PWFILE"
    # Only TCP on loopback: no Unix socket, small memory, no durability (a throw-away cluster).
    cat >>"$PGDATA/postgresql.conf" <<EOF

# snakemap tests/stac/start-stac-api.sh
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 50
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    cat >"$PGDATA/pg_hba.conf" <<EOF
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   scram-sha-256
EOF
fi

if pg_running; then
    log "PostgreSQL already running on $HOST:$PG_PORT"
else
    if port_open "$PG_PORT"; then die "port $HOST:$PG_PORT is taken by another program: set STAC_API_PG_PORT"; fi
    rm -f "$PGDATA/postmaster.pid"
    log "starting PostgreSQL on $HOST:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 start </dev/null >/dev/null 2>&1 \
        || die "PostgreSQL did not start: $DIR/postgres.log"
fi

export PGHOST="$HOST" PGPORT="$PG_PORT" PGUSER="$PG_USER" PGPASSWORD="$PG_PASSWORD"
DSN="postgresql://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB"

# The database and the pgstac schema (pypgstac migrate does nothing when it is at its version).
"$PY" - "$PG_DB" <<'EOF' || die "could not create the database"
import sys, psycopg
name = sys.argv[1]
with psycopg.connect(dbname="postgres", autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(f'CREATE DATABASE "{name}"')
EOF
"$PY" -c 'import sys; from pypgstac.pypgstac import cli; sys.argv[0] = "pypgstac"; sys.exit(cli())' \
    migrate --dsn "$DSN" >>"$DIR/migrate.log" 2>&1 || die "pypgstac migrate failed: $DIR/migrate.log"
printf '%s\n' "$DSN" >"$DIR/dsn"

# --- the API -----------------------------------------------------------------------------------
URL="http://$HOST:$API_PORT"
api_up() {
    "$PY" - "$URL/" <<'EOF' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.exit(0 if r.status == 200 and json.load(r).get("type") == "Catalog" else 1)
EOF
}

if uvicorn_pid >/dev/null && api_up; then
    log "the STAC API is already up"
    echo "$URL"; exit 0
fi
if pid="$(uvicorn_pid)"; then kill "$pid" 2>/dev/null || true; sleep 1; fi
if port_open "$API_PORT"; then die "port $HOST:$API_PORT is taken by another program: set STAC_API_PORT"; fi

log "starting stac-fastapi-pgstac on $URL"
# Run from $DIR: the settings would read a .env in the working directory. All three standard
# streams are redirected, so a caller that captures output (subprocess.run) does not wait on it.
(
    cd "$DIR"
    export PGDATABASE="$PG_DB" ENABLE_TRANSACTIONS_EXTENSIONS=TRUE
    export STAC_FASTAPI_TITLE="snakemap test STAC API" STAC_FASTAPI_DESCRIPTION="tests/stac" \
        STAC_FASTAPI_LANDING_ID=snakemap-test STAC_FASTAPI_VERSION=test
    exec setsid "$PY" -m uvicorn stac_fastapi.pgstac.app:create_app --factory \
        --host "$HOST" --port "$API_PORT" --log-level warning \
        </dev/null >>"$DIR/uvicorn.log" 2>&1
) &
echo $! >"$DIR/uvicorn.pid"

deadline=$((SECONDS + TIMEOUT))
until api_up; do
    uvicorn_pid >/dev/null || die "uvicorn exited: $DIR/uvicorn.log"
    (( SECONDS < deadline )) || die "the API did not answer $URL/ within ${TIMEOUT}s: $DIR/uvicorn.log"
    sleep 0.5
done
log "the STAC API is up (logs in $DIR)"
echo "$URL"
