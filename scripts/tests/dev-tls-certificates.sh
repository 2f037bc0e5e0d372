#!/usr/bin/env bash
# The certificates `scripts/up.sh --tls` runs with (scripts/dev-tls.sh) are what the services need:
# each one chains to the local CA, the command API's carries localhost and 127.0.0.1 and is for
# servers, the callers' are for clients, keys are private to root, and a second run keeps a valid
# set instead of replacing the CA under running processes.
#
#   scripts/tests/dev-tls-certificates.sh      (scripts/test.sh runs it; about a second)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

dir="$(mktemp -d)/tls"
trap 'rm -rf "$(dirname "$dir")"' EXIT
"$repo/scripts/dev-tls.sh" "$dir" 2>/dev/null

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
for name in command-api flows dashboard local-tools; do
  openssl verify -CAfile "$dir/ca.pem" "$dir/$name.pem" >/dev/null 2>&1 ||
    fail "$name.pem does not chain to ca.pem"
  [ "$(stat -c %a "$dir/$name-key.pem")" = 600 ] || fail "$name-key.pem is readable by others"
done
server="$(openssl x509 -in "$dir/command-api.pem" -noout -text)"
[[ "$server" == *"DNS:localhost"* && "$server" == *"IP Address:127.0.0.1"* ]] ||
  fail "command-api.pem is not for localhost and 127.0.0.1"
[[ "$server" == *"TLS Web Server Authentication"* ]] || fail "command-api.pem is not a server certificate"
[[ "$(openssl x509 -in "$dir/flows.pem" -noout -text)" == *"TLS Web Client Authentication"* ]] ||
  fail "flows.pem is not a client certificate"

before="$(sha256sum "$dir/ca.pem")"
"$repo/scripts/dev-tls.sh" "$dir" 2>/dev/null
[ "$before" = "$(sha256sum "$dir/ca.pem")" ] || fail "a second run replaced a valid CA"

log "dev-tls-certificates: the local CA signs a localhost server certificate and three client certificates; a rerun keeps them"
