#!/usr/bin/env bash
# scripts/knee.sh's search, without a real load run: two builds whose "loadgen" (a stand-in
# script) reports a freshness p99 that grows with the rate (the old one twice as fast), so their
# knees are known. Checks that each build's knee is its last rate under the limit, that a build
# stops at its first rate over it (and a sampled order never seen counts as over), that the
# builds take turns, and that the ratio is printed.
#
#   scripts/tests/knee-search-stops-at-the-limit.sh      (scripts/test.sh runs it; about 1 s)
#
# No stack, no build: --old-bin-dir and --bin-dir name the stand-ins, --keep-emulators leaves
# the emulators alone, and DATABASE_URL / AWS_ENDPOINT_URL_DYNAMODB are set so the stack is not
# brought up.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

work="$(mktemp -d /tmp/orderpipe-knee-test.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failures=0
# check DESCRIPTION COMMAND...: runs COMMAND and counts a failure when it fails.
check() {
  if "${@:2}"; then
    log "ok: $1"
  else
    warn "FAILED: $1"
    failures=$((failures + 1))
  fi
}

# stand_in DIR MS_PER_ORDER [MISSING_FROM]: a loadgen writing report.json with freshness p99 =
# rate * MS_PER_ORDER, and a missing sample from rate MISSING_FROM on.
stand_in() {
  mkdir -p "$1"
  cat >"$1/loadgen" <<EOF
#!/usr/bin/env bash
set -euo pipefail
while ((\$#)); do
  case "\$1" in
    --out) out=\$2; shift 2 ;;
    --orders-per-second) rate=\$2; shift 2 ;;
    *) shift ;;
  esac
done
missing=0
if ((rate >= ${3:-100000})); then missing=1; fi
printf '%s\n' "\$rate" >>"$work/calls"
printf '{"freshness": {"p99_ms": %s}, "freshness_missing": %s}\n' "\$((rate * $2))" "\$missing" >"\$out/report.json"
EOF
  chmod +x "$1/loadgen"
  touch "$1/command-api" "$1/relay" "$1/projectors"
}
stand_in "$work/old" 20
stand_in "$work/current" 10 80

export DATABASE_URL=postgres://unused AWS_ENDPOINT_URL_DYNAMODB=http://unused
output=$("$repo/scripts/knee.sh" --old-bin-dir "$work/old" --bin-dir "$work/current" \
  --keep-emulators --out "$work/out" --from 10 --step 10 --limit-ms 1000 2>"$work/log")

# old: 20 ms per order/s, under 1000 ms up to 40 (800 ms), 50 is 1000: over. current: 10 ms, so
# under up to 90, but from 80 a sample goes missing: its knee is 70.
printed() { grep -q -- "$1" <<<"$output"; }
check "the old build's knee is its last rate under the limit" printed '^| old | 40 |'
check "a missing sample ends the current build's search" printed '^| current | 70 |'
check "the ratio of the knees is printed" printed 'ratio current / old: 1.75'
check "the builds take turns and each stops at its first rate over" \
  test "$(tr '\n' ' ' <"$work/calls")" = '10 10 20 20 30 30 40 40 50 50 60 70 80 '
check "the report is written" test -s "$work/out/knee.md"

if ((failures)); then
  cat "$work/log" >&2
  die "$failures check(s) failed"
fi
log "knee search: all checks passed"
