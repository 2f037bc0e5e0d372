#!/usr/bin/env bash
# The per-command budget of the command API (`scripts/profile.sh budget [ORDERS] [CLIENTS]`):
# instructions by stage (callgrind), PostgreSQL statements and group-commit transactions
# (pg_stat_statements), TCP segments and bytes to PostgreSQL (ss), each per command.
#
# Counts, not times: callgrind counts the instructions the command API executes whatever else
# the machine runs, and the statements and segments do not depend on speed either (except the
# group commit's batch sizes, which follow the clients' concurrency). The command API runs on a
# scratch PostgreSQL cluster of its own, so nothing else shows in its statistics; the cluster is
# removed afterwards. Instructions in the kernel (socket calls) are not counted by callgrind.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

orders="${1:-100}"
clients="${2:-8}"
[[ "$orders" =~ ^[0-9]+$ && "$orders" -gt 0 ]] || die "ORDERS must be a positive number"
[[ "$clients" =~ ^[0-9]+$ && "$clients" -gt 0 ]] || die "CLIENTS must be a positive number"
warmup_orders=20

for tool in valgrind callgrind_annotate callgrind_control ss; do
  command -v "$tool" > /dev/null || die "$tool is missing (apt-get install valgrind iproute2)"
done
pg_bin=$(find /usr/lib/postgresql -maxdepth 3 -name pg_ctl -printf '%h\n' 2> /dev/null | sort -V | tail -1)
[ -n "$pg_bin" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql (see scripts/stack.sh)"

target_dir="$(cargo_target_dir)"
# BUDGET_API_BIN measures another build of the command API (e.g. the last commit's, for a
# before/after table); by default this tree's release build.
api_bin="${BUDGET_API_BIN:-}"
if [ -z "$api_bin" ]; then
  log "building the command API (release)"
  cargo build --quiet --release --locked -p command-api
  api_bin="$target_dir/release/command-api"
fi
[ -x "$api_bin" ] || die "no command API binary at $api_bin"
# The client is not measured: its debug build is enough and saves a release build of benches.
log "building the budget client"
cargo build --quiet --locked -p benches --bin budget
out="$target_dir/bench/budget-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

# A scratch cluster owned by the postgres user (PostgreSQL refuses to run as root).
pg_dir=$(mktemp -d /tmp/orderpipe-budget-pg.XXXXXX)
chmod 755 "$pg_dir"
as_postgres() {
  if [[ $EUID -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
[[ $EUID -ne 0 ]] || chown postgres: "$pg_dir"
api_pid=''
cleanup() {
  [ -z "$api_pid" ] || kill "$api_pid" 2> /dev/null || true
  as_postgres "$pg_bin/pg_ctl" stop -D "$pg_dir/data" -m immediate -w > /dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
pg_port=$(free_port 55400)
grpc_port=$(free_port 55500)
admin_port=$(free_port 55600)
echo "$pg_port" > "$out/ports.txt"
as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres -E UTF8 --no-locale > "$out/initdb.log"
as_postgres "$pg_bin/pg_ctl" start -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" \
  > /dev/null
server_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
db_url="postgres://postgres@127.0.0.1:$pg_port/budget"
psql "$server_url" -XAtqc "CREATE DATABASE budget"
psql "$db_url" -XAtqc "CREATE EXTENSION pg_stat_statements"

log "starting the command API under callgrind"
# A token key pair for this run: the server gets the JWKS, the client the private key.
"$api_bin" keygen --private-key "$out/token-key.pem" --jwks "$out/jwks.json" > /dev/null
ORDERPIPE_DATABASE__URL="$db_url" \
  ORDERPIPE_DATABASE__MAX_CONNECTIONS="$clients" \
  ORDERPIPE_GRPC__HOST=127.0.0.1 ORDERPIPE_GRPC__PORT="$grpc_port" \
  ORDERPIPE_ADMIN__HOST=127.0.0.1 ORDERPIPE_ADMIN__PORT="$admin_port" \
  ORDERPIPE_AUTH__JWKS_URL="$out/jwks.json" \
  ORDERPIPE_LOG__FILTER="${ORDERPIPE_LOG__FILTER:-info}" \
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
  "$api_bin" serve > "$out/command-api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 600); do
  port_answers "$grpc_port" && break
  kill -0 "$api_pid" 2> /dev/null || die "the command API exited; see $out/command-api.log"
  sleep 0.2
done
port_answers "$grpc_port" || die "the command API did not listen within 120 s; see $out/command-api.log"

client=("$target_dir/debug/budget" --address "http://127.0.0.1:$grpc_port" --clients "$clients")
export ORDERPIPE_TOKEN_SIGNING_KEY="$out/token-key.pem"
log "warm-up: $warmup_orders orders"
"${client[@]}" --seed --orders "$warmup_orders" > "$out/warmup.txt"

# Per-connection TCP counters of the command API's connections to PostgreSQL.
sockets() {
  ss -Htinp state established "( dport = :$pg_port )" \
    | python3 -c '
import re, sys
lines, pid, socket = sys.stdin.read().splitlines(), sys.argv[1], None
for line in lines:
    if re.match(r"^\S", line):
        socket = line.split()[2:4] if "pid=" + pid + "," in line else None
    elif socket:
        fields = dict(re.findall(r"(\w+):(\d+)", line))
        print(socket[0], socket[1], *(fields.get(k, "0") for k in
              ("bytes_sent", "bytes_received", "data_segs_out", "data_segs_in")))
' "$api_pid"
}
# Top-level statements only: what the command API sent (track=all also counts the statements
# run inside a function such as the group commit's append_commits, which are no round trips).
statements() {
  psql "$db_url" -XAtF $'\t' -c "SELECT calls, rows, regexp_replace(query, '\s+', ' ', 'g')
    FROM pg_stat_statements WHERE toplevel
      AND dbid = (SELECT oid FROM pg_database WHERE datname = 'budget')"
}

callgrind_control -z "$api_pid" > /dev/null
psql "$db_url" -XAtqc "SELECT pg_stat_statements_reset()" > /dev/null
sockets > "$out/sockets-before.txt"
log "measuring: $orders orders, $clients clients"
"${client[@]}" --orders "$orders" > "$out/measured.txt"
callgrind_control -d "$api_pid" > /dev/null
sockets > "$out/sockets-after.txt"
statements > "$out/statements.txt"
kill -TERM "$api_pid"
wait "$api_pid" || true
api_pid=''

dump=$(find "$out" -name 'callgrind.out.*.1' | head -1)
[ -n "$dump" ] || die "callgrind wrote no dump; see $out/command-api.log"
callgrind_annotate --inclusive=yes --threshold=100 "$dump" > "$out/inclusive.txt" 2> /dev/null
callgrind_annotate --threshold=100 "$dump" > "$out/self.txt" 2> /dev/null
python3 "$repo/scripts/budget_report.py" "$out" | tee "$out/report.md"
log "budget and raw files: $out"
