#!/usr/bin/env bash
# Where the CPU goes while a benchmark runs: starts `compare` or `loadgen` (release builds, on the
# local stack, as scripts/bench.sh does), waits for the part named below, samples every process
# on the machine with `perf record -a -e cpu-clock` (a software clock: works where hardware
# counters are not exposed, as on these VMs), then prints the CPU share of each program (idle
# included; PostgreSQL's backends summed) and the hottest symbols of the busiest ones.
#
#   scripts/profile.sh compare [SECONDS] [a|c|d]
#                                          during part (a), the gRPC command path (default), (c)
#                                          the replays or (d) the projectors (default 5 s)
#   scripts/profile.sh loadgen [SECONDS] [LOADGEN ARGS]
#                                          during the load run's sustained peak (default 20 s)
#   scripts/profile.sh budget [ORDERS] [CLIENTS]
#                                          the per-command budget (default 100 orders, 8 clients)
#   scripts/profile.sh --help
#
# `budget` counts instead of sampling, so its figures repeat on a busy machine: the command API
# (release build) runs under `valgrind --tool=callgrind` on a scratch PostgreSQL cluster of its
# own (pg_stat_statements loaded); after a warm-up, ORDERS orders of six commands are sent by
# the `budget` client and the script prints, per command: instructions in the command API by
# stage (gRPC/HTTP2, the service method, auth, fingerprint, the executor, aggregate load, the
# group-commit writer, logging), statements and group-commit transactions in PostgreSQL, and
# TCP segments (round trips) and bytes on the connections to PostgreSQL. Settings of the
# command API can be passed in the environment (e.g. ORDERPIPE_STORE__AGGREGATE_CACHE=0 for a
# cold cache); BUDGET_API_BIN=PATH measures another build of it (a before/after table). Its
# files stay in <target>/bench/budget-<time>/.
#
# The raw profile and the benchmark's report stay in <target>/bench/profile-<time>/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
cd "$repo"

usage() { sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

what="${1:-}"
case "$what" in
  -h | --help) usage; exit 0 ;;
  compare) seconds=5; marker="(a) gRPC command API" ;;
  loadgen) seconds=20; marker="sustain" ;;
  budget) shift; exec "$repo/scripts/profile-budget.sh" "$@" ;;
  *) usage >&2; exit 2 ;;
esac
shift
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds="$1"
  shift
fi
[ "$seconds" -gt 0 ] || die "SECONDS must be at least 1"
if [ "$what" = compare ]; then
  case "${1:-a}" in
    a) ;;
    c) marker="(c) replay against COPY" ;;
    d) marker="(d) projectors against raw writes" ;;
    *) die "compare's part is a, c or d, not '$1'" ;;
  esac
  [ $# -le 1 ] || die "compare takes SECONDS and a part, nothing more"
fi

if ! command -v perf > /dev/null; then
  [[ $EUID -eq 0 ]] || die "perf is missing; install it (needs root): apt-get install linux-perf"
  log "apt-get install linux-perf"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf > /dev/null
fi
prepare_benchmarks
out="$BENCH_OUT/profile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

if [ "$what" = compare ]; then
  "$BENCH_BIN/compare" --out "$out/report" > "$out/run.log" 2>&1 &
else
  "$BENCH_BIN/loadgen" --out "$out/report" "$@" > "$out/run.log" 2>&1 &
fi
bench=$!
trap 'kill "$bench" 2> /dev/null || true' EXIT
log "waiting for '$marker' (the run's log: $out/run.log)"
until grep -qF "$marker" "$out/run.log"; do
  kill -0 "$bench" 2> /dev/null || die "the benchmark ended before '$marker'; see $out/run.log"
  sleep 0.2
done
sleep 1
log "sampling every process for $seconds s"
ps -eo pid=,comm= > "$out/processes.txt"
perf record -a -q -F 499 -e cpu-clock -o "$out/perf.data" -- sleep "$seconds" 2> /dev/null
ps -eo pid=,comm= >> "$out/processes.txt"
wait "$bench" || die "the benchmark failed; see $out/run.log"
trap - EXIT

# Samples per process (threads folded into their process), summed per program, then the top
# symbols of the three busiest programs.
perf script -i "$out/perf.data" -F pid,comm 2> /dev/null | awk '{ split($NF, ids, "/"); print ids[1] }' \
  | sort | uniq -c | sort -rn > "$out/samples-by-pid.txt"
python3 - "$out" "$seconds" << 'EOF'
import collections, subprocess, sys
out, seconds = sys.argv[1], float(sys.argv[2])
names = {}
for line in open(f"{out}/processes.txt"):
    pid, _, comm = line.strip().partition(" ")
    names[pid] = comm.strip()
samples = {pid: int(count) for count, pid in (line.split() for line in open(f"{out}/samples-by-pid.txt"))}
total = sum(samples.values()) or 1
# PostgreSQL runs a process per connection: its share is the sum over its processes.
programs = collections.defaultdict(lambda: [0, []])
for pid, count in samples.items():
    name = "idle" if pid == "0" else names.get(pid, "?")
    programs[name][0] += count
    programs[name][1].append(pid)
print(f"\n## CPU by program over {seconds:.0f} s (share of all cores' time)\n")
print("| program | processes | share |")
print("|---|---:|---:|")
ranked = sorted(programs.items(), key=lambda item: -item[1][0])
for name, (count, pids) in ranked[:10]:
    print(f"| {name} | {len(pids)} | {100 * count / total:.1f}% |")
for name, (count, pids) in [r for r in ranked if r[0] not in ("idle", "?")][:3]:
    # Rust programs name their threads (tokio-rt-worker), so they are picked by pid; the
    # others by their command name, which covers every process of the program.
    selector = ["--pid", ",".join(pids)] if len(pids) <= 4 else ["--comm", name]
    print(f"\n### hottest symbols of {name} (share of all samples)\n")
    report = subprocess.run(
        ["perf", "report", "-i", f"{out}/perf.data", *selector, "--sort", "dso,sym",
         "--stdio", "--percent-limit", "0.3"],
        capture_output=True, text=True).stdout
    lines = [l for l in report.splitlines() if l.strip() and not l.startswith("#")]
    print("```\n" + "\n".join(lines[:12]) + "\n```")
EOF
log "profile and report: $out"
