#!/usr/bin/env bash
# Runs shellcheck on every shell script of the repository (the *.sh files git knows, and .ci/run),
# following what they source. Installs Debian's shellcheck when it is missing.
#
#   scripts/shellcheck.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

if ! command -v shellcheck >/dev/null 2>&1; then
  [[ $EUID -eq 0 ]] || die "shellcheck is missing; install it (needs root): apt-get install shellcheck"
  log "apt-get install shellcheck"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q shellcheck >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1 || die "apt-get update failed"
    apt-get install -y -q shellcheck >/dev/null || die "apt-get install shellcheck failed"
  }
fi

mapfile -t scripts < <(git ls-files --cached --others --exclude-standard '*.sh' .ci/run)
shellcheck -x "${scripts[@]}"
log "shellcheck: ${#scripts[@]} scripts clean"
