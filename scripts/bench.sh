#!/usr/bin/env bash
# Runs orderpipe's benchmarks on the local stack and prints their tables: the comparison run
# (our command path against plain cqrs-es + postgres-es, events/s against the batched-insert
# ceiling, replay against COPY, projectors against raw writes; each ratio) and the morning-rush
# load generator (commands/s, latency, freshness, projector backlog, peak memory per process).
# Release builds; every database, stream, table and queue is made fresh, on free ports.
#
#   scripts/bench.sh                      both; results in <target>/bench/<time>/{compare,loadgen}
#   scripts/bench.sh compare [ARGS]       the comparison only (ARGS: see `compare --help`)
#   scripts/bench.sh loadgen [ARGS]       the load run only (ARGS: see `loadgen --help`)
#   scripts/bench.sh knee [ARGS]          the freshness knee of this tree and an older one
#                                         (scripts/knee.sh: ARGS see `scripts/knee.sh --help`)
#   scripts/bench.sh --help
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

what="${1:-all}"
case "$what" in
  -h | --help) usage; exit 0 ;;
  all) shift $(($# > 0 ? 1 : 0)); [ $# -eq 0 ] || die "'all' takes no arguments; run compare or loadgen alone" ;;
  compare | loadgen) shift ;;
  # The knee builds and runs each build's own binaries: scripts/knee.sh does all of it.
  knee) shift; exec "$repo/scripts/knee.sh" "$@" ;;
  *) usage >&2; exit 2 ;;
esac

prepare_benchmarks
bin="$BENCH_BIN"
out="$BENCH_OUT/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

if [ "$what" = all ] || [ "$what" = compare ]; then
  log "comparison run (results also in $out/compare)"
  "$bin/compare" --out "$out/compare" "$@"
fi
if [ "$what" = all ] || [ "$what" = loadgen ]; then
  log "morning-rush load run (report and process logs in $out/loadgen)"
  "$bin/loadgen" --out "$out/loadgen" "$@"
fi
log "results: $out"
