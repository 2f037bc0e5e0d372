//! One order's trace across the pipeline, in a test process of its own: the trace export it
//! installs is global, and the other pipeline tests run without one, as production does by
//! default.
#![allow(missing_docs, clippy::unwrap_used)]

// Shared with the pipeline tests; this binary uses only part of each.
#[allow(dead_code)]
#[path = "../pipeline/flows_rig.rs"]
mod flows_rig;
#[allow(dead_code)]
#[path = "../pipeline/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../pipeline/workload.rs"]
mod workload;

mod trace;
