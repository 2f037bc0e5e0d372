//! orderpipe's benchmarks. Each figure is printed beside a raw reference (the database's or the
//! emulator's own rate) measured in the same run, because a shared 2-core machine makes absolute
//! numbers noisy; `docs/performance.md` holds runs and how to reproduce them.
//!
//! | what | run | prints |
//! |---|---|---|
//! | `group_commit` bench | `cargo bench -p benches --bench group_commit` | commands/s through cqrs-es and the event store at 1 to 128 clients, beside single-row INSERT transactions/s |
//! | `aggregates` bench (criterion) | `cargo bench -p benches --bench aggregates` | `handle` and `apply` per aggregate |
//! | `envelope` bench (criterion) | `cargo bench -p benches --bench envelope` | log envelope encode and decode |
//! | `compare` binary ([`compare`]) | `scripts/bench.sh` | (a)-(d): command path (the command API in a process of its own) vs cqrs-es + postgres-es and vs tonic's empty-call ceiling, events/s vs the batched-insert ceiling, replay vs `COPY`, projectors vs raw writes; each ratio |
//! | `budget` binary | `scripts/profile.sh budget` | nothing itself: the fixed workload (orders of six commands from a few clients) the command API's per-command budget is counted under |
//! | `loadgen` binary ([`loadgen`]) | `scripts/bench.sh` or `loadgen --help` | the morning rush through the real processes: commands/s, latency, freshness, projector lag, peak memory |
//!
//! The library holds what the binaries share: the workloads ([`order_flow`] as domain commands,
//! [`api_flow`] over gRPC), [`latency`] histograms, process [`memory`], and fresh
//! [`resources`] on the local stack.

pub mod api_flow;
pub mod compare;
pub mod latency;
pub mod loadgen;
pub mod memory;
pub mod order_flow;
pub mod resources;
