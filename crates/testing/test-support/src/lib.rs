//! Helpers for integration tests that run against a real PostgreSQL server.
//!
//! Every test gets a database of its own, so tests run in parallel and never see each other's
//! data. The server comes from `DATABASE_URL` (set by `scripts/stack.sh`); without it the
//! machine's PostgreSQL on 127.0.0.1:5432 is used. [`CuttableProxy`] stands between a process
//! and a dependency so a test can take the dependency away (or make it go silent);
//! [`SilentListener`] is an endpoint that never answers; [`http::request`] calls an HTTP service;
//! [`tls::TestCa`] is a throwaway certificate authority.
//! [`TestTokenKeys`] is an ES256 key pair with its JWKS file, as `scripts/up.sh` makes one.
//! [`append_as_another_build`] writes an event as another build's writer would.

mod another_build;
mod aws;
pub mod http;
mod kinesis;
mod proxy;
mod silent;
pub mod tls;
mod tokens;

pub use another_build::append_as_another_build;
pub use aws::{aws_test_config, unique_name};
pub use kinesis::{replay, replay_resharded, Replayed, TestStream, PATIENCE};
pub use proxy::CuttableProxy;
pub use silent::SilentListener;
pub use tokens::{TestTokenKeys, TEST_AUDIENCE, TEST_ISSUER};

use service_kit::settings::{DatabaseSettings, SessionSettings};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Prefix of every database a test creates; `scripts/test.sh` drops leftovers by it.
pub const TEST_DATABASE_PREFIX: &str = "orderpipe_test_";

const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// A connection URL for the new database.
    pub url: String,
    /// A pool connected to it.
    pub pool: PgPool,
}

impl TestDatabase {
    /// A [`CuttableProxy`] in front of this database's server.
    ///
    /// # Panics
    /// When the server is not on a numeric address (the test servers are on 127.0.0.1).
    pub async fn proxy(&self) -> CuttableProxy {
        let target = self.connect_options();
        let upstream = format!("{}:{}", target.get_host(), target.get_port())
            .parse()
            .expect("PostgreSQL on a numeric loopback address");
        CuttableProxy::start(upstream).await
    }

    /// Settings that reach this database, through `proxy` when given, for a service under test.
    pub fn settings(&self, proxy: Option<&CuttableProxy>) -> DatabaseSettings {
        let target = self.connect_options();
        let (host, port) = match proxy {
            Some(proxy) => (proxy.address().ip().to_string(), proxy.address().port()),
            None => (target.get_host().to_owned(), target.get_port()),
        };
        DatabaseSettings {
            url: None,
            host,
            port,
            name: target.get_database().unwrap_or_default().to_owned(),
            username: target.get_username().to_owned(),
            password: None,
            max_connections: 8,
            acquire_timeout_ms: 1_000,
            session: SessionSettings::default(),
        }
    }

    fn connect_options(&self) -> PgConnectOptions {
        self.url.parse().expect("the test database URL parses")
    }
}

/// Creates an empty database with a unique name on the test server.
///
/// # Panics
/// When the server cannot be reached: a test without its database cannot run.
pub async fn fresh_database() -> TestDatabase {
    let server_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.into());
    let name = format!("{TEST_DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {server_url}: {e}"));
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let url = database_url(&server_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
    TestDatabase { url, pool }
}

/// `server_url` with its database name replaced by `name`.
fn database_url(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn replaces_the_database_name_and_keeps_the_query() {
        assert_eq!(
            database_url("postgres://u@h:1/postgres?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}
