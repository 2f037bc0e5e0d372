#!/usr/bin/env bash
# scripts/test.sh stops what it started (issue 19 item 1): run on a stack that is down, it
# brings the stack up and stops it all again when it ends; run on a stack that is up, it leaves
# it running; run on a stack that is partly up, it stops only the part it started. Runs scripts/test.sh for real (extra arguments, so no fault run or CDK tests) on a
# stack dir and ports of its own, with a `cargo` on PATH that only records which stack
# processes run while the tests would (no build: what is under test is the script).
#
#   scripts/tests/test-sh-stops-what-it-starts.sh     (scripts/test.sh runs it; about 80 s)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

main_stack="$(realpath -m "${ORDERPIPE_STACK_DIR:-$repo/.stack}")"
venv="${ORDERPIPE_STACK_VENV:-$main_stack/venv}"
unset ORDERPIPE_STACK_VENV ORDERPIPE_STACK_PERSIST DATABASE_URL \
  ORDERPIPE_STACK_PRIVATE_DATABASE_URL ORDERPIPE_STACK_PG_DATA
[[ -x "$venv/bin/moto_server" ]] && export ORDERPIPE_STACK_VENV="$venv"
export ORDERPIPE_STACK_PG_PORT=56539 ORDERPIPE_STACK_KINESIS_PORT=4697 \
  ORDERPIPE_STACK_DYNAMODB_PORT=4698 ORDERPIPE_STACK_MOTO_PORT=4699

work="$(mktemp -d /tmp/orderpipe-test-sh.XXXXXX)"
export ORDERPIPE_STACK_DIR="$work/stack"
cleanup() {
  local status=$?
  "$repo/scripts/stack.sh" down --purge >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# The fake cargo: every call appends the pids of the stack's processes then running.
mkdir -p "$work/bin"
cat >"$work/bin/cargo" <<'EOF'
#!/usr/bin/env bash
{
  cat "$ORDERPIPE_STACK_DIR"/run/{kinesis,dynamodb,moto}.pid 2>/dev/null
  sed -n 1p "$ORDERPIPE_STACK_PG_DATA/postmaster.pid" 2>/dev/null
} >>"$ORDERPIPE_TEST_SH_PIDS"
exit 0
EOF
chmod +x "$work/bin/cargo"

failures=0
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  failures=$((failures + 1))
}
running() {
  kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# run_test_sh PIDS_FILE: scripts/test.sh with the fake cargo; fails the test when it fails.
run_test_sh() {
  ORDERPIPE_TEST_SH_PIDS="$1" PATH="$work/bin:$PATH" "$repo/scripts/test.sh" -p none \
    >"$1.log" 2>&1 || fail "scripts/test.sh exited $? (log: $(tail -n 5 "$1.log" | tr '\n' ' '))"
  sort -u "$1" -o "$1"
  (($(wc -l <"$1") == 4)) || fail "expected 4 stack processes during the tests, saw: $(tr '\n' ' ' <"$1")"
}

log "1. the stack is down: test.sh starts it and stops it at the end"
"$repo/scripts/stack.sh" down >/dev/null 2>&1 || true
run_test_sh "$work/down.pids"
while read -r pid; do
  ! running "$pid" || fail "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) still runs after test.sh"
done <"$work/down.pids"
if "$repo/scripts/stack.sh" status >/dev/null 2>&1; then
  fail "the stack is still up after test.sh brought it up"
fi

log "2. the stack is up: test.sh leaves it running"
"$repo/scripts/stack.sh" up >/dev/null 2>&1 || fail "stack.sh up exited $?"
run_test_sh "$work/up.pids"
while read -r pid; do
  running "$pid" || fail "pid $pid was stopped by test.sh, which did not start it"
done <"$work/up.pids"
"$repo/scripts/stack.sh" status >/dev/null 2>&1 || fail "the stack is not up after test.sh"

log "3. part of the stack is up: test.sh stops only what it started (dynamodb, moto)"
"$repo/scripts/stack.sh" down dynamodb moto >/dev/null 2>&1 || fail "stack.sh down dynamodb moto exited $?"
before="$(cat "$ORDERPIPE_STACK_DIR"/run/kinesis.pid; sed -n 1p "$(sed -n 's/^export ORDERPIPE_STACK_PG_DATA=//p' "$ORDERPIPE_STACK_DIR/env")/postmaster.pid")"
run_test_sh "$work/partial.pids"
while read -r pid; do
  if grep -qx "$pid" <<<"$before"; then
    running "$pid" || fail "pid $pid ran before test.sh and was stopped by it"
  else
    ! running "$pid" || fail "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) was started by test.sh and still runs"
  fi
done <"$work/partial.pids"

if ((failures)); then
  log "test-sh-stops-what-it-starts: $failures failure(s)"
  exit 1
fi
log "test-sh-stops-what-it-starts: test.sh stops the stack it started and leaves one it found running"
