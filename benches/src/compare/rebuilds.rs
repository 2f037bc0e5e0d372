//! (c): our consumers of the log fed straight from the event store. `replay::rebuild` streams the
//! store in commit order into any projection, so the same driver measures the replay of history
//! and analytics through the live path; `replay::rebuild_bulk` is what `replay rebuild` does into
//! a fresh schema (the live projections of (d) are `live_projections`).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use commit_log::projection::Projection;
use event_store::PgEventStore;
use read_models::SchemaName;
use replay::{rebuild, rebuild_bulk, BulkOptions, ProgressTable, ReadModel, RebuildOptions, Until};
use sqlx::PgPool;
use test_support::unique_name;

use super::raw_rates::Rate;
use crate::memory::memory_of;

/// Commits per `apply`, as `replay.batch_commits` and `runtime.batch_size` default to.
pub const BATCH_COMMITS: usize = 500;

/// Why a rebuild could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The rebuild failed.
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    /// The target could not be made.
    #[error("cannot create the target: {0}")]
    Setup(String),
    /// The replay process could not run.
    #[error("the replay process failed: {0}")]
    Process(String),
}

/// Rebuilds `model` from `store` into a fresh schema of `views` through the live path (the
/// projection's `apply`, batch by batch); events applied per second.
pub async fn replay_rate(
    store: &PgEventStore,
    views: &PgPool,
    model: ReadModel,
) -> Result<Rate, RebuildError> {
    let schema = fresh_schema(model.name())?;
    model.create_schema(views, &schema).await?;
    let projection = model.projection(views.clone(), schema.clone());
    measure(store, views, projection.as_ref(), &schema, None).await
}

/// Rebuilds `model` from `store` into a fresh schema of `views` as a bulk load (`COPY`,
/// `writers` connections: what `replay rebuild` does into a new target); events per second,
/// the final step (indexes, foreign keys, progress) included.
pub async fn bulk_rate(
    store: &PgEventStore,
    views: &PgPool,
    model: ReadModel,
    writers: usize,
) -> Result<Rate, RebuildError> {
    let schema = fresh_schema(&format!("{}_bulk", model.name()))?;
    let options = BulkOptions {
        until: None,
        writers,
        batch_commits: BATCH_COMMITS,
    };
    let started = Instant::now();
    let done = rebuild_bulk(store, views, model, &schema, &options, |_| {}).await?;
    Ok(Rate {
        units: done.progress.events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn measure(
    store: &PgEventStore,
    views: &PgPool,
    projection: &dyn Projection,
    schema: &SchemaName,
    until: Option<Until>,
) -> Result<Rate, RebuildError> {
    let progress = ProgressTable::new(views.clone(), schema.clone());
    progress.create().await?;
    let options = RebuildOptions {
        until,
        batch_commits: BATCH_COMMITS,
    };
    let started = Instant::now();
    let done = rebuild(store, projection, &progress, &options, |_| {}).await?;
    Ok(Rate {
        units: done.events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub(super) fn fresh_schema(prefix: &str) -> Result<SchemaName, RebuildError> {
    SchemaName::parse(&unique_name(&format!("bench_{prefix}")).replace('-', "_"))
        .map_err(|e| RebuildError::Setup(e.to_string()))
}

/// The `replay` binary's peak memory rebuilding history up to `through` into a fresh schema (a
/// bulk load, `replay.bulk_writers` by default), sampled from
/// `/proc/<pid>/status` every 10 ms while it runs (so a separate process's peak is its own).
pub async fn replay_process_peak_mib(
    bin_dir: &Path,
    events_url: &str,
    views_url: &str,
    through: i64,
) -> Result<f64, RebuildError> {
    let binary = bin_dir.join("replay");
    let target = fresh_schema("history_memory")?;
    let mut child = tokio::process::Command::new(&binary)
        .args(["rebuild", "history", "--target", target.as_str()])
        .args(["--until", &through.to_string()])
        .env_remove("ORDERPIPE_CONFIG")
        .env("ORDERPIPE_DATABASE__URL", events_url)
        .env("ORDERPIPE_HISTORY__DATABASE__URL", views_url)
        .env("ORDERPIPE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RebuildError::Process(format!("{}: {e}", binary.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| RebuildError::Process("exited at once".into()))?;
    let mut peak_kib = 0;
    loop {
        if let Some(usage) = memory_of(pid) {
            peak_kib = peak_kib.max(usage.peak_kib);
        }
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(RebuildError::Process(e.to_string())),
        }
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| RebuildError::Process(e.to_string()))?;
    if !output.status.success() {
        return Err(RebuildError::Process(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    Ok(peak_kib as f64 / 1024.0)
}
