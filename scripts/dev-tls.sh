#!/usr/bin/env bash
# Makes a throwaway local CA and the certificates `scripts/up.sh --tls` runs the pipeline with,
# using openssl: the command API's server certificate (for localhost and 127.0.0.1) and a client
# certificate for each caller (flows, dashboard, and local-tools for scripts/grpc-call.py), all
# signed by the CA, EC P-256 keys, valid 30 days. Idempotent: an existing set that is still valid
# for a day is kept; otherwise the whole set is made anew. Never use these outside this machine.
#
#   scripts/dev-tls.sh DIR     write ca.pem, command-api.pem, flows.pem, dashboard.pem,
#                              local-tools.pem and each one's NAME-key.pem into DIR (mode 700)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

[ $# -eq 1 ] || { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
dir=$1
command -v openssl >/dev/null || die "openssl is needed for --tls (apt-get install openssl)"

clients=(flows dashboard local-tools)
days=30

still_valid() {
  local name
  for name in ca command-api "${clients[@]}"; do
    [ -s "$dir/$name.pem" ] && [ -s "$dir/$name-key.pem" ] || return 1
    openssl x509 -in "$dir/$name.pem" -noout -checkend 86400 >/dev/null 2>&1 || return 1
  done
}

if still_valid; then
  log "local TLS certificates in $dir are still valid; keeping them"
  exit 0
fi

mkdir -p "$dir"
chmod 700 "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA.
new_key "$dir/ca-key.pem"
openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days "$days" -subj "/CN=orderpipe local dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$dir/ca.pem" 2>/dev/null

# issue NAME EXTENSIONS: a certificate for NAME signed by the CA.
issue() {
  local name=$1 extensions=$2
  new_key "$dir/$name-key.pem"
  openssl req -new -key "$dir/$name-key.pem" -subj "/CN=$name" -out "$work/$name.csr" 2>/dev/null
  printf '%s\n' "$extensions" >"$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
    -sha256 -days "$days" -extfile "$work/$name.ext" -out "$dir/$name.pem" 2>/dev/null
}

issue command-api "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
for client in "${clients[@]}"; do
  issue "$client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$client"
done
rm -f "$dir/ca.srl"
log "made a local CA and certificates for command-api, ${clients[*]} in $dir"
