# shellcheck shell=bash
# Shared helpers for the orderpipe local-stack scripts. Source it; do not run it.
#
# Everything here binds or probes 127.0.0.1 only.

# ---------------------------------------------------------------- logging
_op_ts() { date '+%H:%M:%S'; }
log() { printf '[%s] %s\n' "$(_op_ts)" "$*" >&2; }
warn() { printf '[%s] WARN: %s\n' "$(_op_ts)" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$(_op_ts)" "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- ports
# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT
# or when a socket is already bound to PORT on any address (ss).
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
    fi
    port_answers "$port"
}

# port_answers PORT: true when 127.0.0.1:PORT accepts a TCP connection.
port_answers() {
    local port=$1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Ports already handed out in this run (space separated); free_port skips them.
OP_RESERVED_PORTS=${OP_RESERVED_PORTS:-}

_port_reserved() { [[ " $OP_RESERVED_PORTS " == *" $1 "* ]]; }

# free_port PREFERRED... DEFAULT: prints the first of the given ports that is
# free (empty arguments are skipped), else searches upward from DEFAULT, the last
# argument (up to 200 ports).
free_port() {
    local p start=''
    for p in "$@"; do
        [[ "$p" =~ ^[0-9]+$ ]] || continue
        start=$p
        if ! _port_reserved "$p" && ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    [[ -n "$start" ]] || return 1
    for ((p = start + 1; p < start + 200; p++)); do
        if ! _port_reserved "$p" && ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_for_port PORT TIMEOUT_SECONDS [PID]: waits until 127.0.0.1:PORT accepts
# connections. Fails early if PID is given and that process has exited.
wait_for_port() {
    local port=$1 timeout=$2 pid=${3:-}
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if port_answers "$port"; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
    done
    port_answers "$port"
}

# http_answers URL: true when an HTTP server answers at URL with any status.
http_answers() {
    local url=$1 code
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -s -o /dev/null -m 3 --noproxy '*' -w '%{http_code}' "$url" 2>/dev/null) || true
        [[ -n "$code" && "$code" != "000" ]]
    else
        local hostport=${url#*://}
        hostport=${hostport%%/*}
        port_answers "${hostport##*:}"
    fi
}

# ---------------------------------------------------------------- processes
# pid_matches PIDFILE PATTERN: the pid file names a live process whose command
# line contains PATTERN (guards against a recycled pid).
pid_matches() {
    local pidfile=$1 pattern=$2 pid cmd
    pid_alive "$pidfile" || return 1
    pid=$(<"$pidfile")
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"$pattern"* ]]
}

# pid_alive PIDFILE: true when PIDFILE names a running process.
pid_alive() {
    local pidfile=$1 pid
    [[ -s "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null
}

# stop_pidfile NAME PIDFILE [TIMEOUT] [quiet]: TERM the process, then KILL after
# TIMEOUT s.
stop_pidfile() {
    local name=$1 pidfile=$2 timeout=${3:-10} quiet=${4:-} pid
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(<"$pidfile")
    [[ -n "$quiet" ]] || log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) ignored TERM; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# spawn PIDFILE LOGFILE CMD...: starts CMD detached (own session, no stdin),
# appending output to LOGFILE, and records its pid. File descriptors 3-9 are
# closed in the child so it never inherits a caller's lock (stack.sh holds fd 9).
spawn() {
    local pidfile=$1 logfile=$2
    shift 2
    printf '\n==== %s starting: %s\n' "$(date -Is)" "$*" >>"$logfile"
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >>"$logfile" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    else
        nohup "$@" </dev/null >>"$logfile" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    fi
    echo $! >"$pidfile"
}

# ---------------------------------------------------------------- misc
# cargo_target_dir: where cargo puts its builds (CARGO_TARGET_DIR or the workspace's target/).
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# prepare_benchmarks: for scripts/bench.sh and scripts/profile.sh, run from the repository root.
# Uses the stack env already sourced, or brings the stack up (idempotent) and sources its env
# file; builds the benchmarks and the pipeline in release; sets BENCH_BIN (the release binaries)
# and BENCH_OUT (<target>/bench).
prepare_benchmarks() {
    if [ -z "${DATABASE_URL:-}" ] || [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
        scripts/stack.sh up
        # shellcheck disable=SC1090 # the env file is generated
        source "$(scripts/stack.sh env --path)"
    fi
    log "building the benchmarks and the pipeline (release)"
    cargo build --quiet --release --locked -p benches -p command-api -p relay -p projectors -p replay
    local target_dir
    target_dir="$(cargo_target_dir)"
    # shellcheck disable=SC2034 # read by the scripts that source this file
    BENCH_BIN="$target_dir/release"
    # shellcheck disable=SC2034 # read by the scripts that source this file
    BENCH_OUT="$target_dir/bench"
}

# sha_of FILE...: a short content hash of the given files.
sha_of() {
    cat "$@" 2>/dev/null | sha256sum | cut -c1-16
}

# pg_url_with_db URL DB: URL with its database path replaced by DB (query kept).
pg_url_with_db() {
    local url=$1 db=$2 base query rest
    base=${url%%\?*}
    query=${url#"$base"}
    rest=${base#*://}
    if [[ "$rest" == */* ]]; then
        base=${base%/*}
    fi
    printf '%s/%s%s\n' "$base" "$db" "$query"
}
