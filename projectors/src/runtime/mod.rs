//! The Kinesis consumer runtime (being written).
