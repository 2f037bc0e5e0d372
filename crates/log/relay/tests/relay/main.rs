//! The relay against real PostgreSQL and kinesalite: every commit reaches the stream once per
//! publish, per aggregate in order, through partial failures, crashes, a second relay and a
//! database outage.
#![allow(missing_docs, clippy::unwrap_used)]

mod faults;
mod helpers;
mod leadership;
mod lingering;
mod outage;
mod packing;
mod publishing;
