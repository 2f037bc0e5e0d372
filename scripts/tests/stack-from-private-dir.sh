#!/usr/bin/env bash
# The README's first step from a clone in a private folder (issue 19 item 1): copies the
# repository's files into a folder of mode 700 (as root's home is), then runs `stack.sh up`,
# `status` and `down` there with nothing set, on ports of its own, and checks that each exits 0,
# that the PostgreSQL data went where the postgres user can reach it (when run as root), that
# nothing it started is still running after `down`, that `down --purge` removes that data, and
# that a folder of that name made by another user is refused.
#
#   scripts/tests/stack-from-private-dir.sh      (scripts/test.sh runs it; about 15 s)
#
# It never touches the stack of scripts/stack.sh (its own stack dir, its own ports). The Python
# venv with moto is reused from ORDERPIPE_STACK_VENV or the main stack's dir when it exists
# (pip installing moto takes minutes); the emulators' node modules are installed with `npm ci`
# as a new clone would.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

main_stack="$(realpath -m "${ORDERPIPE_STACK_DIR:-$repo/.stack}")"
venv="${ORDERPIPE_STACK_VENV:-$main_stack/venv}"
# Everything the stack reads from the environment is cleared: the clone must work as is.
unset ORDERPIPE_STACK_DIR ORDERPIPE_STACK_VENV ORDERPIPE_STACK_PERSIST DATABASE_URL \
  ORDERPIPE_STACK_PRIVATE_DATABASE_URL ORDERPIPE_STACK_PG_DATA
if [[ -x "$venv/bin/moto_server" ]]; then
  export ORDERPIPE_STACK_VENV="$venv"
fi
# Ports away from the main stack's (54329, 4567-4569) and the fault run's; taken ones move on.
export ORDERPIPE_STACK_PG_PORT=56529 ORDERPIPE_STACK_KINESIS_PORT=4687 \
  ORDERPIPE_STACK_DYNAMODB_PORT=4688 ORDERPIPE_STACK_MOTO_PORT=4689

home="$(mktemp -d /tmp/orderpipe-private-home.XXXXXX)"
chmod 700 "$home"
clone="$home/orderpipe"
failures=0
# running PID: alive and not a zombie (a stopped postmaster's parent is whoever adopted it, which
# may reap it a little later).
running() {
  kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  failures=$((failures + 1))
}

cleanup() {
  local status=$?
  if [[ -x "$clone/scripts/stack.sh" ]]; then
    (cd "$clone" && scripts/stack.sh down --purge >/dev/null 2>&1) || true
  fi
  rm -rf "$home"
  exit "$status"
}
trap cleanup EXIT

# The repository's files as a clone has them (tracked and new files of this working tree, so
# the scripts under test are the ones being changed; no .stack, no node_modules, no target).
mkdir "$clone"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' path; do [[ -e "$path" ]] && printf '%s\0' "$path"; done |
  tar --null -T - -cf -) | tar -xf - -C "$clone"

cd "$clone"
log "stack.sh up in $clone (parent mode $(stat -c %a "$home"))"
scripts/stack.sh up || fail "stack.sh up exited $?"
env_file="$clone/.stack/env"
[[ -f "$env_file" ]] || fail "no env file at $env_file"

pg_data="$(sed -n 's/^export ORDERPIPE_STACK_PG_DATA=//p' "$env_file" 2>/dev/null || true)"
if [[ $EUID -eq 0 ]]; then
  # root's clone is out of the postgres user's reach: the data must be outside it.
  [[ "$pg_data" == /var/tmp/orderpipe-*/pg/data ]] ||
    fail "PostgreSQL data is at '$pg_data', expected /var/tmp/orderpipe-<hash>/pg/data"
fi

scripts/stack.sh status || fail "stack.sh status exited $? after up"

# What up started, to check that down stops it.
pids=()
for name in kinesis dynamodb moto; do
  [[ -s .stack/run/$name.pid ]] && pids+=("$(<".stack/run/$name.pid")")
done
[[ -n "$pg_data" && -f "$pg_data/postmaster.pid" ]] && pids+=("$(sed -n 1p "$pg_data/postmaster.pid")")
ports=()
for name in postgres kinesis dynamodb moto; do
  [[ -s .stack/run/$name.port ]] && ports+=("$(<".stack/run/$name.port")")
done
((${#pids[@]} == 4)) || fail "expected 4 processes after up, found pids: ${pids[*]:-none}"

scripts/stack.sh down || fail "stack.sh down exited $?"
for pid in "${pids[@]}"; do
  ! running "$pid" || fail "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) still runs after down"
done
for port in "${ports[@]}"; do
  ! port_answers "$port" || fail "port $port still answers after down"
done
if scripts/stack.sh status >/dev/null 2>&1; then
  fail "stack.sh status exited 0 after down"
fi

scripts/stack.sh down --purge || fail "stack.sh down --purge exited $?"
if [[ -n "$pg_data" && -e "$pg_data" ]]; then
  fail "down --purge left $pg_data"
fi

if [[ $EUID -eq 0 ]] && id -u nobody >/dev/null 2>&1; then
  # /var/tmp is world-writable: a folder of the expected name made by another user is refused,
  # and nothing starts.
  squatted="/var/tmp/orderpipe-$(printf '%s' "$clone/.stack" | sha256sum | cut -c1-12)"
  mkdir -m 777 "$squatted" && chown nobody: "$squatted"
  if out="$(scripts/stack.sh up 2>&1)"; then
    fail "stack.sh up accepted $squatted owned by nobody"
  elif [[ $out != *"$squatted exists but belongs to nobody"* ]]; then
    fail "stack.sh up refused $squatted without saying why: $out"
  fi
  [[ ! -e "$squatted/pg" ]] || fail "stack.sh up wrote into $squatted, owned by nobody"
  for name in kinesis dynamodb moto; do
    ! pid_alive ".stack/run/$name.pid" || fail "$name started although up was refused"
  done
  scripts/stack.sh down --purge >/dev/null 2>&1 || fail "stack.sh down --purge exited $? after a refused up"
  [[ -d "$squatted" ]] || fail "down --purge removed $squatted, which another user owns"
  log "a $squatted owned by nobody was refused: $(grep -o 'ERROR: .*' <<<"$out")"
  rm -rf "$squatted"
fi

if ((failures)); then
  log "stack-from-private-dir: $failures failure(s)"
  exit 1
fi
log "stack-from-private-dir: up, status, down and down --purge work from a private folder"
