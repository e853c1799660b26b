#!/usr/bin/env bash
# Stops what start-stac-api.sh started (uvicorn, then PostgreSQL) and removes STAC_API_DIR.
# Safe to run twice, and when nothing was started. Removes the directory only when it holds the
# marker file start-stac-api.sh leaves, so a mistyped STAC_API_DIR is never deleted.
set -uo pipefail

DIR="${STAC_API_DIR:-/tmp/snakemap-stac-api}"
MARKER=.snakemap-stac-api
PGDATA="$DIR/pgdata"

log() { echo "stop-stac-api.sh: $*" >&2; }

[[ "$DIR" = /* ]] || { log "STAC_API_DIR must be an absolute path (got '$DIR')"; exit 1; }
if [[ ! -d "$DIR" ]]; then log "nothing to stop ($DIR does not exist)"; exit 0; fi
if [[ ! -f "$DIR/$MARKER" ]]; then
    log "$DIR was not made by start-stac-api.sh (no $MARKER in it): leaving it alone"; exit 1
fi

# uvicorn: only the pid we started, and only while it still is uvicorn
pid="$(cat "$DIR/uvicorn.pid" 2>/dev/null || true)"
if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q uvicorn "/proc/$pid/cmdline" 2>/dev/null; then
    log "stopping uvicorn (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "uvicorn did not stop in 10 s: killing it"; kill -KILL "$pid" 2>/dev/null; }
fi

# PostgreSQL: as the user that owns the cluster (postgres refuses root)
if [[ -f "$PGDATA/postmaster.pid" ]]; then
    if command -v postgres >/dev/null 2>&1; then PG_BIN="$(dirname "$(readlink -f "$(command -v postgres)")")"
    else PG_BIN="${STAC_API_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
    fi
    [[ -n "${STAC_API_PG_BIN:-}" ]] && PG_BIN="$STAC_API_PG_BIN"
    owner="$(stat -c %U "$PGDATA")"
    if [[ "$(id -u)" = 0 && "$owner" != root ]]; then as_pg() { runuser -u "$owner" -- "$@"; }
    else as_pg() { "$@"; }
    fi
    log "stopping PostgreSQL"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop </dev/null >/dev/null 2>&1; then
        pgpid="$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
        if [[ -n "$pgpid" ]] && grep -q postgres "/proc/$pgpid/cmdline" 2>/dev/null; then
            log "pg_ctl stop failed: killing the postmaster (pid $pgpid)"
            kill -QUIT "$pgpid" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.2; done
        fi
    fi
fi

rm -rf -- "$DIR"
log "stopped; removed $DIR"
