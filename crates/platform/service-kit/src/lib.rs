//! What every orderpipe process shares, so each binary stays thin: layered settings
//! ([`settings`]) and the keys a binary reads ([`settings_keys`]), the PostgreSQL pool settings, JSON logs and the Prometheus recorder
//! ([`telemetry`]), the admin HTTP endpoint with `/metrics` and `/health` ([`admin`]), and the
//! shutdown signal ([`shutdown`]).

pub mod admin;
pub mod settings;
pub mod settings_keys;
pub mod shutdown;
pub mod telemetry;
