//! The worker: discovers shards, keeps one lease per projection and shard in the lease table,
//! renews what it holds, takes free and expired leases towards an even share, steals at most
//! one lease per round from the most loaded worker, and runs a shard consumer per held lease.
//!
//! Self-fencing: another worker may take a lease once its counter has stood still for a lease
//! duration *as that worker sees it*, which starts no earlier than the owner's last successful
//! renewal was sent. So the owner gives every held lease a deadline, [`FENCE_MARGIN`] of a lease
//! duration before that point, measured from when its last successful renewal (or its take)
//! was *sent*, and a watchdog task per lease stops the lease's consumer at that deadline unless
//! a renewal moved it. The watchdog does not depend on the coordinator's loop, which a slow
//! call can hold up; the lease table's calls are bounded besides ([`lease_table_client`]), so the
//! loop itself cannot hang on them either. A fenced lease is dropped from the held set without
//! being released (this worker cannot reach the table) and taken again like any other once the
//! table answers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use aws_config::SdkConfig;
use commit_log::Vocabulary;
use service_kit::admin::HealthCheck;
use service_kit::error_chain;
use tokio::sync::watch;
use tokio::task::{AbortHandle, Id as TaskId, JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::consumer::{ConsumerContext, ConsumerExit, ShardConsumer, SharedLease};
use crate::dead_letters::DeadLetterQueue;
use crate::kinesis;
use crate::leases::{Checkpoint, Lease, LeaseError, LeaseTable};
use crate::meters;
use crate::parked::{ParkedKind, ParkedStore};
use crate::redrive::resume;
use crate::shard_reader::{GetRecordsCalls, ShardReaders};
use crate::RuntimeError;
use commit_log::projection::Projection;

/// How long before the earliest moment another worker could take a lease its owner stops the
/// lease's consumer, as a fraction of the lease duration (a quarter): room for the abort to take
/// effect, for a write already sent to land, and for the two workers' clocks to run at slightly
/// different rates.
pub const FENCE_MARGIN: f64 = 0.25;

/// The lease table's client: each attempt bounded by a quarter of a lease duration and a whole
/// call (with the SDK's retries) by a third (the renewal interval), so a renewal that gets no answer fails well
/// before the lease's fence deadline, and the coordinator's loop is never held up for long.
fn lease_table_client(sdk: &SdkConfig, lease_duration: Duration) -> aws_sdk_dynamodb::Client {
    aws_support::dynamodb_within(sdk, lease_duration / 4, lease_duration / 3)
}

/// When a lease renewed (or taken) by a call sent at `sent_at` must stop being worked on.
fn fence_deadline(sent_at: Instant, lease_duration: Duration) -> Instant {
    sent_at + lease_duration.mul_f64(1.0 - FENCE_MARGIN)
}

/// What a worker needs to know.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name in the lease table; unique per process.
    pub worker_id: String,
    /// The Kinesis stream.
    pub stream_name: String,
    /// The DynamoDB lease table (partition key `lease_key`, a string).
    pub leases_table: String,
    /// The DynamoDB parked-records table (`parked_key` string, `position` number).
    pub parked_table: String,
    /// The SQS dead-letter queue's URL.
    pub dead_letter_queue_url: String,
    /// A lease whose counter stands still this long is expired; held leases are renewed three
    /// times per duration.
    pub lease_duration: Duration,
    /// Most records per GetRecords call (Kinesis allows up to 10,000).
    pub batch_size: u32,
    /// Tries of a batch that keeps failing transiently after which its shard counts as
    /// stalled (alarm gauge `orderpipe_projector_apply_stalled`, error logs). The batch is
    /// retried until it passes whatever this is: a transient failure never parks anything.
    pub max_apply_attempts: u32,
    /// Least time between two GetRecords calls of this process on one shard, all its
    /// projections together: they read each shard through one shared reader
    /// ([`crate::shard_reader`]). Every process reading the stream spends its share of
    /// Kinesis's five calls per second per shard: 400 ms (2.5 calls/s) each for one `projectors`
    /// and one `flows` process; 200 ms for a process alone.
    pub poll_interval: Duration,
    /// How often the stream's shard list is read for new shards (also after a shard ends), and
    /// how often stopped aggregates that need no operator are resumed
    /// ([`crate::redrive::resume`]; also at start).
    pub shard_sync_interval: Duration,
}

/// `/health` of a worker: healthy while it reached the lease table recently.
pub struct WorkerHealth {
    state: StdMutex<HealthState>,
    stale_after: Duration,
}

#[derive(Default)]
struct HealthState {
    last_round: Option<Instant>,
    last_error: Option<String>,
}

impl WorkerHealth {
    fn new(lease_duration: Duration) -> Self {
        Self {
            state: StdMutex::default(),
            // Three missed rounds: a lease we hold may be expiring.
            stale_after: lease_duration * 3,
        }
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_round = Some(Instant::now());
        state.last_error = None;
    }

    fn failed(&self, error: String) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(error);
    }
}

impl HealthCheck for WorkerHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match state.last_round {
                Some(at) if at.elapsed() < self.stale_after => Ok(()),
                _ => Err(state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the lease table has not been read yet".to_owned())),
            }
        })
    }
}

/// A projector worker. Build it with [`Worker::new`], run it with [`Worker::run`].
pub struct Worker {
    config: WorkerConfig,
    kinesis: aws_sdk_kinesis::Client,
    leases: LeaseTable,
    context: Arc<ConsumerContext>,
    projections: Vec<Arc<dyn Projection>>,
    health: Arc<WorkerHealth>,
}

impl Worker {
    /// A worker running `projections`, with AWS clients from `sdk`.
    pub fn new(
        sdk: &SdkConfig,
        config: WorkerConfig,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Self {
        let kinesis = aws_support::kinesis(sdk);
        let dynamodb = aws_support::dynamodb(sdk);
        let leases = LeaseTable::new(
            lease_table_client(sdk, config.lease_duration),
            &config.leases_table,
        );
        let context = Arc::new(ConsumerContext {
            readers: Arc::new(ShardReaders::new(
                kinesis.clone(),
                config.stream_name.clone(),
                i32::try_from(config.batch_size.clamp(1, 10_000)).unwrap_or(10_000),
                config.poll_interval,
            )),
            leases: leases.clone(),
            parked: ParkedStore::new(dynamodb, &config.parked_table),
            dead_letters: DeadLetterQueue::new(
                aws_support::sqs(sdk),
                &config.dead_letter_queue_url,
            ),
            max_apply_attempts: config.max_apply_attempts.max(1),
            vocabulary: Vocabulary::this_build().clone(),
        });
        Self {
            health: Arc::new(WorkerHealth::new(config.lease_duration)),
            config,
            kinesis,
            leases,
            context,
            projections,
        }
    }

    /// The same worker reading only the events `vocabulary` knows: the consumer of an older
    /// build, for the tests of rolling upgrades (a real build reads what its domain defines).
    pub fn with_vocabulary(mut self, vocabulary: Vocabulary) -> Self {
        let mut context = (*self.context).clone();
        context.vocabulary = vocabulary;
        self.context = Arc::new(context);
        self
    }

    /// The GetRecords calls this worker makes, all shards and projections together.
    pub fn get_records_calls(&self) -> GetRecordsCalls {
        self.context.readers.calls()
    }

    /// Its `/health` check.
    pub fn health(&self) -> Arc<WorkerHealth> {
        self.health.clone()
    }

    /// Runs until `shutdown` completes; then lets every consumer finish and checkpoint its
    /// current batch (up to one lease duration), and releases the leases. Dropping the future
    /// instead (a crash) stops every consumer at once, checkpointing nothing more.
    ///
    /// It never gives up on its own: while the lease table or the stream cannot be reached it
    /// logs, retries every round and reports unhealthy on `/health`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut coordinator = Coordinator {
            worker: &self,
            held: HashMap::new(),
            tasks: HashMap::new(),
            consumers: JoinSet::new(),
            observed: HashMap::new(),
            known_shards: HashSet::new(),
        };
        tracing::info!(
            worker = %self.config.worker_id,
            projections = ?self.projections.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "projector worker starting"
        );
        let mut renew = tokio::time::interval(self.config.lease_duration / 3);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut take = tokio::time::interval(self.config.lease_duration / 2);
        take.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sync = tokio::time::interval(self.config.shard_sync_interval);
        sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Off the coordinator's loop: a long redrive must never delay a lease renewal. Dropped
        // (aborted) at the end: a redrive stopped between two commits resumes next time.
        let resuming = AbortOnDrop(tokio::spawn(resume_stopped_aggregates(
            self.projections.clone(),
            self.context.parked.clone(),
            self.context.vocabulary.clone(),
            self.config.shard_sync_interval,
        )));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = renew.tick() => coordinator.renew_all().await,
                _ = sync.tick() => coordinator.sync_shards().await,
                _ = take.tick() => coordinator.take_round().await,
                Some(done) = coordinator.consumers.join_next_with_id() => {
                    if coordinator.consumer_exited(done).await == Some(ConsumerExit::ShardEnded) {
                        // Its children may be ready now.
                        coordinator.sync_shards().await;
                        coordinator.take_round().await;
                    }
                }
            }
        }
        drop(resuming);
        coordinator.shut_down(&mut renew).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `interval` (and at once), resumes each projection's stopped aggregates that need no
/// operator, and reports the ones still waiting.
async fn resume_stopped_aggregates(
    projections: Vec<Arc<dyn Projection>>,
    parked: ParkedStore,
    vocabulary: Vocabulary,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for projection in &projections {
            match resume(projection.as_ref(), &parked, &vocabulary).await {
                Ok(report) => {
                    for kind in [ParkedKind::Poison, ParkedKind::NotUnderstood] {
                        let waiting = report.waiting.get(&kind).copied().unwrap_or(0);
                        metrics::gauge!(
                            meters::PARKED_AGGREGATES,
                            "projection" => projection.name(),
                            "kind" => kind.as_str()
                        )
                        .set(waiting as f64);
                    }
                }
                Err(error) => {
                    meters::error(projection.name(), "-", "resume");
                    tracing::warn!(projection = projection.name(), error = %error_chain(&error), "cannot resume stopped aggregates; trying again later");
                }
            }
        }
    }
}

struct Held {
    projection: &'static str,
    shared: Arc<SharedLease>,
    stop: watch::Sender<bool>,
    task: AbortHandle,
    /// When the consumer must stop unless a renewal moves it on; its watchdog watches it.
    fence_at: watch::Sender<Instant>,
    watchdog: AbortHandle,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

/// Stops `consumer` once `fence_at` passes without being moved on.
async fn watchdog(
    lease_key: String,
    projection: &'static str,
    mut fence_at: watch::Receiver<Instant>,
    consumer: AbortHandle,
) {
    loop {
        let deadline = *fence_at.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if *fence_at.borrow() <= Instant::now() {
                    break;
                }
            }
            changed = fence_at.changed() => {
                if changed.is_err() {
                    // The lease was let go of: nothing left to guard.
                    return;
                }
            }
        }
    }
    consumer.abort();
    metrics::counter!(meters::LEASES_FENCED, "projection" => projection).increment(1);
    tracing::error!(
        lease = %lease_key,
        "lease not renewed in time: its consumer is stopped before another worker may take it"
    );
}

/// The worker's mutable state while it runs.
struct Coordinator<'w> {
    worker: &'w Worker,
    /// Held leases by lease key.
    held: HashMap<String, Held>,
    /// Consumer task ids to their lease keys.
    tasks: HashMap<TaskId, String>,
    consumers: JoinSet<Result<ConsumerExit, RuntimeError>>,
    /// Per lease key: the counter last seen and since when (this worker's clock).
    observed: HashMap<String, (u64, Instant)>,
    /// The shard ids of the last successful shard listing.
    known_shards: HashSet<String>,
}

impl Coordinator<'_> {
    fn me(&self) -> &str {
        &self.worker.config.worker_id
    }

    /// Creates a lease for every shard that has none, parents before children (ListShards
    /// lists them in that order, which keeps "a child lease exists" implying "its parents'
    /// leases exist").
    async fn sync_shards(&mut self) {
        let shards =
            match kinesis::list_shards(&self.worker.kinesis, &self.worker.config.stream_name).await
            {
                Ok(shards) => shards,
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "cannot list shards");
                    return;
                }
            };
        let existing: HashSet<String> = match self.worker.leases.list().await {
            Ok(leases) => leases.iter().map(Lease::key).collect(),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot read the lease table");
                return;
            }
        };
        for projection in &self.worker.projections {
            for shard in &shards {
                let key = crate::leases::lease_key(projection.name(), &shard.shard_id);
                if existing.contains(&key) {
                    continue;
                }
                match self
                    .worker
                    .leases
                    .create_if_absent(projection.name(), shard)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(projection = projection.name(), shard = %shard.shard_id, "new shard lease")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "cannot create a lease");
                        return;
                    }
                }
            }
        }
        self.known_shards = shards.into_iter().map(|s| s.shard_id).collect();
    }

    /// Renews every held lease, moving its fence deadline on; a lease lost (taken by another
    /// worker) or past its deadline stops its consumer at once. Bounded by a third of a lease
    /// duration in all (a consumer may hold a lease's lock through a slow checkpoint): what
    /// did not finish by then counts as a failed renewal.
    async fn renew_all(&mut self) {
        let leases = &self.worker.leases;
        let renewals = self.held.iter().map(|(key, held)| async move {
            let sent_at = Instant::now();
            let mut lease = held.shared.lease.lock().await;
            let outcome = leases.renew(&lease, held.shared.millis_behind()).await;
            if let Ok(renewed) = &outcome {
                *lease = renewed.clone();
            }
            (key.clone(), sent_at, outcome)
        });
        let bound = self.worker.config.lease_duration / 3;
        let outcomes = tokio::time::timeout(bound, futures::future::join_all(renewals))
            .await
            .unwrap_or_default();
        let mut answered = HashSet::new();
        for (key, sent_at, outcome) in outcomes {
            answered.insert(key.clone());
            let Some(held) = self.held.get_mut(&key) else {
                continue;
            };
            match outcome {
                Ok(_) => {
                    let deadline = fence_deadline(sent_at, self.worker.config.lease_duration);
                    held.fence_at.send_modify(|at| *at = (*at).max(deadline));
                }
                Err(LeaseError::Lost) => self.lose(&key, "another worker took it"),
                Err(LeaseError::Call(error)) => {
                    meters::error(held.projection, &key, "lease");
                    tracing::warn!(lease = %key, error = %error_chain(&error), "renewal failed");
                }
            }
        }
        let now = Instant::now();
        let keys: Vec<String> = self.held.keys().cloned().collect();
        for key in keys {
            let Some(held) = self.held.get(&key) else {
                continue;
            };
            if !answered.contains(&key) {
                meters::error(held.projection, &key, "lease");
                tracing::warn!(lease = %key, ?bound, "renewal did not answer in time");
            }
            if *held.fence_at.borrow() <= now {
                self.lose(&key, "not renewed before its fence deadline");
            }
        }
    }

    /// Stops a lost lease's consumer without letting it write anything more.
    fn lose(&mut self, key: &str, why: &str) {
        if let Some(held) = self.held.remove(key) {
            held.task.abort();
            tracing::warn!(lease = %key, why, "lease lost; its consumer is stopped");
            self.report_held(held.projection);
        }
    }

    /// One balancing round over every projection.
    async fn take_round(&mut self) {
        let leases = match self.worker.leases.list().await {
            Ok(leases) => {
                self.worker.health.succeeded();
                leases
            }
            Err(error) => {
                let error = error_chain(&error);
                tracing::warn!(%error, "cannot read the lease table");
                self.worker.health.failed(error);
                return;
            }
        };
        let now = Instant::now();
        for lease in &leases {
            let seen = self
                .observed
                .entry(lease.key())
                .or_insert((lease.counter, now));
            if seen.0 != lease.counter {
                *seen = (lease.counter, now);
            }
        }
        let projections = self.worker.projections.clone();
        for projection in projections {
            let mine: Vec<&Lease> = leases
                .iter()
                .filter(|l| l.projection == projection.name())
                .collect();
            for lease in self.leases_to_take(&mine, now) {
                let sent_at = Instant::now();
                match self.worker.leases.take(&lease, self.me()).await {
                    Ok(taken) => {
                        self.observed
                            .insert(taken.key(), (taken.counter, Instant::now()));
                        let fence_at = fence_deadline(sent_at, self.worker.config.lease_duration);
                        self.start_consumer(projection.clone(), taken, fence_at);
                    }
                    // Someone else was quicker (or the owner renewed): fine.
                    Err(LeaseError::Lost) => {}
                    Err(LeaseError::Call(error)) => {
                        meters::error(projection.name(), &lease.shard_id, "lease");
                        tracing::warn!(lease = %lease.key(), error = %error_chain(&error), "cannot take lease");
                    }
                }
            }
            self.report_held(projection.name());
        }
    }

    /// Which of one projection's leases to take this round (see [`Balance::leases_to_take`]).
    fn leases_to_take(&self, leases: &[&Lease], now: Instant) -> Vec<Lease> {
        Balance {
            me: self.me(),
            held: &self.held,
            observed: &self.observed,
            known_shards: &self.known_shards,
            lease_duration: self.worker.config.lease_duration,
        }
        .leases_to_take(leases, now)
    }
}

/// What a worker knows when it balances one projection's leases: who it is, what it holds,
/// since when it has seen each lease's counter stand still, and which shards the stream lists.
struct Balance<'a, H> {
    me: &'a str,
    held: &'a HashMap<String, H>,
    observed: &'a HashMap<String, (u64, Instant)>,
    known_shards: &'a HashSet<String>,
    lease_duration: Duration,
}

impl<H> Balance<'_, H> {
    /// Which of one projection's leases to take this round: free or expired ones up to an even
    /// share, else one stolen from the most loaded worker if it holds more than its share.
    fn leases_to_take(&self, leases: &[&Lease], now: Instant) -> Vec<Lease> {
        let me = self.me;
        let by_shard: HashMap<&str, &Lease> =
            leases.iter().map(|l| (l.shard_id.as_str(), *l)).collect();
        // A child shard is read only after all its parents reached SHARD_END. A parent with no
        // lease is one the stream no longer lists (trimmed), so it has nothing left to read.
        let ready = |lease: &Lease| {
            lease.checkpoint != Checkpoint::ShardEnd
                && lease
                    .parent_shard_ids
                    .iter()
                    .all(|parent| match by_shard.get(parent.as_str()) {
                        Some(parent) => parent.checkpoint == Checkpoint::ShardEnd,
                        None => !self.known_shards.contains(parent),
                    })
        };
        let expired = |lease: &Lease| match &lease.owner {
            None => true,
            // Ours from an earlier life of this worker id.
            Some(owner) if owner == me => !self.held.contains_key(&lease.key()),
            Some(_) => self
                .observed
                .get(&lease.key())
                .is_some_and(|(_, since)| now - *since >= self.lease_duration),
        };
        let candidates: Vec<&Lease> = leases.iter().copied().filter(|l| ready(l)).collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let mut load: HashMap<&str, Vec<&Lease>> = HashMap::new();
        load.entry(me).or_default();
        for lease in &candidates {
            if let Some(owner) = lease.owner.as_deref() {
                if !expired(lease) {
                    load.entry(owner).or_default().push(lease);
                }
            }
        }
        let target = candidates.len().div_ceil(load.len());
        let have = load.get(me).map_or(0, Vec::len);
        if have >= target {
            return Vec::new();
        }
        let mut free: Vec<&Lease> = candidates
            .iter()
            .copied()
            .filter(|l| expired(l) && !self.held.contains_key(&l.key()))
            .collect();
        if !free.is_empty() {
            // Start at a worker-specific place so workers starting together contend less.
            let offset = me.bytes().map(usize::from).sum::<usize>() % free.len();
            free.rotate_left(offset);
            return free.into_iter().take(target - have).cloned().collect();
        }
        let most_loaded = load
            .iter()
            .filter(|(owner, _)| **owner != me)
            .max_by_key(|(owner, held)| (held.len(), *owner));
        match most_loaded {
            Some((victim, held)) if held.len() > target => {
                tracing::info!(victim = %victim, target, "stealing one lease to balance");
                held.last().map(|l| vec![(*l).clone()]).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

impl Coordinator<'_> {
    fn start_consumer(&mut self, projection: Arc<dyn Projection>, lease: Lease, fence_at: Instant) {
        let key = lease.key();
        tracing::info!(lease = %key, checkpoint = %lease.checkpoint, "lease taken; consuming");
        let (stop, stop_requested) = watch::channel(false);
        let shared = Arc::new(SharedLease::new(lease.clone()));
        let consumer = ShardConsumer {
            context: self.worker.context.clone(),
            projection: projection.clone(),
            shard_id: lease.shard_id,
            lease: shared.clone(),
            stop: stop_requested,
            clear: Default::default(),
        };
        let task = self.consumers.spawn(consumer.run());
        self.tasks.insert(task.id(), key.clone());
        let (fence_at, fence_watched) = watch::channel(fence_at);
        let watchdog = tokio::spawn(watchdog(
            key.clone(),
            projection.name(),
            fence_watched,
            task.clone(),
        ))
        .abort_handle();
        self.held.insert(
            key,
            Held {
                projection: projection.name(),
                shared,
                stop,
                task,
                fence_at,
                watchdog,
            },
        );
    }

    /// Handles a consumer that returned; gives back what it returned.
    async fn consumer_exited(
        &mut self,
        done: Result<(TaskId, Result<ConsumerExit, RuntimeError>), JoinError>,
    ) -> Option<ConsumerExit> {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, Ok(outcome)),
            Err(error) => (error.id(), Err(error)),
        };
        let key = self.tasks.remove(&id)?;
        match outcome {
            // Aborted because its lease was lost (already handled) or by its watchdog (fenced:
            // not released, this worker could not reach the table; taken again once it can).
            Err(error) if error.is_cancelled() => {
                self.lose(&key, "fenced: not renewed before its deadline");
                None
            }
            Ok(Ok(ConsumerExit::Stopped)) => Some(ConsumerExit::Stopped),
            Ok(Ok(ConsumerExit::LeaseLost)) => {
                self.lose(&key, "a checkpoint found it taken");
                Some(ConsumerExit::LeaseLost)
            }
            Ok(Ok(ConsumerExit::ShardEnded)) => {
                self.release(&key).await;
                Some(ConsumerExit::ShardEnded)
            }
            Ok(Err(error)) => {
                tracing::error!(lease = %key, error = %error_chain(&error), "shard consumer failed; releasing its lease");
                self.release(&key).await;
                None
            }
            Err(panic) => {
                tracing::error!(lease = %key, error = %panic, "shard consumer panicked; releasing its lease");
                self.release(&key).await;
                None
            }
        }
    }

    /// Gives a held lease back to the table.
    async fn release(&mut self, key: &str) {
        let Some(held) = self.held.remove(key) else {
            return;
        };
        let lease = held.shared.lease.lock().await;
        match self.worker.leases.release(&lease).await {
            Ok(()) => {
                tracing::info!(lease = %key, checkpoint = %lease.checkpoint, "lease released")
            }
            Err(error) => {
                tracing::warn!(lease = %key, error = %error_chain(&error), "cannot release lease; it will expire")
            }
        }
        drop(lease);
        self.report_held(held.projection);
    }

    fn report_held(&self, projection: &'static str) {
        let held = self
            .held
            .values()
            .filter(|h| h.projection == projection)
            .count();
        metrics::gauge!(meters::LEASES_HELD, "projection" => projection).set(held as f64);
    }

    /// Graceful shutdown: every consumer finishes and checkpoints its batch while the leases
    /// are still renewed, then every lease is released.
    async fn shut_down(&mut self, renew: &mut tokio::time::Interval) {
        tracing::info!(
            leases = self.held.len(),
            "stopping: finishing current batches"
        );
        for held in self.held.values() {
            let _ = held.stop.send(true);
        }
        let grace = tokio::time::sleep(self.worker.config.lease_duration);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                done = self.consumers.join_next_with_id() => match done {
                    Some(done) => { self.consumer_exited(done).await; }
                    None => break,
                },
                _ = renew.tick() => self.renew_all().await,
                () = &mut grace => {
                    tracing::warn!("consumers did not stop in time; stopping them now");
                    self.consumers.shutdown().await;
                    break;
                }
            }
        }
        let keys: Vec<String> = self.held.keys().cloned().collect();
        for key in keys {
            self.release(&key).await;
        }
        tracing::info!("projector worker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn lease(shard: &str, owner: Option<&str>, counter: u64) -> Lease {
        Lease {
            projection: "history".into(),
            shard_id: shard.into(),
            owner: owner.map(str::to_owned),
            counter,
            checkpoint: Checkpoint::TrimHorizon,
            parent_shard_ids: Vec::new(),
            millis_behind_latest: None,
        }
    }

    fn child_of(shard: &str, parents: &[&str]) -> Lease {
        Lease {
            parent_shard_ids: parents.iter().map(|p| (*p).to_owned()).collect(),
            ..lease(shard, None, 0)
        }
    }

    /// A worker's view: `me`, the lease keys it holds, when it first saw each lease's
    /// current counter, and the shards the stream lists.
    struct View {
        me: &'static str,
        held: HashMap<String, ()>,
        observed: HashMap<String, (u64, Instant)>,
        known_shards: HashSet<String>,
    }

    impl View {
        fn of(me: &'static str, leases: &[Lease]) -> Self {
            Self {
                me,
                held: HashMap::new(),
                observed: HashMap::new(),
                known_shards: leases.iter().map(|l| l.shard_id.clone()).collect(),
            }
        }

        /// Every lease's counter seen standing still since `since`.
        fn seen(mut self, leases: &[Lease], since: Instant) -> Self {
            for lease in leases {
                self.observed.insert(lease.key(), (lease.counter, since));
            }
            self
        }

        fn holding(mut self, leases: &[Lease]) -> Self {
            for lease in leases
                .iter()
                .filter(|l| l.owner.as_deref() == Some(self.me))
            {
                self.held.insert(lease.key(), ());
            }
            self
        }

        fn take(&self, leases: &[Lease], now: Instant) -> Vec<String> {
            let leases: Vec<&Lease> = leases.iter().collect();
            let mut taken: Vec<String> = Balance {
                me: self.me,
                held: &self.held,
                observed: &self.observed,
                known_shards: &self.known_shards,
                lease_duration: LEASE,
            }
            .leases_to_take(&leases, now)
            .into_iter()
            .map(|l| l.shard_id)
            .collect();
            taken.sort();
            taken
        }
    }

    #[test]
    fn a_worker_alone_takes_every_free_lease() {
        let leases = [
            lease("a", None, 1),
            lease("b", None, 1),
            lease("c", None, 1),
        ];
        let now = Instant::now();
        assert_eq!(View::of("w1", &leases).take(&leases, now), ["a", "b", "c"]);
    }

    #[test]
    fn free_leases_are_taken_only_up_to_an_even_share() {
        let leases = [
            lease("a", Some("w2"), 5),
            lease("b", Some("w2"), 5),
            lease("c", None, 1),
            lease("d", None, 1),
        ];
        let now = Instant::now();
        let view = View::of("w1", &leases).seen(&leases, now);
        // Two workers, four leases: a share of two, both free ones.
        assert_eq!(view.take(&leases, now), ["c", "d"]);
        let three_free = [
            lease("a", Some("w2"), 5),
            lease("b", None, 1),
            lease("c", None, 1),
            lease("d", None, 1),
        ];
        let view = View::of("w1", &three_free).seen(&three_free, now);
        assert_eq!(
            view.take(&three_free, now).len(),
            2,
            "a share of two out of four"
        );
    }

    #[test]
    fn a_lease_whose_counter_stood_still_for_a_lease_duration_is_expired() {
        let leases = [
            lease("a", Some("dead"), 7),
            lease("b", Some("dead"), 7),
            lease("c", Some("w1"), 7),
        ];
        let start = Instant::now();
        let view = View::of("w1", &leases)
            .seen(&leases, start)
            .holding(&leases);
        // Seen still for less than a lease duration: its owner counts as alive, and with two
        // leases it holds no more than its share of three, so nothing moves.
        assert_eq!(view.take(&leases, start + LEASE / 2), Vec::<String>::new());
        assert_eq!(view.take(&leases, start + LEASE), ["a", "b"]);
    }

    #[test]
    fn a_lease_never_seen_moving_is_not_expired_on_first_sight() {
        let leases = [lease("a", Some("w2"), 3)];
        let now = Instant::now();
        // No observation yet: the worker has not watched the counter for a lease duration.
        assert_eq!(
            View::of("w1", &leases).take(&leases, now + LEASE * 5),
            Vec::<String>::new()
        );
    }

    #[test]
    fn one_lease_is_stolen_from_a_worker_holding_more_than_its_share() {
        let leases = [
            lease("a", Some("w2"), 1),
            lease("b", Some("w2"), 1),
            lease("c", Some("w2"), 1),
            lease("d", Some("w2"), 1),
        ];
        let now = Instant::now();
        let view = View::of("w1", &leases).seen(&leases, now);
        assert_eq!(
            view.take(&leases, now).len(),
            1,
            "one per round, not the whole share"
        );
        // At its share the thief takes nothing more.
        let balanced = [
            lease("a", Some("w1"), 1),
            lease("b", Some("w1"), 1),
            lease("c", Some("w2"), 1),
            lease("d", Some("w2"), 1),
        ];
        let view = View::of("w1", &balanced)
            .seen(&balanced, now)
            .holding(&balanced);
        assert_eq!(view.take(&balanced, now), Vec::<String>::new());
    }

    #[test]
    fn its_own_lease_from_an_earlier_life_is_taken_back_at_once() {
        let leases = [lease("a", Some("w1"), 9)];
        let now = Instant::now();
        let view = View::of("w1", &leases).seen(&leases, now);
        assert_eq!(view.take(&leases, now), ["a"]);
        let view = view.holding(&leases);
        assert_eq!(
            view.take(&leases, now),
            Vec::<String>::new(),
            "held already"
        );
    }

    #[test]
    fn a_child_waits_until_every_parent_reached_its_end() {
        let mut parent = lease("parent", Some("w2"), 4);
        let other_parent = Lease {
            checkpoint: Checkpoint::ShardEnd,
            ..lease("other-parent", None, 4)
        };
        let child = child_of("child", &["parent", "other-parent"]);
        let now = Instant::now();
        let leases = [parent.clone(), other_parent.clone(), child.clone()];
        let view = View::of("w1", &leases).seen(&leases, now);
        assert_eq!(view.take(&leases, now), Vec::<String>::new());

        parent.checkpoint = Checkpoint::ShardEnd;
        let leases = [parent, other_parent, child];
        let view = View::of("w1", &leases).seen(&leases, now);
        assert_eq!(
            view.take(&leases, now),
            ["child"],
            "ended shards are never taken"
        );
    }

    #[test]
    fn a_child_whose_parent_was_trimmed_from_the_stream_is_ready() {
        let child = child_of("child", &["trimmed"]);
        let leases = [child];
        let now = Instant::now();
        // No lease, and the stream no longer lists it: nothing of it is left to read.
        assert_eq!(View::of("w1", &leases).take(&leases, now), ["child"]);
        // Listed by the stream but without a lease yet: its lease is about to be created.
        let mut view = View::of("w1", &leases);
        view.known_shards.insert("trimmed".into());
        assert_eq!(view.take(&leases, now), Vec::<String>::new());
    }
}
