//! orderpipe's benchmarks live in `benches/`; run them with `cargo bench -p benches`. Each prints
//! its figures beside a raw reference (the database's own rate) measured in the same run, because
//! a shared 2-core machine makes absolute numbers noisy.
//!
//! | bench | what it prints |
//! |---|---|
//! | `group_commit` | commands/s through cqrs-es and the event store at 1 to 128 concurrent clients, beside single-row INSERT transactions/s |
