#!/usr/bin/env bash
# The whole test suite, as CI runs it: brings the local stack up (installing what is missing),
# then formatting, lints, every Rust test against the real PostgreSQL and emulators (with the
# dashboard's browser test in headless Chromium), the short fault run, and the infra/cdk tests.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p domain  extra arguments go to `cargo test`
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

step "local stack"
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

step "browser test dependencies (chromium, playwright-core)"
dashboard/browser-test/setup.sh

step "cargo test"
# Includes the dashboard's browser test (pipeline-tests: barista_board); its screenshots are in
# target/dashboard-screenshots/.
cargo test --workspace --locked "$@"

if [ $# -eq 0 ]; then
  # The short soak-and-fault run (docs/reliability.md): a stack of its own on its own ports.
  step "fault run (90 s, 8 faults)"
  scripts/fault-run.sh --seconds 90 --faults 8
fi

if [ $# -eq 0 ] && [ -f infra/cdk/package.json ]; then
  step "infra/cdk tests"
  (cd infra/cdk && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi
