#!/usr/bin/env bash
# Brings up the local stack and runs the pipeline on it: PostgreSQL and the AWS emulators
# (scripts/stack.sh), then the command API, the relay (outbox -> Kinesis), the projectors
# (Kinesis -> DynamoDB active orders, PostgreSQL history, analytics), the flows (order saga,
# payments, delivery-platform intake, notifications) and the barista dashboard, with a demo menu
# and store stock. Idempotent: what is already running is left alone. Processes keep running
# after the script ends; logs are in .stack/logs.
#
#   scripts/up.sh          start (build if needed); print the dashboard's address and a token,
#                          how to call the API and see the views
#   scripts/up.sh --tls    the same with TLS on every gRPC hop: a throwaway CA and certificates in
#                          $ORDERPIPE_STACK_DIR/tls (scripts/dev-tls.sh); the command API requires
#                          client certificates (mTLS) and flows and the dashboard present theirs
#   scripts/up.sh stop     stop the pipeline processes (the stack stays; scripts/stack.sh down)
#   scripts/up.sh --help
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

tls=false
arguments=()
for argument in "$@"; do
  case "$argument" in
    --tls) tls=true ;;
    *) arguments+=("$argument") ;;
  esac
done
set -- "${arguments[@]+"${arguments[@]}"}"

case "${1:-start}" in
  -h | --help) usage; exit 0 ;;
  start | stop) ;;
  *) usage >&2; exit 2 ;;
esac

scripts/stack.sh up
# shellcheck disable=SC1090,SC1091 # the env file is generated
source "$(scripts/stack.sh env --path)"
run_dir="$ORDERPIPE_STACK_DIR/run"
# The stack's Python (grpc-call.py): the venv stack.sh made, wherever ORDERPIPE_STACK_VENV put it.
venv_python="${ORDERPIPE_STACK_VENV:-$ORDERPIPE_STACK_DIR/venv}/bin/python"
mkdir -p "$run_dir" "$ORDERPIPE_STACK_DIR/logs"
api_pid="$run_dir/command-api.pid"
processes=(dashboard flows projectors relay command-api)

if [ "${1:-start}" = stop ]; then
  for process in "${processes[@]}"; do
    stop_pidfile "$process" "$run_dir/$process.pid" 15
  done
  exit 0
fi

# TLS on every gRPC hop (--tls), else plaintext. The scheme is recorded with the running command
# API: the other mode needs a restart (`scripts/up.sh stop` first).
scheme_file="$run_dir/command-api.scheme"
scheme=http
[ "$tls" = false ] || scheme=https
if pid_matches "$api_pid" command-api && [ "$(cat "$scheme_file" 2>/dev/null || echo http)" != "$scheme" ]; then
  die "command-api is running with $(cat "$scheme_file" 2>/dev/null || echo http); run scripts/up.sh stop first to switch to $scheme"
fi
tls_dir="$ORDERPIPE_STACK_DIR/tls"
[ "$tls" = false ] || scripts/dev-tls.sh "$tls_dir"
# The command API's URL as its clients use it: the name on its certificate under TLS.
if [ "$tls" = true ]; then api_host=localhost; else api_host=127.0.0.1; fi
# server_tls_env / client_tls_env NAME: the TLS settings of the command API / of client NAME
# (exported in the subshell that starts it); nothing without --tls.
server_tls_env() {
  [ "$tls" = true ] || return 0
  export ORDERPIPE_GRPC__TLS__CERT_FILE="$tls_dir/command-api.pem"
  export ORDERPIPE_GRPC__TLS__KEY_FILE="$tls_dir/command-api-key.pem"
  export ORDERPIPE_GRPC__TLS__CLIENT_CA_FILE="$tls_dir/ca.pem"
}
client_tls_env() {
  [ "$tls" = true ] || return 0
  export ORDERPIPE_COMMAND_API__TLS__CA_FILE="$tls_dir/ca.pem"
  export ORDERPIPE_COMMAND_API__TLS__CERT_FILE="$tls_dir/$1.pem"
  export ORDERPIPE_COMMAND_API__TLS__KEY_FILE="$tls_dir/$1-key.pem"
}
grpc_call_tls=()
[ "$tls" = false ] || grpc_call_tls=(--ca-file "$tls_dir/ca.pem" --cert-file "$tls_dir/local-tools.pem"
  --key-file "$tls_dir/local-tools-key.pem" --server-name localhost)

# Everything it runs, and every binary the README has a user run after it (replay); a test
# (scripts/tests/readme-binaries-built-by-up.sh) keeps this list in step with the README.
log "building command-api, relay, projectors, flows, dashboard and replay"
cargo build --quiet --locked -p command-api -p relay -p projectors -p flows -p dashboard -p replay
target_dir="$(cargo_target_dir)"
api_bin="$target_dir/debug/command-api"

# The token issuer's ES256 key pair, made once per stack: the private key stays with the local
# tooling (mint-token, below); the services get only the public keys (the JWKS) and the flows a
# service token minted with it. Real deployments point at their issuer's JWKS (DEPLOYING.md).
signing_key="$ORDERPIPE_STACK_DIR/token-signing-key.pem"
jwks_file="$ORDERPIPE_STACK_DIR/jwks.json"
if [ ! -s "$signing_key" ]; then
  "$api_bin" keygen --private-key "$signing_key" --jwks "$jwks_file" >/dev/null
fi
export ORDERPIPE_AUTH__JWKS_URL="$jwks_file"
token() { "$api_bin" mint-token --private-key "$signing_key" "$@"; }

# start_worker NAME DEFAULT_ADMIN_PORT ARGS...: starts a pipeline worker unless it runs already,
# with its admin endpoint (/health, /metrics) on a free port; prints that port.
start_worker() {
  local name=$1 default_port=$2 pid_file="$run_dir/$1.pid" port_file="$run_dir/$1.port" port
  shift 2
  if pid_matches "$pid_file" "$name"; then
    cat "$port_file"
    return
  fi
  port="$(OP_RESERVED_PORTS="$grpc_port $admin_port" free_port "$default_port")"
  echo "$port" >"$port_file"
  ORDERPIPE_ADMIN__PORT="$port" spawn "$pid_file" "$ORDERPIPE_STACK_DIR/logs/$name.log" \
    "$target_dir/debug/$name" "$@"
  wait_for_port "$port" 60 "$(cat "$pid_file")" ||
    die "$name did not start; see $ORDERPIPE_STACK_DIR/logs/$name.log"
  log "$name started (pid $(cat "$pid_file")), admin 127.0.0.1:$port"
  echo "$port"
}

port_file="$run_dir/command-api.ports"
if pid_matches "$api_pid" command-api; then
  read -r grpc_port admin_port <"$port_file"
  log "command-api already running (pid $(cat "$api_pid"))"
else
  grpc_port="$(free_port "${ORDERPIPE_GRPC__PORT:-}" 50051)"
  OP_RESERVED_PORTS="$grpc_port"
  admin_port="$(free_port "${ORDERPIPE_ADMIN__PORT:-}" 9090)"
  echo "$grpc_port $admin_port" >"$port_file"
  echo "$scheme" >"$scheme_file"
  (
    server_tls_env
    ORDERPIPE_GRPC__PORT="$grpc_port" ORDERPIPE_ADMIN__PORT="$admin_port" \
      spawn "$api_pid" "$ORDERPIPE_STACK_DIR/logs/command-api.log" "$api_bin" serve
  )
  wait_for_port "$grpc_port" 60 "$(cat "$api_pid")" ||
    die "command-api did not start; see $ORDERPIPE_STACK_DIR/logs/command-api.log"
  log "command-api started (pid $(cat "$api_pid")): gRPC $scheme://$api_host:$grpc_port, admin 127.0.0.1:$admin_port"
fi

# Every reader of the local stack runs this build, which unpacks: the relay packs (its own
# default, 1, is for deployments whose readers may be older; see docs/architecture.md).
relay_port="$(
  ORDERPIPE_RELAY__MAX_COMMITS_PER_RECORD="${ORDERPIPE_RELAY__MAX_COMMITS_PER_RECORD:-100}" \
    start_worker relay 9091 run
)"
# Likewise every writer of the active-orders view is this build: the SKU items record each
# inventory's progress (one marker write fewer per inventory and batch).
projectors_port="$(
  ORDERPIPE_DYNAMODB__INVENTORY_MARKER="${ORDERPIPE_DYNAMODB__INVENTORY_MARKER:-sku_items}" \
    start_worker projectors 9092 run
)"
# The flows' service token, valid 30 days (scripts/up.sh again after that mints a fresh one).
flows_port="$(
  client_tls_env flows
  ORDERPIPE_COMMAND_API__URL="$scheme://$api_host:$grpc_port" \
    ORDERPIPE_AUTH__SERVICE_TOKEN="$(token --role service --subject flows-service --ttl-minutes 43200)" \
    start_worker flows 9093 run
)"

# The dashboard: its page on 8080 (or the next free port) and its admin endpoint.
dashboard_pid="$run_dir/dashboard.pid"
dashboard_ports="$run_dir/dashboard.ports"
if pid_matches "$dashboard_pid" dashboard; then
  read -r dashboard_http_port dashboard_admin_port <"$dashboard_ports"
else
  OP_RESERVED_PORTS="$grpc_port $admin_port $relay_port $projectors_port"
  dashboard_http_port="$(free_port "${ORDERPIPE_HTTP__PORT:-}" 8080)"
  OP_RESERVED_PORTS="$OP_RESERVED_PORTS $dashboard_http_port"
  dashboard_admin_port="$(free_port 9093)"
  echo "$dashboard_http_port $dashboard_admin_port" >"$dashboard_ports"
  (
    client_tls_env dashboard
    ORDERPIPE_HTTP__PORT="$dashboard_http_port" ORDERPIPE_ADMIN__PORT="$dashboard_admin_port" \
      ORDERPIPE_COMMAND_API__URL="$scheme://$api_host:$grpc_port" \
      spawn "$dashboard_pid" "$ORDERPIPE_STACK_DIR/logs/dashboard.log" "$target_dir/debug/dashboard" serve
  )
  wait_for_port "$dashboard_http_port" 60 "$(cat "$dashboard_pid")" ||
    die "dashboard did not start; see $ORDERPIPE_STACK_DIR/logs/dashboard.log"
  log "dashboard started (pid $(cat "$dashboard_pid")), admin 127.0.0.1:$dashboard_admin_port"
fi

grpc_call() {
  "$venv_python" scripts/grpc-call.py --address "127.0.0.1:$grpc_port" \
    "${grpc_call_tls[@]+"${grpc_call_tls[@]}"}" "$@"
}

# Demo data through the API itself, with fixed idempotency keys so a second run changes nothing.
service_token="$(token --role service --subject local-seed)"
manager_token="$(token --role store-manager --subject local-manager --store store-1)"
while IFS=, read -r sku name cents category on_hand; do
  grpc_call --token "$service_token" call orderpipe.v1.MenuService/AddMenuItem \
    "{\"idempotencyKey\":\"seed-menu-$sku\",\"sku\":\"$sku\",\"name\":\"$name\",\"price\":{\"cents\":$cents},\"category\":\"$category\"}" >/dev/null
  grpc_call --token "$manager_token" call orderpipe.v1.InventoryService/SetStock \
    "{\"idempotencyKey\":\"seed-stock-$sku\",\"storeId\":\"store-1\",\"sku\":\"$sku\",\"onHand\":$on_hand,\"lowStockThreshold\":5}" >/dev/null
done <<'MENU'
LATTE-12,Latte 12oz,450,MENU_CATEGORY_DRINK,100
CAPPUCCINO-12,Cappuccino 12oz,425,MENU_CATEGORY_DRINK,100
MOCHA-16,Mocha 16oz,525,MENU_CATEGORY_DRINK,60
CROISSANT,Butter croissant,325,MENU_CATEGORY_FOOD,40
MENU
log "demo menu and store-1 stock are in place"

barista_token="$(token --role barista --subject local-barista --store store-1)"

cat <<EOF

orderpipe is running.
  dashboard   http://127.0.0.1:$dashboard_http_port/  (store-1; sign in with the barista token below)
              admin http://127.0.0.1:$dashboard_admin_port/metrics and /health
  command-api gRPC $scheme://$api_host:$grpc_port (reflection on; health: grpc.health.v1.Health)
$([ "$tls" = true ] && echo "              TLS + mTLS: CA and certificates in $tls_dir (flows, dashboard, local-tools)")
              admin http://127.0.0.1:$admin_port/metrics and /health
  relay       admin http://127.0.0.1:$relay_port/metrics and /health
  projectors  admin http://127.0.0.1:$projectors_port/metrics and /health
  flows       admin http://127.0.0.1:$flows_port/metrics and /health (saga, payments, intake, notifications)
  logs        $ORDERPIPE_STACK_DIR/logs/{command-api,relay,projectors,flows,dashboard}.log
  stack       scripts/stack.sh status
  replay      $target_dir/debug/replay --help  (rebuild or verify a view; after: source $ORDERPIPE_STACK_DIR/env)

See the views (README "Looking at the views"):
  scripts/views.sh store-1

Call it with the generic reflection client (or any gRPC client that speaks reflection):
  TOKEN=\$($api_bin mint-token --private-key $signing_key --role customer --subject c-42)
  alias grpc-call='$venv_python scripts/grpc-call.py --address 127.0.0.1:$grpc_port${grpc_call_tls[*]+ ${grpc_call_tls[*]}}'
  grpc-call list
  grpc-call --token "\$TOKEN" call orderpipe.v1.OrderService/PlaceOrder \\
    '{"idempotencyKey":"k1","orderId":"'\$(cat /proc/sys/kernel/random/uuid)'","storeId":"store-1","customerId":"c-42","lines":[{"sku":"LATTE-12","quantity":1}]}'

Barista token for the dashboard (valid 8 hours; another: $api_bin mint-token --private-key $signing_key --role barista --subject NAME --store store-1):
  $barista_token

Drop a delivery-platform order on the intake queue; the saga reserves, accepts and charges it
(after: source $ORDERPIPE_STACK_DIR/env):
  $target_dir/debug/flows send-intake docs/flows/intake-order.example.json
  $target_dir/debug/flows dlq list intake        # what could not be placed, and why

Stop: scripts/up.sh stop && scripts/stack.sh down
EOF
