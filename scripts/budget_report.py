#!/usr/bin/env python3
"""The per-command budget table of `scripts/profile.sh budget`, from the raw files it leaves in
its output directory (callgrind's inclusive costs, pg_stat_statements, ss counters).

  budget_report.py OUT_DIR

A stage's instructions are callgrind's inclusive cost of the function that enters it. Async
code is polled in pieces, and every piece of a stage runs inside its function's poll
(`{{closure}}`), so the inclusive cost is all its work, the libraries it calls included. A
release build inlines small functions into their callers: a stage is only as fine as the
functions that stay out of line, which is why some rows group several steps. Indented rows are
part of the row above them.
"""

import re
import sys
from pathlib import Path

# (depth, label, patterns): the stage's cost is the sum, over its patterns, of the largest
# inclusive cost among the functions matching that pattern (one function per pattern: a family
# of nested instances of one generic function is counted once). A pattern prefixed with "-" is
# subtracted.
STAGES = [
    (0, "gRPC and HTTP/2 (tonic, hyper, h2), outside the service method",
     [r"<hyper::proto::h2::server::H2Stream<.*> as core::future::future::Future>::poll$",
      r"-<command_api::deadline::Deadline<S> as tower_service::Service<.*>>::call::\{\{closure\}\}$",
      r"tonic::transport::server::serve_connection::\{\{closure\}\}$"]),
    (0, "the service method (per RPC, inside the request's deadline)",
     [r"<command_api::deadline::Deadline<S> as tower_service::Service<.*>>::call::\{\{closure\}\}$"]),
    (1, "authentication, limits, idempotency fingerprint, correlation id (Api::command_call)",
     [r"command_api::grpc::Api::command_call$"]),
    (2, "token verification (auth-tokens, jsonwebtoken)",
     [r"auth_tokens::TokenAuthority::authenticate_until$"]),
    (2, "the fingerprint (SHA-256 of the encoded request) and the caller-scoped key (Call::new)",
     [r"command_api::call::Call::new$"]),
    (1, "the executor: load, handle, commit, the command's log line and metrics",
     [r"command_api::executor::CommandExecutor<A>::execute::\{\{closure\}\}$"]),
    (2, "cqrs-es: load, handle, serialise and queue the commit, wait for it",
     [r"cqrs_es::cqrs::CqrsFramework<A,ES>::execute_with_metadata::\{\{closure\}\}$"]),
    (3, "aggregate load from PostgreSQL (a query, rows decoded, events applied)",
     [r"event_store::aggregate_store::AggregateStore<A>::load::\{\{closure\}\}$"]),
    (0, "the group-commit writer task (its share per command)",
     [r"event_store::committer::run_writer::\{\{closure\}\}$"]),
    (1, "encoding the batch's column arrays (events, outbox, keys, snapshots)",
     [r"event_store::committer::(BatchRows|CommitColumns)::bind_to(<.*>)?$"]),
    (0, "logging: JSON log lines and span fields (inside the rows above)",
     [r"<tracing_subscriber::fmt::Subscriber<.*> as tracing_core::subscriber::Subscriber>::event$",
      r"<tracing_subscriber::fmt::Subscriber<.*> as tracing_core::subscriber::Subscriber>::new_span$",
      r"<tracing_subscriber::fmt::fmt_layer::Layer<.*> as tracing_subscriber::layer::Layer<S>>::on_record$"]),
]

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(?:\?\?\?|\S+?):(.*?)(?:\s+\[[^\]]*\])?\s*$")


def costs(path):
    """{function: inclusive cost} and the program total from callgrind_annotate's output."""
    functions, total = {}, 0
    for line in Path(path).read_text(errors="replace").splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        match = LINE.match(line)
        if match:
            cost, name = int(match.group(1).replace(",", "")), match.group(2).strip()
            functions[name] = max(cost, functions.get(name, 0))
    return functions, total


def stage_cost(functions, patterns):
    total = 0
    for pattern in patterns:
        sign = -1 if pattern.startswith("-") else 1
        pattern = pattern.lstrip("-")
        total += sign * max((cost for name, cost in functions.items() if re.search(pattern, name)),
                            default=0)
    return max(total, 0)


def sockets(path):
    table = {}
    for line in Path(path).read_text().splitlines():
        local, peer, *counters = line.split()
        table[(local, peer)] = [int(value) for value in counters]
    return table


def socket_delta(out, select):
    """Connections matching `select` and their summed counter deltas over the measured run:
    bytes sent, bytes received, data segments sent, data segments received."""
    before, after = sockets(out / "sockets-before.txt"), sockets(out / "sockets-after.txt")
    delta, connections = [0, 0, 0, 0], 0
    for key, counters in after.items():
        if select(*key):
            connections += 1
            start = before.get(key, [0, 0, 0, 0])
            delta = [d + a - b for d, a, b in zip(delta, counters, start)]
    return connections, delta


def main():
    out = Path(sys.argv[1])
    pg_port = (out / "ports.txt").read_text().split()[0]
    measured = dict(item.split("=") for item in (out / "measured.txt").read_text().split())
    commands, errors = int(measured["commands"]), int(measured["errors"])
    per = max(commands, 1)
    functions, total = costs(out / "inclusive.txt")

    print(f"# Per-command budget: {commands} commands ({errors} failed)\n")
    print("| instructions in the command API (callgrind) | per command | share |")
    print("|---|---:|---:|")
    print(f"| everything the process ran | {total / per:,.0f} | 100% |")
    for depth, label, patterns in STAGES:
        cost = stage_cost(functions, patterns)
        indent = "&nbsp;&nbsp;" * 2 * depth
        print(f"| {indent}{label} | {cost / per:,.0f} | {100 * cost / max(total, 1):.1f}% |")

    statements = []
    for line in (out / "statements.txt").read_text().splitlines():
        calls, rows, query = line.split("\t", 2)
        if "pg_stat_statements" not in query:
            statements.append((int(calls), int(rows), query))
    begins = sum(calls for calls, _, query in statements if query.strip().upper() == "BEGIN")
    _, (pg_sent, pg_received, pg_segments, _) = socket_delta(
        out, lambda local, peer: peer.endswith(":" + pg_port))
    print("\n| PostgreSQL and the wire | per command |")
    print("|---|---:|")
    print(f"| statements (pg_stat_statements calls; BEGIN, SET LOCAL and COMMIT included) | "
          f"{sum(c for c, _, _ in statements) / per:.2f} |")
    print(f"| group-commit transactions (commands per batch: {per / max(begins, 1):.1f}) | "
          f"{begins / per:.3f} |")
    print(f"| TCP data segments sent to PostgreSQL (a round trip each; the pool's ping before "
          f"every checkout is one) | {pg_segments / per:.2f} |")
    print(f"| bytes sent to / received from PostgreSQL | {pg_sent / per:,.0f} / {pg_received / per:,.0f} |")

    print("\n| statement | calls per command | rows per call |")
    print("|---|---:|---:|")
    for calls, rows, query in sorted(statements, reverse=True)[:12]:
        text = (query if len(query) <= 80 else query[:77] + "...").replace("|", "\\|")
        print(f"| `{text}` | {calls / per:.3f} | {rows / max(calls, 1):.1f} |")


if __name__ == "__main__":
    main()
