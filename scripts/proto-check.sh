#!/usr/bin/env bash
# Lints the gRPC contract (proto/, rules in proto/buf.yaml) and checks it for breaking changes
# against the last released contract (proto/released/, see its README), with the buf CLI pinned
# in scripts/buf/package-lock.json (installed with `npm ci` when missing or when the lock file
# changes). Exit status 1 when either finds something; buf names the file, line and rule.
#
#   scripts/proto-check.sh                    lint + breaking check of proto/
#   scripts/proto-check.sh --module DIR       the same for a copy of proto/ (the scripts' tests)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

module="$repo/proto"
case "${1:-}" in
  --module) module="$(realpath "${2:?--module needs a directory}")" ;;
  "") ;;
  -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (see --help)" ;;
esac

buf_dir="$repo/scripts/buf"
buf="$buf_dir/node_modules/.bin/buf"
stamp="$buf_dir/node_modules/.orderpipe-lock-sha"
want="$(sha_of "$buf_dir/package-lock.json")"
if [[ ! -x "$buf" || ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
  command -v npm >/dev/null 2>&1 || die "npm is missing (scripts/stack.sh up installs it)"
  log "npm ci in scripts/buf (the buf CLI)"
  (cd "$buf_dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci in scripts/buf failed"
  echo "$want" >"$stamp"
fi

cd "$module"
log "buf lint ($module, $("$buf" --version))"
"$buf" lint || die "buf lint: the contract breaks the rules above (proto/buf.yaml)"
log "buf breaking against $module/released"
"$buf" breaking --against released ||
  die "buf breaking: the changes above break clients of the released contract (proto/released/README.md)"
log "proto: lint clean, no breaking change against proto/released"
