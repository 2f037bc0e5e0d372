//! Metadata keys the store understands. Commands pass them through cqrs-es's metadata map.

/// The client's idempotency key; the store records the commit's outcome under it.
pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
/// A digest of the request, so a key reused for a different request is detected. Not persisted
/// with the events.
pub const REQUEST_FINGERPRINT: &str = "request_fingerprint";
/// The id of the business flow the command belongs to.
pub const CORRELATION_ID: &str = "correlation_id";
/// The id of what caused the command (a request, an event).
pub const CAUSATION_ID: &str = "causation_id";
/// Who issued the command: the caller's subject (`barista:<store>:<name>`, ...).
pub const ACTOR: &str = "actor";
/// The W3C `traceparent` of the command's span: the commit's trace, which the relay, the
/// projections and the flows continue.
pub const TRACEPARENT: &str = "traceparent";
