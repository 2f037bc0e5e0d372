#!/usr/bin/env bash
# Finds the freshness knee of one or two builds on this machine, in the same session: the highest
# paced rate (`loadgen --orders-per-second R`, R in steps) at which the active-orders view's
# freshness p99 (PlaceOrder acknowledged -> visible in DynamoDB) stays under the limit. Each step
# runs on fresh emulators (kinesalite and dynalite restarted first); a build's search stops at its
# first step over the limit (or with a sample never seen). With --old-rev the two builds take
# turns at every rate, so both see the same machine; then the ratio of the knees is printed.
#
#   scripts/knee.sh [OPTIONS] [-- LOADGEN_ARGS...]
#
#   --old-rev REV        also measure REV (built in a worktree of its own under the cargo target
#                        dir, release, sharing the target dir's dependencies)
#   --old-bin-dir DIR    ... or take the old build's binaries from DIR (loadgen, command-api,
#                        relay, projectors); no build
#   --bin-dir DIR        take the current build's binaries from DIR instead of building this tree
#   --current-args ARGS  loadgen arguments for the current build only (e.g. "--projectors 2")
#   --from R             first rate (default 10)     --step R   rate step (default 10)
#   --to R               last rate tried (default 400)
#   --limit-ms MS        freshness p99 limit (default 1000)
#   --sustain S          seconds at the rate (default 20; ramp up 3 s, ramp down 2 s)
#   --keep-emulators     do not restart kinesalite and dynalite before each step
#   --out DIR            results (default <target>/bench/knee-<time>): per build and rate, the
#                        loadgen report, and knee.md
#   LOADGEN_ARGS         passed to every loadgen run (both builds)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

old_rev='' old_bin='' current_bin='' current_args='' out=''
from=10 step=10 to=400 limit_ms=1000 sustain=20 restart_emulators=1
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --old-rev) old_rev=${2:?--old-rev needs a git revision}; shift 2 ;;
    --old-bin-dir) old_bin=${2:?--old-bin-dir needs a directory}; shift 2 ;;
    --bin-dir) current_bin=${2:?--bin-dir needs a directory}; shift 2 ;;
    --current-args) current_args=${2?--current-args needs arguments}; shift 2 ;;
    --from) from=${2:?}; shift 2 ;;
    --step) step=${2:?}; shift 2 ;;
    --to) to=${2:?}; shift 2 ;;
    --limit-ms) limit_ms=${2:?}; shift 2 ;;
    --sustain) sustain=${2:?}; shift 2 ;;
    --keep-emulators) restart_emulators=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
loadgen_args=("$@")
for number in "$from" "$step" "$to" "$limit_ms" "$sustain"; do
  if ! [[ "$number" =~ ^[0-9]+$ ]] || ((number == 0)); then
    die "rates, limit and seconds are positive integers (got '$number')"
  fi
done
[[ -z "$old_rev" || -z "$old_bin" ]] || die "give --old-rev or --old-bin-dir, not both"

if [ -z "${DATABASE_URL:-}" ] || [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  scripts/stack.sh up
  # shellcheck disable=SC1090 # the env file is generated
  source "$(scripts/stack.sh env --path)"
fi
out=${out:-"$(cargo_target_dir)/bench/knee-$(date -u +%Y%m%dT%H%M%SZ)"}
mkdir -p "$out"

# keep_binaries SOURCE_DIR DEST_DIR: copies the four binaries a load run needs.
keep_binaries() {
  mkdir -p "$2"
  local binary
  for binary in loadgen command-api relay projectors; do
    [[ -x "$1/$binary" ]] || die "$1/$binary is missing"
    cp "$1/$binary" "$2/"
  done
}

# build_release TREE: release build of the load run's binaries in TREE (the shared target dir,
# so the dependencies are built once; each tree's own crates are built apart).
build_release() {
  log "building $1 (release)"
  (cd "$1" && cargo build --quiet --release --locked -p benches -p command-api -p relay -p projectors)
}

target_release="$(cargo_target_dir)/release"
if [[ -n "$old_rev" ]]; then
  sha=$(git rev-parse --verify "$old_rev^{commit}") || die "no such revision: $old_rev"
  tree="$(cargo_target_dir)/knee-worktrees/${sha:0:12}"
  if [[ ! -d "$tree" ]]; then
    git worktree add --detach "$tree" "$sha" >/dev/null
  fi
  build_release "$tree"
  keep_binaries "$target_release" "$out/bin/old"
  old_bin="$out/bin/old"
  printf '%s\n' "$sha" >"$out/bin/old/REVISION"
fi
if [[ -z "$current_bin" ]]; then
  build_release "$repo"
  keep_binaries "$target_release" "$out/bin/current"
  current_bin="$out/bin/current"
fi

builds=(current)
declare -A bin_of=([current]="$current_bin") knee_of=([current]=0) searching=([current]=1)
if [[ -n "$old_bin" ]]; then
  builds=(old current)
  bin_of[old]="$old_bin"
  knee_of[old]=0
  searching[old]=1
fi

# p99_of REPORT_JSON: the freshness p99 in ms, or "missing" when a sampled order was never seen.
p99_of() {
  python3 - "$1" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
missing = report.get("freshness_missing", 0)
print("missing" if missing else round(report["freshness"]["p99_ms"]))
PY
}

results="$out/steps.tsv"
printf 'build\trate\tfreshness_p99_ms\tunder_limit\n' >"$results"
rate=$from
while ((rate <= to)); do
  any=0
  for build in "${builds[@]}"; do
    ((searching[$build])) || continue
    any=1
    if ((restart_emulators)); then
      scripts/stack.sh restart kinesis >/dev/null 2>&1 || die "cannot restart kinesalite"
      scripts/stack.sh restart dynamodb >/dev/null 2>&1 || die "cannot restart dynalite"
    fi
    run_dir="$out/$build/$rate"
    mkdir -p "$run_dir"
    extra=()
    if [[ "$build" == current && -n "$current_args" ]]; then
      read -r -a extra <<<"$current_args"
    fi
    log "$build: $rate orders/s"
    if ! "${bin_of[$build]}/loadgen" --bin-dir "${bin_of[$build]}" --out "$run_dir" \
      --orders-per-second "$rate" --ramp-up 3 --sustain "$sustain" --ramp-down 2 \
      --drain-timeout 20 "${extra[@]}" "${loadgen_args[@]}" >"$run_dir/loadgen.out" 2>"$run_dir/loadgen.err"; then
      die "$build: loadgen failed at $rate orders/s (see $run_dir/loadgen.err)"
    fi
    p99=$(p99_of "$run_dir/report.json")
    if [[ "$p99" != missing ]] && ((p99 < limit_ms)); then
      knee_of[$build]=$rate
      under=yes
    else
      searching[$build]=0
      under=no
    fi
    printf '%s\t%s\t%s\t%s\n' "$build" "$rate" "$p99" "$under" >>"$results"
    log "$build: $rate orders/s: freshness p99 $p99 ms ($under)"
  done
  ((any)) || break
  rate=$((rate + step))
done

{
  printf '# Freshness knee (p99 under %s ms; %s s per step, rates %s..%s by %s)\n\n' \
    "$limit_ms" "$sustain" "$from" "$to" "$step"
  printf 'Load average at the end: %s\n\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '| build | knee (orders/s) |\n|---|---:|\n'
  for build in "${builds[@]}"; do
    printf '| %s | %s |\n' "$build" "${knee_of[$build]}"
  done
  if [[ -n "$old_bin" ]]; then
    python3 -c 'import sys; o, c = map(float, sys.argv[1:]); print("\nratio current / old: " + (f"{c / o:.2f}" if o else "old build never under the limit"))' \
      "${knee_of[old]}" "${knee_of[current]}"
  fi
  printf '\n| build | rate | freshness p99 ms | under |\n|---|---:|---:|---|\n'
  tail -n +2 "$results" | while IFS=$'\t' read -r b r p u; do printf '| %s | %s | %s | %s |\n' "$b" "$r" "$p" "$u"; done
} >"$out/knee.md"
cat "$out/knee.md"
log "results: $out"
