#!/usr/bin/env bash
# The contract's guards catch what they are for (issue 19 item 5): on scratch copies of proto/,
# scripts/proto-check.sh passes for the contract as it is and for an added field, and fails for
# a renumbered field, a removed RPC, a renamed field of the log envelope and a lint violation,
# naming each.
#
#   scripts/tests/proto-breaking-changes-fail.sh      (scripts/test.sh runs it; a few seconds)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

work="$(mktemp -d /tmp/orderpipe-proto-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  failures=$((failures + 1))
}

# scratch NAME: a fresh copy of proto/ (contract, buf.yaml, released baseline) in $work/NAME.
scratch() {
  mkdir "$work/$1"
  cp -r "$repo/proto/buf.yaml" "$repo/proto/proto" "$repo/proto/released" "$work/$1/"
  echo "$work/$1"
}

# expect NAME ok|fails [TEXT]: runs the check on the copy NAME; it must pass, or fail with TEXT
# in its output.
expect() {
  local name=$1 want=$2 text=${3:-} out
  if out="$("$repo/scripts/proto-check.sh" --module "$work/$name" 2>&1)"; then
    [[ $want == ok ]] || fail "$name: the check passed; expected it to fail with: $text"
  else
    if [[ $want == ok ]]; then
      fail "$name: the check failed: $out"
    elif [[ $out != *"$text"* ]]; then
      fail "$name: the check failed without naming '$text': $out"
    fi
  fi
  printf -- '--- %s (expected %s)\n%s\n' "$name" "$want" "$out" >&2
}

scratch unchanged >/dev/null
expect unchanged ok

dir="$(scratch added-field)"
sed -i 's/^  repeated string customisations = 3;$/&\n  string size = 4;/' "$dir/proto/orderpipe/v1/orders.proto"
grep -q 'string size = 4;' "$dir/proto/orderpipe/v1/orders.proto" || fail "added-field: edit did not apply"
expect added-field ok

dir="$(scratch renumbered-field)"
sed -i 's/^  uint32 quantity = 2;$/  uint32 quantity = 6;/' "$dir/proto/orderpipe/v1/orders.proto"
grep -q 'uint32 quantity = 6;' "$dir/proto/orderpipe/v1/orders.proto" || fail "renumbered-field: edit did not apply"
expect renumbered-field fails 'Previously present field "2" with name "quantity" on message "OrderLine" was deleted'

dir="$(scratch removed-rpc)"
sed -i '/^  rpc CancelOrder(/d' "$dir/proto/orderpipe/v1/orders.proto"
! grep -q 'rpc CancelOrder' "$dir/proto/orderpipe/v1/orders.proto" || fail "removed-rpc: edit did not apply"
expect removed-rpc fails 'Previously present RPC "CancelOrder" on service "OrderService" was deleted'

dir="$(scratch renamed-envelope-field)"
sed -i 's/^  string correlation_id = 9;$/  string correlation = 9;/' "$dir/proto/orderpipe/v1/envelope.proto"
grep -q 'string correlation = 9;' "$dir/proto/orderpipe/v1/envelope.proto" || fail "renamed-envelope-field: edit did not apply"
expect renamed-envelope-field fails 'Field "9" with name "correlation" on message "CommitEnvelope" changed option "json_name"'

dir="$(scratch lint-violation)"
sed -i 's/^  uint32 quantity = 2;$/  uint32 Quantity = 2;/' "$dir/proto/orderpipe/v1/orders.proto"
expect lint-violation fails 'Field name "Quantity" should be lower_snake_case'

if ((failures)); then
  log "proto-breaking-changes-fail: $failures failure(s)"
  exit 1
fi
log "proto-breaking-changes-fail: lint and breaking checks catch what they guard against"
