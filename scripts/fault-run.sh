#!/usr/bin/env bash
# The soak-and-fault run (docs/reliability.md). Starts a stack of its own (a PostgreSQL cluster,
# kinesalite and dynalite keeping their data on disk, moto) on ports of its own, runs the
# pipeline's real processes on it under load, kills them and restarts its servers at random
# moments, then checks that nothing acknowledged was lost or doubled. The stack is removed at
# the end; the report and every process's log stay in .fault-run/<time>/.
#
#   scripts/fault-run.sh                               10 minutes, 24 faults
#   scripts/fault-run.sh --seconds 90 --faults 8       the short run scripts/test.sh runs
#   scripts/fault-run.sh --seed N ...                  the fault schedule of an earlier run
#   scripts/fault-run.sh --help                        every option (of target/debug/fault-run)
#
# Ports (override with ORDERPIPE_FAULT_RUN_PG_PORT / _KINESIS_PORT / _DYNAMODB_PORT / _MOTO_PORT):
# PostgreSQL 55439, kinesalite 4577, dynalite 4578, moto 4579 (the next free one when taken);
# the pipeline's processes take free ephemeral ports. It never touches the stack of
# scripts/stack.sh or scripts/up.sh. Exit status 1 when a check fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo
fi

run_dir="${ORDERPIPE_FAULT_RUN_DIR:-$repo/.fault-run}"
# The stack's own settings: stack.sh reads them. A PostgreSQL server the run restarts must be
# its own, so an inherited DATABASE_URL is dropped.
export ORDERPIPE_STACK_DIR="$run_dir/stack"
export ORDERPIPE_STACK_PG_PORT="${ORDERPIPE_FAULT_RUN_PG_PORT:-55439}"
export ORDERPIPE_STACK_KINESIS_PORT="${ORDERPIPE_FAULT_RUN_KINESIS_PORT:-4577}"
export ORDERPIPE_STACK_DYNAMODB_PORT="${ORDERPIPE_FAULT_RUN_DYNAMODB_PORT:-4578}"
export ORDERPIPE_STACK_MOTO_PORT="${ORDERPIPE_FAULT_RUN_MOTO_PORT:-4579}"
export ORDERPIPE_STACK_PERSIST=1
# moto and boto3 are installed once, in the main stack's venv.
export ORDERPIPE_STACK_VENV="${ORDERPIPE_STACK_VENV:-$repo/.stack/venv}"
unset DATABASE_URL ORDERPIPE_STACK_PRIVATE_DATABASE_URL

log "building the pipeline, replay and fault-run"
cargo build --quiet --locked -p command-api -p relay -p projectors -p replay -p fault-run
target_dir="$(cargo_target_dir)"
bin_dir="$target_dir/debug"
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  exec "$bin_dir/fault-run" --help
fi

out_dir="$run_dir/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out_dir"
finish() {
  local status=$?
  if [[ -d "$ORDERPIPE_STACK_DIR/logs" ]]; then
    cp -rL "$ORDERPIPE_STACK_DIR/logs" "$out_dir/stack-logs" 2>/dev/null || true # -L: postgres.log may link out
  fi
  scripts/stack.sh down --purge >/dev/null 2>&1 || warn "stopping the fault-run stack failed"
  log "report and logs: $out_dir"
  exit "$status"
}
trap finish EXIT

# A fresh stack every run: a stream, tables and databases that hold this run's data only.
scripts/stack.sh down --purge >/dev/null 2>&1 || true
scripts/stack.sh up
# shellcheck disable=SC1090,SC1091 # the env file is generated
source "$(scripts/stack.sh env --path)"

"$bin_dir/fault-run" --bin-dir "$bin_dir" --out-dir "$out_dir" "$@" \
  --restart-command "$repo/scripts/stack.sh" restart
