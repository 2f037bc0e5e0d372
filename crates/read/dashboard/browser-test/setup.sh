#!/usr/bin/env bash
# Installs what the dashboard's browser test (pipeline-tests: barista_board) needs: Debian's
# chromium package when it is missing, and playwright-core from npm (package-lock.json). Safe to
# run again; scripts/test.sh runs it before the Rust tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$here/../../../../scripts/lib.sh"

if ! command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1; then
  [[ $EUID -eq 0 ]] || die "chromium is missing; install it (needs root): apt-get install chromium"
  log "apt-get install chromium (for the dashboard's browser test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends chromium >/dev/null || die "apt-get install chromium failed"
  }
fi

if [ ! -d "$here/node_modules/playwright-core" ] ||
  [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  log "npm ci (playwright-core, for the dashboard's browser test)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
