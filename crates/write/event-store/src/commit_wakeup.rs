//! Wakes a reader of the log when a commit lands, so it reads the commit within a round trip
//! instead of waiting for its next poll: the relay (to publish the outbox) and the command API's
//! commit feed (to stream new events to watchers and subscribers) each hold one.
//!
//! The group commit sends `NOTIFY` on [`crate::OUTBOX_CHANNEL`] in every batch transaction
//! (PostgreSQL delivers it on commit, when the batch's events and outbox rows are visible). A
//! task listens on a connection of its own and turns each notification into a wake-up; the
//! reading loop waits for one, or for its poll interval, whichever comes first. The poll stays
//! as the fallback: a notification lost with a dropped connection, or a listener that cannot
//! connect, costs at most one poll interval, never a commit.
//!
//! The task reads notifications as they come, whatever the reading loop is doing: a listener
//! that stopped reading would hold PostgreSQL's notification queue, shared by the whole
//! server, until it filled and refused every commit that notifies.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How long connecting the listener may take, and the pause before it tries again.
const LISTENER_RETRY: Duration = Duration::from_secs(2);

/// Wake-ups on commit, for as long as this value lives.
#[derive(Debug)]
pub struct CommitWakeup {
    wake: Arc<Notify>,
    listening: JoinHandle<()>,
}

impl CommitWakeup {
    /// Starts listening on a connection of its own to the database of `options`, named
    /// `application_name` in `pg_stat_activity`.
    pub fn start(options: PgConnectOptions, application_name: &str) -> Self {
        let wake = Arc::new(Notify::new());
        let listening = tokio::spawn(listen(
            options.application_name(application_name),
            wake.clone(),
        ));
        Self { wake, listening }
    }

    /// Waits until a commit is announced or `fallback` has passed, or less if `stop` turns
    /// true; returns whether it did. A commit announced since the last wait ends it at once.
    pub async fn wait(&self, stop: &mut watch::Receiver<bool>, fallback: Duration) -> bool {
        let stopped = tokio::select! {
            () = self.wake.notified() => false,
            () = tokio::time::sleep(fallback) => false,
            // An error means the sender is gone: the application is dropping, so stop too.
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        stopped || *stop.borrow()
    }
}

impl Drop for CommitWakeup {
    fn drop(&mut self) {
        self.listening.abort();
    }
}

/// Listens until aborted, reconnecting after failures; every notification, and every loss of
/// the connection (notifications may have been missed), wakes the reading loop.
async fn listen(options: PgConnectOptions, wake: Arc<Notify>) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(LISTENER_RETRY)
        .connect_lazy_with(options);
    loop {
        match connect(&pool).await {
            Ok(mut listener) => {
                // Commits made before LISTEN took effect were not announced: a round now
                // finds them.
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        // Reconnected by sqlx; whatever was sent meanwhile is lost: a round now.
                        Ok(None) => wake.notify_one(),
                        Err(error) => {
                            tracing::debug!(
                                error = %error,
                                "commit listener failed; polling until it is back"
                            );
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(
                error = %error,
                "cannot listen for commits; polling until it can"
            ),
        }
        wake.notify_one();
        tokio::time::sleep(LISTENER_RETRY).await;
    }
}

async fn connect(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let listening = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(crate::OUTBOX_CHANNEL).await?;
        Ok(listener)
    };
    tokio::time::timeout(LISTENER_RETRY, listening)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}
