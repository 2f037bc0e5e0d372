//! Builds the relay from settings and runs it until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use event_store::{PgEventStore, StoreConfig};
use service_kit::{admin, Backoff};
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::health::{RelayHealth, RelayStatus};
use crate::leadership::Candidate;
use crate::publisher::{self, Publisher};
use crate::record_log::{KinesisLog, RecordLog};
use crate::round::Packing;
use crate::settings::{LayeredSettings, Settings};
use crate::shard_map::ShardMap;
use crate::waiting_since::WaitingSince;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The event store could not be opened (database unreachable, migration failed).
    #[error("cannot open the event store")]
    Store(#[from] event_store::StoreError),
    /// The admin listener could not be bound.
    #[error(transparent)]
    Bind(#[from] service_kit::admin::BindError),
}

/// The relay, built and bound, not yet running.
pub struct Application {
    settings: Settings,
    store: PgEventStore,
    lock_options: PgConnectOptions,
    log: Arc<dyn RecordLog>,
    admin_listener: TcpListener,
}

impl Application {
    /// Builds the relay on the Kinesis stream of the settings, with the AWS SDK's standard
    /// configuration (credential chain, region, endpoint overrides).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let sdk_config = aws_support::sdk_config(&settings.aws).await;
        let log = KinesisLog::new(
            &aws_support::kinesis(&sdk_config),
            settings.kinesis.stream_name.clone(),
        );
        Self::build_with_log(settings, Arc::new(log)).await
    }

    /// Builds the relay on any [`RecordLog`] (tests wrap the Kinesis adapter to inject faults).
    /// Opens the event store, applying its migrations, and binds the admin listener.
    pub async fn build_with_log(
        settings: Settings,
        log: Arc<dyn RecordLog>,
    ) -> Result<Self, StartupError> {
        settings.validate()?;
        let lock_options = settings.database.connect_options()?;
        let store = PgEventStore::open(settings.database.pool()?, StoreConfig::default()).await?;
        let admin_listener =
            service_kit::admin::bind(&settings.admin.host, settings.admin.port).await?;
        Ok(Self {
            settings,
            store,
            lock_options,
            log,
            admin_listener,
        })
    }

    /// The bound admin HTTP address (its port is the real one when the settings said 0).
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Runs until `shutdown` completes: stands by for the relay lock, publishes while holding
    /// it, reports the backlog and serves `/metrics` and `/health`. On shutdown it lets the
    /// PutRecords call in flight and its outbox removals finish, releases the lock, and stops.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let relay = &self.settings.relay;
        let status = Arc::new(RelayStatus::default());
        let candidate = Candidate::new(self.lock_options.clone(), relay.lock_key);
        let publisher = Publisher {
            store: self.store.clone(),
            log: self.log,
            batch_size: relay.batch_size,
            poll_interval: relay.poll_interval(),
            commit_listener: self.lock_options,
            backoff: Backoff::new(
                Duration::from_millis(relay.retry_initial_ms),
                Duration::from_millis(relay.retry_max_ms),
            ),
            status: status.clone(),
            packing: Packing {
                max_commits_per_record: relay.max_commits_per_record,
                max_linger: relay.max_linger(),
            },
            shards: ShardMap::default(),
            waiting_since: WaitingSince::default(),
        };
        let mut relaying = tokio::spawn(publisher::run(
            candidate,
            publisher,
            relay.standby_retry(),
            stop_rx.clone(),
        ));
        let backlog = tokio::spawn(publisher::report_backlog(
            self.store.clone(),
            stop_rx.clone(),
        ));
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = tokio::spawn(admin::serve(
            self.admin_listener,
            Arc::new(RelayHealth::new(self.store.pool().clone(), status)),
            stopped(admin_stop_rx),
        ));

        // The relay task ends early only by panicking: then the whole process stops with an
        // error, so its orchestrator restarts it instead of leaving a relay that never publishes.
        let relayed = tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down: finishing the PutRecords call in flight");
                let _ = stop_tx.send(true);
                relaying.await
            }
            relayed = &mut relaying => {
                tracing::error!("the relay task ended unexpectedly; stopping");
                let _ = stop_tx.send(true);
                relayed
            }
        };
        let _ = backlog.await;
        // The admin endpoint stays up until the relay has let go of the lock, so an
        // orchestrator watching /health sees the process to the end.
        let _ = admin_stop_tx.send(true);
        let served = admin.await;
        relayed.map_err(std::io::Error::other)?;
        served.map_err(std::io::Error::other)??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
