#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and benchmarks, and its URL in ARCHSEARCH_TEST_PG.
#
#   . .ci/postgres.sh          start (or reuse) the server and export ARCHSEARCH_TEST_PG
#   bash .ci/postgres.sh       the same, and print the URL
#   bash .ci/postgres.sh stop  stop the server (its data folder stays for the next start)
#
# The cluster is made with initdb and run with pg_ctl (as the `postgres` user when run as root,
# since the server refuses to run as root), listens on 127.0.0.1 only, and asks for a password
# (scram-sha-256) on every TCP connection, so a wrong password fails as it would in production.
# Settings: ARCHSEARCH_PG_DIR (default /tmp/archsearch-pg), ARCHSEARCH_PG_PORT (default 54329).
# Needs Debian's `postgresql` package; when root and it is missing, installs it.

_archsearch_pg() {
    local dir="${ARCHSEARCH_PG_DIR:-/tmp/archsearch-pg}"
    local port="${ARCHSEARCH_PG_PORT:-54329}"
    local data="$dir/data" bin owner password
    local -a as_owner=()

    bin="$(find /usr/lib/postgresql -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -z "$bin" ]]; then
        if [[ $EUID -ne 0 ]]; then
            echo "postgres.sh: PostgreSQL is not installed; run: sudo apt-get install postgresql" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null || return 1
        bin="$(find /usr/lib/postgresql -maxdepth 2 -type d -name bin | sort -V | tail -n 1)"
    fi

    if [[ $EUID -eq 0 ]]; then
        owner=postgres
        as_owner=(runuser -u postgres --)
    else
        owner="$(id -un)"
    fi

    if [[ "${1:-}" == stop ]]; then
        [[ -f "$data/postmaster.pid" ]] && "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
        return 0
    fi

    if [[ ! -f "$data/PG_VERSION" ]]; then
        mkdir -p "$dir"
        chown "$owner" "$dir"
        chmod 700 "$dir"
        password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
        printf '%s\n' "$password" >"$dir/password"
        chown "$owner" "$dir/password"
        chmod 600 "$dir/password"
        # Peer auth on the server's own socket (for the setup below), a password on TCP.
        "${as_owner[@]}" "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
        cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
EOF
    fi
    password="$(cat "$dir/password")"

    if ! "${as_owner[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
            tail -n 20 "$dir/server.log" >&2
            return 1
        }
        export ARCHSEARCH_PG_STARTED=1 # so a caller can stop only a server it started
    fi

    local psql=("${as_owner[@]}" "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'archsearch'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE ROLE archsearch LOGIN PASSWORD '$password'" >/dev/null || return 1
    fi
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'archsearch'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE archsearch OWNER archsearch" >/dev/null || return 1
    fi
    export ARCHSEARCH_TEST_PG="postgresql://archsearch:$password@127.0.0.1:$port/archsearch"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    _archsearch_pg "$@"
    [[ "${1:-}" == stop ]] || echo "$ARCHSEARCH_TEST_PG"
else
    _archsearch_pg "$@" || return 1
fi
