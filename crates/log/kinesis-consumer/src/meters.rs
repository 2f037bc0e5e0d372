//! The runtime's Prometheus metrics, named in one place.

/// Gauge `{projection, shard}`: how far the last GetRecords page was behind the shard's tip.
pub(crate) const MILLIS_BEHIND_LATEST: &str = "orderpipe_projector_millis_behind_latest";
/// Counter `{projection, shard}`: events applied (its rate is events/s).
pub(crate) const EVENTS_TOTAL: &str = "orderpipe_projector_events_total";
/// Counter `{projection, shard, kind}`: failed calls and applies (`kinesis`, `lease`, `apply`,
/// `dead_letter`, `park`, `container`: a record this build cannot unpack, which stops its shard).
pub(crate) const ERRORS_TOTAL: &str = "orderpipe_projector_errors_total";
/// Gauge `{projection}`: leases this worker holds.
pub(crate) const LEASES_HELD: &str = "orderpipe_projector_leases_held";
/// Counter `{projection}`: consumers stopped by their watchdog because their lease was not
/// renewed before its fence deadline (the lease table unreachable or slow): alarm on any.
pub(crate) const LEASES_FENCED: &str = "orderpipe_projector_leases_fenced_total";
/// Counter `{projection}`: records sent to the dead-letter queue.
pub(crate) const DLQ_TOTAL: &str = "orderpipe_projector_dlq_total";
/// Counter `{projection, kind}`: commits parked (`poison`, `not_understood`, `behind` an
/// earlier parked commit of their aggregate).
pub(crate) const PARKED_TOTAL: &str = "orderpipe_projector_parked_total";
/// Counter `{projection}`: commits this build does not understand (a newer event type or
/// version), each stopping its aggregate. Alarm on any increase: a writer runs ahead of this
/// reader, and the aggregates wait for its upgrade.
pub(crate) const NOT_UNDERSTOOD_TOTAL: &str = "orderpipe_projector_not_understood_total";
/// Gauge `{projection, shard}`: 1 while the shard's batch has failed transiently
/// `max_apply_attempts` times in a row and is still retried (a dependency is down); alarm on it.
pub(crate) const APPLY_STALLED: &str = "orderpipe_projector_apply_stalled";
/// Gauge `{projection, kind}`: stopped aggregates by what their head waits for (`poison`: an
/// operator's redrive; `not_understood`: an upgraded build), as of the last resume pass.
pub(crate) const PARKED_AGGREGATES: &str = "orderpipe_projector_parked_aggregates";

/// Counter `{shard}`: GetRecords calls this process made on the shard, all its consumer groups
/// together (one reader per shard per process). Its rate, summed over the processes reading the
/// stream, must stay under Kinesis's 5 calls per second per shard.
pub(crate) const GET_RECORDS_TOTAL: &str = "orderpipe_projector_get_records_total";

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
