#!/usr/bin/env bash
# Every binary the README tells a user to run after `scripts/up.sh` (each `target/debug/NAME` in
# README.md) is built by scripts/up.sh (issue 19 item 1): maps each name to the package that
# builds it (`cargo metadata`, no build) and checks that up.sh's `cargo build` names that package.
#
#   scripts/tests/readme-binaries-built-by-up.sh      (scripts/test.sh runs it; a second)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

mapfile -t wanted < <(grep -o 'target/debug/[A-Za-z0-9_-]*' README.md | sed 's|target/debug/||' | sort -u)
((${#wanted[@]})) || die "README.md names no target/debug binary; is this the right file?"

# The packages up.sh builds: the -p arguments of its `cargo build` lines.
built="$(grep -E '^[[:space:]]*cargo build' scripts/up.sh | grep -oE -- '-p [A-Za-z0-9_-]+' | cut -d' ' -f2 | sort -u | tr '\n' ' ')"

# binary name -> package name, from the workspace's manifests.
bin_packages="$(cargo metadata --format-version 1 --no-deps --offline | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "bin" in target["kind"]:
            print(target["name"], package["name"])
')"

failures=0
for binary in "${wanted[@]}"; do
  package="$(awk -v b="$binary" '$1 == b { print $2 }' <<<"$bin_packages")"
  if [[ -z "$package" ]]; then
    printf 'FAIL: README.md runs target/debug/%s, which no workspace package builds\n' "$binary" >&2
    failures=$((failures + 1))
  elif [[ " $built " != *" $package "* ]]; then
    printf 'FAIL: README.md runs target/debug/%s (package %s), which scripts/up.sh does not build (it builds: %s)\n' \
      "$binary" "$package" "$built" >&2
    failures=$((failures + 1))
  fi
done
if ((failures)); then
  exit 1
fi
log "readme-binaries-built-by-up: scripts/up.sh builds every binary README.md runs (${wanted[*]})"
