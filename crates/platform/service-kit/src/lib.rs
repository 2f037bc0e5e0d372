//! What every orderpipe process shares, so each binary stays thin: layered settings
//! ([`settings`]) and the keys a binary reads ([`settings_keys`]), the PostgreSQL pool settings,
//! JSON logs, OpenTelemetry traces and the Prometheus recorder ([`telemetry`]), the trace
//! context carried between processes ([`trace_context`]), the admin HTTP endpoint with `/metrics`
//! and `/health` ([`admin`]), the shutdown signal ([`shutdown`]), the one retry policy
//! ([`Backoff`]), errors on one line ([`error_chain()`]) and TLS on the gRPC hops ([`grpc_tls`]).

pub mod admin;
pub mod backoff;
pub mod cli;
mod error_chain;
pub mod grpc_tls;
pub mod settings;
pub mod settings_keys;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;

pub use backoff::Backoff;
pub use error_chain::error_chain;
