#!/usr/bin/env bash
# The whole test suite, as CI runs it: brings the local stack up (installing what is missing),
# then formatting, lints (Rust, shell, protobuf), the gRPC contract's breaking-change check,
# every Rust test against the real PostgreSQL and emulators (with the dashboard's browser test in
# headless Chromium, and the analytics SQL parsed with sqlfluff's Redshift dialect), the tests
# of the scripts themselves, the short fault run, and the infra/cdk tests. What it starts of the
# stack it stops at the end; a stack that was already running is left running.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p domain  extra arguments go to `cargo test` (no script tests, fault run
#                              or CDK tests then)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

step "local stack"
# The components running before (stack.sh status: NAME URL running ...); the rest this run
# starts, and stops again when it ends, however it ends.
was_running="$(scripts/stack.sh status 2>/dev/null | awk '$3 == "running" { print $1 }' | tr '\n' ' ' || true)"
stop_started_stack() {
  local status=$? name started=()
  for name in postgres kinesis dynamodb moto; do
    [[ " $was_running " == *" $name "* ]] || started+=("$name")
  done
  if ((${#started[@]} == 4)); then
    step "stopping the local stack (this run started it)"
    scripts/stack.sh down || true
  elif ((${#started[@]})); then
    step "stopping what this run started of the local stack: ${started[*]}"
    scripts/stack.sh down "${started[@]}" || true
  fi
  exit "$status"
}
trap stop_started_stack EXIT
scripts/stack.sh up
# shellcheck disable=SC1090,SC1091 # the env file is generated
source "$(scripts/stack.sh env --path)"

step "dropping test databases left by earlier runs"
psql "$DATABASE_URL" -Atqc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'orderpipe\_test\_%'" |
  while read -r name; do
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
  done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "shellcheck"
scripts/shellcheck.sh

step "buf lint and buf breaking (proto/, against proto/released)"
scripts/proto-check.sh

step "browser test dependencies (chromium, playwright-core)"
crates/read/dashboard/browser-test/setup.sh

step "cargo test"
# Includes the dashboard's browser test (pipeline-tests: barista_board); its screenshots are in
# target/dashboard-screenshots/, and the Redshift dialect check of every statement sent to the
# analytics database (read-models: redshift_dialect, sqlfluff from the stack's venv).
cargo test --workspace --locked "$@"

if [ $# -eq 0 ]; then
  # The scripts themselves: a clone in a private folder, this script's own clean-up, the
  # README's binaries, and the contract checks catching what they guard against.
  step "script tests (scripts/tests/)"
  scripts/tests/stack-from-private-dir.sh
  scripts/tests/test-sh-stops-what-it-starts.sh
  scripts/tests/readme-binaries-built-by-up.sh
  scripts/tests/proto-breaking-changes-fail.sh
  scripts/tests/dev-tls-certificates.sh
  scripts/tests/knee-search-stops-at-the-limit.sh
fi

if [ $# -eq 0 ]; then
  # The short soak-and-fault run (docs/reliability.md): a stack of its own on its own ports.
  step "fault run (90 s, 8 faults)"
  scripts/fault-run.sh --seconds 90 --faults 8
fi

if [ $# -eq 0 ] && [ -f infra/cdk/package.json ]; then
  step "infra/cdk tests"
  (cd infra/cdk && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi
