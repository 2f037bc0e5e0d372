//! The runtime's Prometheus metrics, named in one place.

/// Gauge `{projection, shard}`: how far the last GetRecords page was behind the shard's tip.
pub(crate) const MILLIS_BEHIND_LATEST: &str = "orderpipe_projector_millis_behind_latest";
/// Counter `{projection, shard}`: events applied (its rate is events/s).
pub(crate) const EVENTS_TOTAL: &str = "orderpipe_projector_events_total";
/// Counter `{projection, shard, kind}`: failed calls and applies (`kinesis`, `lease`, `apply`,
/// `dead_letter`, `park`).
pub(crate) const ERRORS_TOTAL: &str = "orderpipe_projector_errors_total";
/// Gauge `{projection}`: leases this worker holds.
pub(crate) const LEASES_HELD: &str = "orderpipe_projector_leases_held";
/// Counter `{projection}`: consumers stopped by their watchdog because their lease was not
/// renewed before its fence deadline (the lease table unreachable or slow): alarm on any.
pub(crate) const LEASES_FENCED: &str = "orderpipe_projector_leases_fenced_total";
/// Counter `{projection}`: records sent to the dead-letter queue.
pub(crate) const DLQ_TOTAL: &str = "orderpipe_projector_dlq_total";
/// Counter `{projection}`: commits parked behind a poison commit of their aggregate.
pub(crate) const PARKED_TOTAL: &str = "orderpipe_projector_parked_total";

/// Counts one error of `kind` on a shard.
pub(crate) fn error(projection: &str, shard: &str, kind: &'static str) {
    metrics::counter!(
        ERRORS_TOTAL,
        "projection" => projection.to_owned(),
        "shard" => shard.to_owned(),
        "kind" => kind
    )
    .increment(1);
}
