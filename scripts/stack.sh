#!/usr/bin/env bash
# orderpipe local stack: PostgreSQL + AWS emulators on 127.0.0.1, no Docker.
# See --help, and scripts/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

STACK_DIR=$(realpath -m "${ORDERPIPE_STACK_DIR:-$REPO_ROOT/.stack}")
RUN_DIR=$STACK_DIR/run
LOG_DIR=$STACK_DIR/logs
PG_DIR= # resolve_pg_dir sets it: $STACK_DIR/pg, or a folder the postgres user can reach
VENV=$(realpath -m "${ORDERPIPE_STACK_VENV:-$STACK_DIR/venv}")
ENV_FILE=$STACK_DIR/env
EMU_DIR=$SCRIPT_DIR/emulators
RESOURCES_PY=$SCRIPT_DIR/resources.py
# What resources.py creates: generated from the Rust declarations (aws_support::resources).
RESOURCES_MANIFEST=$SCRIPT_DIR/../infra/cdk/resources.json

PG_PORT_DEFAULT=${ORDERPIPE_STACK_PG_PORT:-54329}
KINESIS_PORT_DEFAULT=${ORDERPIPE_STACK_KINESIS_PORT:-4567}
DYNAMODB_PORT_DEFAULT=${ORDERPIPE_STACK_DYNAMODB_PORT:-4568}
MOTO_PORT_DEFAULT=${ORDERPIPE_STACK_MOTO_PORT:-4569}
PERSIST=${ORDERPIPE_STACK_PERSIST:-0}

DATABASES=(orderpipe orderpipe_history orderpipe_analytics)

AWS_STATIC_ENV=(
    AWS_ACCESS_KEY_ID=test
    AWS_SECRET_ACCESS_KEY=test
    AWS_REGION=us-east-1
    AWS_DEFAULT_REGION=us-east-1
    AWS_EC2_METADATA_DISABLED=true
)

usage() {
    cat <<EOF
Usage: scripts/stack.sh COMMAND [OPTIONS]

The orderpipe local stack: real servers on 127.0.0.1, installed from the package
registries when missing (no Docker).

Commands:
  up              install what is missing, start everything that is not running,
                  create the databases, stream, tables and queues (idempotent; a
                  second 'up' changes nothing)
  down [--purge] [NAME...]
                  stop what 'up' started (never an external DATABASE_URL server), or only
                  the named components (postgres, kinesis, dynamodb, moto);
                  data is kept. --purge also deletes the stack state (pg data, logs,
                  pid files, env file); the Python venv is kept as an install cache
                  (rm -rf the stack dir for a full wipe)
  restart NAME    restart one component of a running stack: postgres (pg_ctl restart
                  -m fast), kinesis, dynamodb or moto (stopped, then started again by
                  'up'; with ORDERPIPE_STACK_PERSIST=1 kinesis and dynamodb keep their data)
  status          each component, its URL, whether it answers, and whether the AWS
                  resources exist; exits 1 when something is down
  env [--path]    print the env file (sourceable 'export' lines), or only its path
  -h, --help      this help

Components:
  postgres    private cluster (data in \$STACK/pg, or in /var/tmp/orderpipe-<hash>/pg
              when the postgres user cannot reach \$STACK) on port ${PG_PORT_DEFAULT} or the next free one,
              or the server named by DATABASE_URL when it is set. Databases:
              ${DATABASES[*]}
  kinesis     kinesalite (npm), default port ${KINESIS_PORT_DEFAULT}
  dynamodb    dynalite (npm), default port ${DYNAMODB_PORT_DEFAULT}
  moto        moto server (PyPI): SQS, and DynamoDB when transactions/TTL are needed,
              default port ${MOTO_PORT_DEFAULT}
  Ports move to the next free one when taken; the chosen ones are remembered.

Use it:
  scripts/stack.sh up && source .stack/env      # or: eval "\$(scripts/stack.sh env)"

Environment:
  ORDERPIPE_STACK_DIR            state dir (default: <repo>/.stack; now ${STACK_DIR})
  DATABASE_URL                   use this PostgreSQL server instead of a private cluster
                                 (ignored when it is the stack's own, from a sourced env file)
  ORDERPIPE_STACK_PG_PORT, ORDERPIPE_STACK_KINESIS_PORT, ORDERPIPE_STACK_DYNAMODB_PORT,
  ORDERPIPE_STACK_MOTO_PORT      preferred ports
  ORDERPIPE_STACK_VENV           the Python venv (default: \$STACK/venv), e.g. another stack's
  ORDERPIPE_STACK_PERSIST=1      kinesalite/dynalite keep their data on disk under the
                                 stack dir (default: in memory, empty after a restart)

Resources (stream, tables, queues) are declared in the Rust code; scripts/resources.py creates
them from the generated manifest infra/cdk/resources.json (see scripts/README.md).
EOF
}

# ================================================================= installs
as_root_or_die() {
    [[ $EUID -eq 0 ]] || die "$* is missing; install it (needs root), e.g. apt-get install $*"
}

APT_UPDATED=0
apt_install() {
    as_root_or_die "$@"
    log "apt-get install $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$LOG_DIR/install.log" 2>&1; then
        if ((APT_UPDATED == 0)); then
            log "apt-get update (package lists missing or stale)"
            DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG_DIR/install.log" 2>&1 ||
                die "apt-get update failed; see $LOG_DIR/install.log"
            APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$LOG_DIR/install.log" 2>&1 ||
            die "apt-get install $* failed; see $LOG_DIR/install.log"
    fi
}

PG_BIN=
find_pg_bin() {
    local d
    PG_BIN=''
    while IFS= read -r d; do
        [[ -x "$d/pg_ctl" && -x "$d/initdb" ]] && PG_BIN=$d
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    [[ -n "$PG_BIN" ]]
}

PSQL=
PG_ISREADY=
find_pg_clients() {
    if find_pg_bin; then
        PSQL=$PG_BIN/psql
        PG_ISREADY=$PG_BIN/pg_isready
    fi
    [[ -x "$PSQL" ]] || PSQL=$(command -v psql || true)
    [[ -x "$PG_ISREADY" ]] || PG_ISREADY=$(command -v pg_isready || true)
    [[ -n "$PSQL" && -n "$PG_ISREADY" ]]
}

ensure_pg_installed() {
    if [[ -n "$EXTERNAL_DB_URL" ]]; then
        find_pg_clients || apt_install postgresql-client
        find_pg_clients || die "psql/pg_isready not found after installing postgresql-client"
    else
        find_pg_bin || apt_install postgresql
        find_pg_bin || die "no /usr/lib/postgresql/*/bin/pg_ctl after installing postgresql"
        find_pg_clients || die "psql/pg_isready not found"
    fi
}

ensure_node_modules() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    local stamp_file=$EMU_DIR/node_modules/.orderpipe-lock-sha want
    want=$(sha_of "$EMU_DIR/package-lock.json")
    if [[ -f "$stamp_file" && "$(<"$stamp_file")" == "$want" &&
        -d "$EMU_DIR/node_modules/kinesalite" && -d "$EMU_DIR/node_modules/dynalite" ]]; then
        return 0
    fi
    log "npm ci in scripts/emulators (kinesalite, dynalite)"
    local t0=$SECONDS
    (cd "$EMU_DIR" && npm ci --no-audit --no-fund --loglevel=error) >>"$LOG_DIR/install.log" 2>&1 ||
        die "npm ci failed; see $LOG_DIR/install.log"
    echo "$want" >"$stamp_file"
    log "npm ci done in $((SECONDS - t0)) s"
}

ensure_venv() {
    local stamp_file=$VENV/.orderpipe-req-sha want
    want=$(sha_of "$EMU_DIR/requirements.txt")
    if [[ -x "$VENV/bin/python" && -x "$VENV/bin/moto_server" && -f "$stamp_file" &&
        "$(<"$stamp_file")" == "$want" ]]; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating Python venv $VENV"
        if ! python3 -m venv "$VENV" >>"$LOG_DIR/install.log" 2>&1; then
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV" >>"$LOG_DIR/install.log" 2>&1 || die "python3 -m venv failed"
        fi
    fi
    log "pip install -r scripts/emulators/requirements.txt (moto[server], grpcio, sqlfluff)"
    local t0=$SECONDS
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$EMU_DIR/requirements.txt" \
        >>"$LOG_DIR/install.log" 2>&1 || die "pip install failed; see $LOG_DIR/install.log"
    echo "$want" >"$stamp_file"
    log "pip install done in $((SECONDS - t0)) s"
}

# ================================================================= postgres
# as_pg CMD...: run CMD as the postgres user when we are root (PostgreSQL refuses root).
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

PG_DATA=
PG_SOCK=
PG_LOG=$LOG_DIR/postgres.log
PG_PORT_FILE=$RUN_DIR/postgres.port

# Where the private cluster lives when the postgres user cannot reach the stack dir (as root in
# a clone under a private home, mode 700): outside it, stable per stack dir, so every command on
# this stack (up, status, down, restart) finds the same cluster.
pg_outside_dir() {
    printf '/var/tmp/orderpipe-%s\n' "$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)"
}

# postgres_reaches DIR: the postgres user can enter DIR and every parent of it.
postgres_reaches() {
    id -u postgres >/dev/null 2>&1 && (cd / && runuser -u postgres -- test -x "$1") 2>/dev/null
}

# Sets PG_DIR, PG_DATA, PG_SOCK and PG_LOG. An existing cluster is used where it is; a new one
# goes under the stack dir when the server's user can reach it, else under pg_outside_dir.
resolve_pg_dir() {
    local inside=$STACK_DIR/pg outside
    outside=$(pg_outside_dir)/pg
    if [[ -f "$inside/data/PG_VERSION" ]]; then
        PG_DIR=$inside
    elif [[ -f "$outside/data/PG_VERSION" ]]; then
        PG_DIR=$outside
    elif [[ $EUID -ne 0 ]] || postgres_reaches "$STACK_DIR"; then
        PG_DIR=$inside
    else
        PG_DIR=$outside
    fi
    PG_DATA=$PG_DIR/data
    PG_SOCK=$PG_DIR/run
    # The server (run as postgres) opens its own log file, so it sits beside the data when the
    # stack dir is out of its reach; $LOG_DIR/postgres.log then links to it.
    if [[ "$PG_DIR" == "$inside" ]]; then
        PG_LOG=$LOG_DIR/postgres.log
    else
        PG_LOG=$PG_DIR/postgres.log
    fi
}

# Creates the folder outside the stack dir for the cluster: owned by postgres, mode 700, and
# refused when someone else made it first (/var/tmp is world-writable).
make_pg_outside_dir() {
    local base owner
    base=$(pg_outside_dir)
    if [[ ! -d "$base" ]]; then
        mkdir -m 700 "$base" || die "cannot create $base"
        chown postgres: "$base"
    fi
    owner=$(stat -c %U "$base")
    if [[ -L "$base" || ("$owner" != postgres && "$owner" != root) ]]; then
        die "$base exists but belongs to $owner (or is a link); remove it or set ORDERPIPE_STACK_DIR elsewhere"
    fi
    mkdir -p "$PG_DIR"
    chown postgres: "$base" "$PG_DIR"
    chmod 700 "$base"
}

# Port of the running private cluster (from postmaster.pid), or nothing.
private_pg_running_port() {
    [[ -n "$PG_BIN" && -f "$PG_DATA/PG_VERSION" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1 || return 1
    sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null
}

start_private_pg() {
    local port
    if port=$(private_pg_running_port) && [[ -n "$port" ]]; then
        if "$PG_ISREADY" -q -h 127.0.0.1 -p "$port" -t 5; then
            PG_PORT=$port
            echo "$port" >"$PG_PORT_FILE"
            return 0
        fi
        warn "private PostgreSQL runs but does not answer on $port; restarting it"
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w >/dev/null 2>&1 || true
    fi

    local pg_user=postgres
    [[ $EUID -eq 0 ]] || pg_user=$(id -un)
    if [[ "$PG_DIR" != "$STACK_DIR/pg" ]]; then
        log "the postgres user cannot reach $STACK_DIR (a parent folder is private):" \
            "PostgreSQL data in $PG_DIR (removed by 'down --purge')"
        make_pg_outside_dir
    fi
    mkdir -p "$PG_DIR"
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$PG_DIR"
        as_pg test -x "$PG_DIR" -a -w "$PG_DIR" ||
            die "user postgres cannot use $PG_DIR; set ORDERPIPE_STACK_DIR elsewhere"
    fi
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        log "initdb $PG_DATA ($("$PG_BIN/pg_ctl" --version))"
        rm -rf "$PG_DATA"
        as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U "$pg_user" -E UTF8 --no-locale \
            >>"$LOG_DIR/postgres-initdb.log" 2>&1 || die "initdb failed; see $LOG_DIR/postgres-initdb.log"
    fi
    as_pg mkdir -p "$PG_SOCK"
    touch "$PG_LOG"
    [[ $EUID -ne 0 ]] || chown postgres: "$PG_LOG"
    [[ "$PG_LOG" == "$LOG_DIR/postgres.log" ]] || ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"

    local saved=''
    [[ -f "$PG_PORT_FILE" ]] && saved=$(<"$PG_PORT_FILE")
    port=$(free_port "$saved" "$PG_PORT_DEFAULT") || die "no free port for PostgreSQL"
    log "starting PostgreSQL on 127.0.0.1:$port"
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
        -o "-p $port -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=200" \
        </dev/null >/dev/null 9>&- || die "PostgreSQL did not start; see $LOG_DIR/postgres.log"
    "$PG_ISREADY" -q -h 127.0.0.1 -p "$port" -t 30 || die "PostgreSQL does not answer on $port"
    PG_PORT=$port
    echo "$port" >"$PG_PORT_FILE"
}

ensure_databases() {
    local server_url=$1 existing db
    existing=$("$PSQL" "$server_url" -XAtqc "select datname from pg_database") ||
        die "cannot list databases on $server_url"
    for db in "${DATABASES[@]}"; do
        if ! grep -qx "$db" <<<"$existing"; then
            log "creating database $db"
            "$PSQL" "$server_url" -Xqc "create database \"$db\"" >/dev/null ||
                die "create database $db failed"
        fi
    done
}

# Sets DB_SERVER_URL and PG_MODE.
ensure_postgres() {
    if [[ -n "$EXTERNAL_DB_URL" ]]; then
        PG_MODE=external
        "$PG_ISREADY" -q -d "$EXTERNAL_DB_URL" -t 10 ||
            die "DATABASE_URL does not answer: $EXTERNAL_DB_URL"
        DB_SERVER_URL=$EXTERNAL_DB_URL
    else
        PG_MODE=private
        start_private_pg
        local user=postgres
        [[ $EUID -eq 0 ]] || user=$(id -un)
        DB_SERVER_URL="postgres://$user@127.0.0.1:$PG_PORT/postgres"
    fi
    ensure_databases "$DB_SERVER_URL"
}

# ================================================================= emulators
# start_emulator NAME DEFAULT_PORT CMDLINE_PATTERN TIMEOUT CMD... (CMD gets the port
# appended through the placeholder __PORT__). Sets <NAME>_PORT.
EMU_PORT=
start_emulator() {
    local name=$1 default_port=$2 pattern=$3 timeout=$4
    shift 4
    local pidfile=$RUN_DIR/$name.pid portfile=$RUN_DIR/$name.port saved='' port
    [[ -f "$portfile" ]] && saved=$(<"$portfile")
    if pid_matches "$pidfile" "$pattern" && [[ -n "$saved" ]]; then
        if wait_for_port "$saved" "$timeout" "$(<"$pidfile")"; then
            EMU_PORT=$saved
            OP_RESERVED_PORTS+=" $saved"
            return 0
        fi
        warn "$name (pid $(<"$pidfile")) does not answer on $saved; restarting it"
        stop_pidfile "$name" "$pidfile"
    fi
    rm -f "$pidfile"
    port=$(free_port "$saved" "$default_port") || die "no free port for $name"
    OP_RESERVED_PORTS+=" $port"
    local args=() a
    for a in "$@"; do args+=("${a//__PORT__/$port}"); done
    log "starting $name on 127.0.0.1:$port"
    spawn "$pidfile" "$LOG_DIR/$name.log" "${args[@]}"
    echo "$port" >"$portfile"
    EMU_PORT=$port
}

await_emulator() {
    local name=$1 port=$2 timeout=$3
    wait_for_port "$port" "$timeout" "$(<"$RUN_DIR/$name.pid")" ||
        die "$name did not come up on 127.0.0.1:$port; see $LOG_DIR/$name.log (last lines: $(tail -n 5 "$LOG_DIR/$name.log" | tr '\n' ' '))"
}

ensure_emulators() {
    local kin_extra=() ddb_extra=()
    if [[ "$PERSIST" == 1 ]]; then
        mkdir -p "$STACK_DIR/kinesis" "$STACK_DIR/dynamodb"
        kin_extra=("$STACK_DIR/kinesis")
        ddb_extra=("$STACK_DIR/dynamodb")
    fi
    start_emulator kinesis "$KINESIS_PORT_DEFAULT" "serve.js kinesis" 5 \
        node "$EMU_DIR/serve.js" kinesis __PORT__ "${kin_extra[@]}"
    KINESIS_PORT=$EMU_PORT
    start_emulator dynamodb "$DYNAMODB_PORT_DEFAULT" "serve.js dynamodb" 5 \
        node "$EMU_DIR/serve.js" dynamodb __PORT__ "${ddb_extra[@]}"
    DYNAMODB_PORT=$EMU_PORT
    start_emulator moto "$MOTO_PORT_DEFAULT" "moto_server" 30 \
        "$VENV/bin/moto_server" -H 127.0.0.1 -p __PORT__
    MOTO_PORT=$EMU_PORT
    # Started in parallel above; now wait for each.
    await_emulator kinesis "$KINESIS_PORT" 20
    await_emulator dynamodb "$DYNAMODB_PORT" 20
    await_emulator moto "$MOTO_PORT" 60
}

# ================================================================= env file
aws_endpoint_env() {
    echo "AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$KINESIS_PORT"
    echo "AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DYNAMODB_PORT"
    echo "AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$MOTO_PORT"
    echo "ORDERPIPE_MOTO_URL=http://127.0.0.1:$MOTO_PORT"
}

ensure_resources() {
    # Emulator state lives in their processes (or their data dirs): when the same
    # processes still run and resources.py and the manifest are unchanged, the resources are there.
    local stamp_file=$RUN_DIR/resources.stamp want
    want="$(sha_of "$RESOURCES_PY" "$RESOURCES_MANIFEST") $(cat "$RUN_DIR"/kinesis.pid "$RUN_DIR"/dynamodb.pid "$RUN_DIR"/moto.pid | tr '\n' ' ')$KINESIS_PORT $DYNAMODB_PORT $MOTO_PORT"
    if [[ -f "$stamp_file" && "$(<"$stamp_file")" == "$want" && -s "$RUN_DIR/resources.env" ]]; then
        return 0
    fi
    log "ensuring stream, tables and queues (scripts/resources.py)"
    local envs=()
    mapfile -t envs < <(aws_endpoint_env)
    env -u AWS_PROFILE -u AWS_SESSION_TOKEN "${AWS_STATIC_ENV[@]}" "${envs[@]}" \
        "$VENV/bin/python" "$RESOURCES_PY" ensure --env-out "$RUN_DIR/resources.env" ||
        die "creating the AWS resources failed"
    echo "$want" >"$stamp_file"
}

q() { printf '%q' "$1"; }

write_env_file() {
    local tmp=$ENV_FILE.tmp line
    {
        echo "# orderpipe local stack: generated by scripts/stack.sh up on $(date -Is)."
        echo "# Source it: . $(q "$ENV_FILE")"
        echo "export ORDERPIPE_STACK_DIR=$(q "$STACK_DIR")"
        echo "export ORDERPIPE_STACK_PG_MODE=$PG_MODE"
        if [[ "$PG_MODE" == private ]]; then
            echo "export ORDERPIPE_STACK_PRIVATE_DATABASE_URL=$(q "$DB_SERVER_URL")"
            echo "export ORDERPIPE_STACK_PG_DATA=$(q "$PG_DATA")"
        fi
        echo
        echo "# PostgreSQL: DATABASE_URL is the server-level URL (tests create a database each)"
        echo "export DATABASE_URL=$(q "$DB_SERVER_URL")"
        echo "export ORDERPIPE_DATABASE__URL=$(q "$(pg_url_with_db "$DB_SERVER_URL" orderpipe)")"
        echo "export ORDERPIPE_HISTORY__DATABASE__URL=$(q "$(pg_url_with_db "$DB_SERVER_URL" orderpipe_history)")"
        echo "export ORDERPIPE_ANALYTICS__DATABASE__URL=$(q "$(pg_url_with_db "$DB_SERVER_URL" orderpipe_analytics)")"
        echo
        echo "# AWS SDK: static test credentials, no instance-metadata probing, local endpoints"
        for line in "${AWS_STATIC_ENV[@]}"; do echo "export $line"; done
        while IFS= read -r line; do echo "export $line"; done < <(aws_endpoint_env)
        echo
        echo "# Resources (scripts/resources.py)"
        cat "$RUN_DIR/resources.env"
    } >"$tmp"
    if [[ -f "$ENV_FILE" ]] && cmp -s <(grep -v '^# orderpipe local stack: generated' "$tmp") \
        <(grep -v '^# orderpipe local stack: generated' "$ENV_FILE"); then
        rm -f "$tmp" # unchanged: keep the file (and its timestamp) as it is
    else
        mv "$tmp" "$ENV_FILE"
    fi
}

# ================================================================= commands
lock_stack() {
    mkdir -p "$STACK_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$STACK_DIR/.lock"
        flock -w 120 9 || die "another stack.sh holds $STACK_DIR/.lock"
    fi
}

cmd_up() {
    local t0=$SECONDS
    lock_stack
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    EXTERNAL_DB_URL=${DATABASE_URL:-}
    # A DATABASE_URL that came from sourcing our own env file is not "external".
    if [[ -n "$EXTERNAL_DB_URL" && "$EXTERNAL_DB_URL" == "${ORDERPIPE_STACK_PRIVATE_DATABASE_URL:-}" ]]; then
        EXTERNAL_DB_URL=
    fi
    ensure_pg_installed
    resolve_pg_dir
    ensure_node_modules
    ensure_venv
    ensure_postgres
    ensure_emulators
    ensure_resources
    write_env_file
    [[ "$PG_MODE" != private ]] || log "PostgreSQL data: $PG_DATA"
    log "stack is up in $((SECONDS - t0)) s: postgres ($PG_MODE) ${DB_SERVER_URL}, kinesis :$KINESIS_PORT, dynamodb :$DYNAMODB_PORT, moto :$MOTO_PORT"
    log "env: . $ENV_FILE"
}

cmd_down() {
    local purge=0 arg names=() emulators=() stop_pg=0
    for arg in "$@"; do
        case $arg in
        --purge) purge=1 ;;
        postgres) stop_pg=1 ;;
        kinesis | dynamodb | moto) emulators+=("$arg") ;;
        *) die "down: unknown option or component $arg (postgres, kinesis, dynamodb, moto, --purge)" ;;
        esac
    done
    names=("${emulators[@]}")
    ((stop_pg)) && names+=(postgres)
    if ((${#names[@]} == 0)); then
        emulators=(moto dynamodb kinesis)
        stop_pg=1
    elif ((purge)); then
        die "down: --purge stops the whole stack; name no component with it"
    fi
    lock_stack
    local name
    for name in "${emulators[@]}"; do # TERM all first, then wait for each
        if pid_alive "$RUN_DIR/$name.pid"; then
            log "stopping $name (pid $(<"$RUN_DIR/$name.pid"))"
            kill -TERM "$(<"$RUN_DIR/$name.pid")" 2>/dev/null || true
        fi
    done
    for name in "${emulators[@]}"; do
        stop_pidfile "$name" "$RUN_DIR/$name.pid" 10 quiet
    done
    find_pg_bin || true
    resolve_pg_dir
    if ((stop_pg)) && private_pg_running_port >/dev/null; then
        log "stopping private PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null ||
            warn "pg_ctl stop failed; see $LOG_DIR/postgres.log"
    fi
    rm -f "$RUN_DIR/resources.stamp"
    if ((purge)); then
        log "purging $STACK_DIR (keeping the venv)"
        local entry
        for entry in "$STACK_DIR"/* "$STACK_DIR"/.[!.]*; do
            [[ -e "$entry" ]] || continue
            case $(basename "$entry") in
            venv | .lock) ;;
            *) rm -rf "$entry" ;;
            esac
        done
        local outside
        outside=$(pg_outside_dir)
        # Only a folder this stack made (see make_pg_outside_dir), never one another user owns.
        if [[ "$PG_DIR" == "$outside/pg" && -d "$outside" && ! -L "$outside" ]] &&
            [[ "$(stat -c %U "$outside")" == postgres || "$(stat -c %U "$outside")" == root ]]; then
            log "purging $outside (the PostgreSQL data of this stack)"
            rm -rf "$outside"
        fi
    fi
    if ((${#names[@]})); then
        log "stopped: ${names[*]}"
    else
        log "stack is down"
    fi
}

cmd_restart() {
    local name=${1:-}
    case $name in
    postgres)
        lock_stack
        find_pg_bin || die "no PostgreSQL installed"
        resolve_pg_dir
        private_pg_running_port >/dev/null || die "the stack's private PostgreSQL is not running"
        log "restarting PostgreSQL (pg_ctl restart -m fast)"
        as_pg "$PG_BIN/pg_ctl" restart -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t 60 \
            </dev/null >/dev/null 9>&- ||
            die "pg_ctl restart failed; see $LOG_DIR/postgres.log"
        ;;
    kinesis | dynamodb)
        # With ORDERPIPE_STACK_PERSIST=1 the resources survive on disk: only the emulators.
        lock_stack
        stop_pidfile "$name" "$RUN_DIR/$name.pid" 10
        ensure_emulators
        ;;
    moto)
        # moto keeps its state in memory: 'up' creates the queues and tables again.
        lock_stack
        stop_pidfile "$name" "$RUN_DIR/$name.pid" 10
        cmd_up
        ;;
    *) die "restart: name postgres, kinesis, dynamodb or moto" ;;
    esac
}

status_line() {
    printf '%-10s %-52s %s\n' "$1" "$2" "$3"
}

cmd_status() {
    local bad=0 port url state pid
    printf 'stack dir: %s\n' "$STACK_DIR"
    find_pg_clients || true
    resolve_pg_dir

    # postgres
    local mode=private server_url=
    if [[ -f "$ENV_FILE" ]]; then
        mode=$(sed -n 's/^export ORDERPIPE_STACK_PG_MODE=//p' "$ENV_FILE")
        server_url=$(bash -c 'source "$1" >/dev/null 2>&1; printf %s "$DATABASE_URL"' _ "$ENV_FILE")
    fi
    if [[ "$mode" == external ]]; then
        state="external"
    elif port=$(private_pg_running_port) && [[ -n "$port" ]]; then
        state="running (pid $(sed -n 1p "$PG_DATA/postmaster.pid"), data $PG_DATA)"
        server_url="postgres://postgres@127.0.0.1:$port/postgres"
    else
        state="stopped"
        server_url=${server_url:-"-"}
    fi
    if [[ "$server_url" != "-" && -n "$PG_ISREADY" ]] && "$PG_ISREADY" -q -d "$server_url" -t 3; then
        state+=", answers"
    else
        state+=", NOT answering"
        bad=1
    fi
    status_line postgres "$server_url" "$state"

    local name pattern
    for name in kinesis dynamodb moto; do
        port=$(cat "$RUN_DIR/$name.port" 2>/dev/null || true)
        url=${port:+http://127.0.0.1:$port}
        pattern="serve.js $name"
        [[ $name != moto ]] || pattern=moto_server
        if pid_matches "$RUN_DIR/$name.pid" "$pattern"; then
            pid=$(<"$RUN_DIR/$name.pid")
            state="running (pid $pid)"
        else
            state="stopped"
        fi
        if [[ -n "$port" ]] && http_answers "$url"; then
            state+=", answers"
        else
            state+=", NOT answering"
            bad=1
        fi
        status_line "$name" "${url:--}" "$state"
    done

    if ((bad == 0)) && [[ -x "$VENV/bin/python" ]]; then
        local envs=() out
        KINESIS_PORT=$(<"$RUN_DIR/kinesis.port") DYNAMODB_PORT=$(<"$RUN_DIR/dynamodb.port") \
            MOTO_PORT=$(<"$RUN_DIR/moto.port")
        mapfile -t envs < <(aws_endpoint_env)
        if out=$(env -u AWS_PROFILE -u AWS_SESSION_TOKEN "${AWS_STATIC_ENV[@]}" "${envs[@]}" \
            "$VENV/bin/python" "$RESOURCES_PY" check 2>&1); then
            status_line resources "scripts/resources.py" "$out"
        else
            status_line resources "scripts/resources.py" "$(tr '\n' ' ' <<<"$out")"
            bad=1
        fi
    fi
    printf 'env file: %s%s\n' "$ENV_FILE" "$([[ -f "$ENV_FILE" ]] || echo ' (missing: run up)')"
    return "$bad"
}

cmd_env() {
    [[ -f "$ENV_FILE" ]] || die "no env file at $ENV_FILE: run scripts/stack.sh up"
    if [[ "${1:-}" == --path ]]; then
        echo "$ENV_FILE"
    else
        echo "# $ENV_FILE"
        cat "$ENV_FILE"
    fi
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    restart) cmd_restart "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    -h | --help | help) usage ;;
    "")
        usage >&2
        exit 2
        ;;
    *)
        echo "unknown command: $cmd" >&2
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
