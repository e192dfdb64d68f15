#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster:
#
#   scripts/with-postgres.sh cargo test --workspace --all-targets --features postgres
#
# 1. Installs PostgreSQL from Debian's packages if no server binaries are found (idempotent).
# 2. initdb into a fresh temporary directory, owned by an unprivileged user (`postgres` when run
#    as root, the current user otherwise).
# 3. Makes a throwaway CA and a server certificate for the name `db.test` (openssl), turns TLS
#    on, and adds a role `coercion_tls` that may connect only over TLS.
# 4. Starts the server on 127.0.0.1 on a free port (no Unix socket outside the data directory),
#    creates a database and exports COERCION_PG_URL=postgres://...@127.0.0.1:<port>/coercion_test,
#    and for the TLS tests COERCION_PG_TLS_URL (the TLS-only role, host name db.test, address
#    127.0.0.1), COERCION_PG_CA (the CA's certificate) and COERCION_PG_OTHER_CA (an unrelated CA).
# 5. Runs the command given as arguments and exits with its status.
# 6. Stops the cluster and removes the directory on exit, also when the command fails or the
#    script is interrupted.
#
# Environment: PG_BIN (a directory with initdb, pg_ctl, postgres) to choose the server;
# COERCION_PG_KEEP=1 keeps the data directory (its path is printed) for inspection.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 <command> [args...]" >&2
    exit 2
fi

log() { echo "with-postgres: $*" >&2; }

find_pg_bin() {
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
        echo "$PG_BIN"
        return 0
    fi
    local dir
    # Newest installed major version first.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

if ! BIN=$(find_pg_bin); then
    log "PostgreSQL server binaries not found; installing Debian's postgresql package"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # Only the binaries are needed: do not let the package create and start its own cluster.
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/coercion-no-main.conf >/dev/null
    $SUDO apt-get install -y -qq postgresql >/dev/null
    BIN=$(find_pg_bin) || { log "PostgreSQL was installed but initdb/pg_ctl are still not found"; exit 1; }
fi
log "using $BIN"
if ! command -v openssl >/dev/null 2>&1; then
    log "openssl not found; installing Debian's openssl package"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null
fi

# The server refuses to run as root: run it as `postgres` (or the current user when not root).
if [ "$(id -u)" -eq 0 ]; then
    RUN_AS=postgres
    id "$RUN_AS" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_AS"
    as_pg() { runuser -u "$RUN_AS" -- "$@"; }
else
    RUN_AS=$(id -un)
    as_pg() { "$@"; }
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/coercion-pg.XXXXXX")
chmod 700 "$DIR"
[ "$(id -u)" -eq 0 ] && chown "$RUN_AS" "$DIR"
DATA="$DIR/data"
STARTED=0

cleanup() {
    local status=$?
    if [ "$STARTED" -eq 1 ]; then
        as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "${COERCION_PG_KEEP:-0}" = "1" ]; then
        log "kept $DIR"
    else
        rm -rf "$DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 - <<'EOF' 2>/dev/null && return 0
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
    # No python: try random high ports until one is free.
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

as_pg "$BIN/initdb" -D "$DATA" -U coercion --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || as_pg "$BIN/initdb" -D "$DATA" -U coercion --auth=trust --encoding=UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
    || { log "initdb failed:"; cat "$DIR/initdb.log" >&2; exit 1; }

# TLS: a throwaway CA, a server certificate for `db.test` only (so a client checking the name
# must connect by that name, with hostaddr=127.0.0.1), and an unrelated CA.
TLS="$DIR/tls"
mkdir -p "$TLS"
mkcert() { openssl "$@" >>"$TLS/openssl.log" 2>&1 || { log "openssl $1 failed:"; cat "$TLS/openssl.log" >&2; exit 1; }; }
for ca in ca other-ca; do
    mkcert req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
        -subj "/CN=coercion test $ca" -keyout "$TLS/$ca.key" -out "$TLS/$ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
done
mkcert req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=db.test" \
    -keyout "$DATA/server.key" -out "$TLS/server.csr"
printf 'subjectAltName=DNS:db.test\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$TLS/server.ext"
mkcert x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3 -extfile "$TLS/server.ext" -out "$DATA/server.crt"
chmod 600 "$DATA/server.key"
if [ "$(id -u)" -eq 0 ]; then chown "$RUN_AS" "$DATA/server.key" "$DATA/server.crt"; fi
chmod 755 "$TLS"
chmod 644 "$TLS/ca.crt" "$TLS/other-ca.crt"
# The role of the TLS tests may not connect without TLS; the role of the password tests must
# give its password (every other role is trusted on loopback).
{ echo "hostnossl all coercion_tls all reject"; echo "host all coercion_pw all scram-sha-256"; cat "$DATA/pg_hba.conf"; } >"$DATA/pg_hba.conf.new"
mv "$DATA/pg_hba.conf.new" "$DATA/pg_hba.conf"
if [ "$(id -u)" -eq 0 ]; then chown "$RUN_AS" "$DATA/pg_hba.conf"; fi

# Settings for a throwaway test cluster: enough connections for several worker processes;
# fsync stays on (the stores promise durability and the benchmark should measure it).
cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 300
shared_buffers = 128MB
logging_collector = off
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
EOF

for try in 1 2 3 4 5; do
    PORT=$(free_port) || { log "no free port found"; exit 1; }
    if as_pg "$BIN/pg_ctl" -D "$DATA" -o "-p $PORT" -l "$DIR/server.log" -w -t 30 start >/dev/null 2>&1; then
        STARTED=1
        break
    fi
    log "could not start on port $PORT (attempt $try):"
    tail -n 5 "$DIR/server.log" >&2 || true
done
if [ "$STARTED" -ne 1 ]; then
    log "the PostgreSQL server did not start"
    exit 1
fi

as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U coercion coercion_test
as_pg "$BIN/psql" -q -h 127.0.0.1 -p "$PORT" -U coercion -d coercion_test -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE coercion_tls LOGIN" -c "GRANT CREATE ON DATABASE coercion_test TO coercion_tls" >/dev/null

export COERCION_PG_URL="postgres://coercion@127.0.0.1:$PORT/coercion_test"
export COERCION_PG_TLS_URL="postgres://coercion_tls@db.test:$PORT/coercion_test?hostaddr=127.0.0.1"
export COERCION_PG_CA="$TLS/ca.crt"
export COERCION_PG_OTHER_CA="$TLS/other-ca.crt"
log "PostgreSQL is up (TLS on): COERCION_PG_URL=$COERCION_PG_URL"

set +e
"$@"
status=$?
set -e
exit "$status"
