//! The projector worker's process shell: its settings ([`settings`]) and the application that
//! runs the read models (`read-models`) as consumer groups of the Kinesis log on the consumer
//! runtime (`kinesis-consumer`), with the admin endpoint ([`app`]), each projection's applies
//! measured ([`metered`]). A library beside the binary so that tests can start the real worker
//! and read the settings keys it takes.

pub mod app;
pub mod metered;
pub mod settings;
