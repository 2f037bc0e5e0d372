//! The settings keys every process consuming the log shares (`projectors`, `flows`, `replay
//! --from-stream`).

use aws_support::resources::StreamResource;
use serde::Deserialize;

/// The event log: the relay publishes every commit to it, the consumers read it (settings key
/// `kinesis.stream_name`, which the relay reads too).
pub const EVENT_STREAM: StreamResource = StreamResource {
    name: "events",
    settings_key: "kinesis.stream_name",
    local_shards: 2,
};

/// The Kinesis stream.
#[derive(Debug, Clone, Deserialize)]
pub struct KinesisSettings {
    /// The stream the relay publishes commits to.
    pub stream_name: String,
}

/// `<hostname>-<pid>`: unique per process, and says where the process runs.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "projector".to_owned());
    format!("{host}-{}", std::process::id())
}
