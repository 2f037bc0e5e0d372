//! Order commits: the order item, and the store's daily metrics item.
//!
//! One batch's commits of one order are folded into one change ([`OrderPlan`]) and written
//! without transactions:
//! 1. the order's `last_sequence` decides skip / apply / gap. It is what the projection
//!    remembers of the order; an order it does not remember whose first commit in the batch
//!    starts at sequence 1 is taken as new; any other is read. A remembered or assumed
//!    sequence that shows a gap is read before anything is written;
//! 2. the metrics item counts the order's commits, conditioned on its per-order entry
//!    (`order#<id>` = last sequence counted) being older than the first of them: a retry after
//!    a crash between steps 2 and 3 finds the entry and counts nothing twice. The orders of one
//!    store and day in a batch are counted by one update ([`MAX_ORDERS_PER_UPDATE`] at most),
//!    their conditions joined; when any of them fails, each order is counted again alone, one
//!    commit at a time, each commit conditioned as above (an entry always stands at a commit's
//!    last sequence, because a batch may be cut elsewhere on its retry). An order that ends in
//!    the batch has its entry replaced by its fingerprint in the `ended` number set (see
//!    [`ENDED`]) in the same update, so metrics items stay small: the fingerprint fails any
//!    later count of it the way the entry would;
//! 3. the order item is updated, conditioned on `last_sequence` still being the one remembered,
//!    assumed or read (an order's first write puts the whole item, conditioned on there being
//!    none). When a remembered or assumed one fails the condition (another writer
//!    moved the order: a lease lost and taken back, replay's catch-up during a swap), the order
//!    is read and steps 1-3 are redone; when a read one fails, the batch is retried.
//!
//! Items of different orders and store days are written concurrently; one order's writes
//! follow each other, and its item is written as soon as its own metrics update is done.
//!
//! Why an ended order leaves a fingerprint rather than nothing: two writers can overlap on one
//! order (a lease stolen from a slow worker, the live projector and replay's catch-up during a
//! swap's handover). A writer that read the order before the other one ended it reaches step 2
//! with a stale `last_sequence`; had the entry simply been removed, its condition would find
//! no entry and count the order a second time. The fingerprint makes step 2's condition fail
//! for an ended order however late the stale writer comes, for as long as the day's item lives.
//! Older builds removed the entry in a fourth call after the order write; an ending commit
//! delivered again mends an entry such a build left behind.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use commit_log::{DomainEvent, LoggedCommit};
use futures::stream::{self, StreamExt};
use time::OffsetDateTime;

use super::update::{n, s, OnConditionFailed, Update, Written};
use super::{dynamodb_failure, Target, ViewItem, CONCURRENT_WRITES, TOMBSTONE_TTL};
use crate::order_changes::{business_day, parse_time, sortable_time, OrderChanges, Status};
use crate::progress::{unapplied, Step};
use commit_log::projection::ProjectionError;

/// The most orders one metrics update counts: DynamoDB allows 300 operators and 4 KB per
/// expression, and each order's condition takes at most 5 operators (its joining `AND`
/// included) and about 70 characters. Kept well below both: when one order of an update was
/// counted already (a redelivery), every order of the update is counted again alone.
const MAX_ORDERS_PER_UPDATE: usize = 20;

/// What the projection needs to know about an order it has seen: read from the order item, or
/// remembered from its last write.
#[derive(Debug, Clone, Default)]
pub(super) struct OrderSnapshot {
    last_sequence: u64,
    store_id: Option<String>,
    placed_at: Option<OffsetDateTime>,
    preparing_at: Option<OffsetDateTime>,
    status: Option<Status>,
}

impl OrderSnapshot {
    /// Where the order is counted, once it has been placed.
    fn metrics_key(&self, order_id: &str) -> Option<MetricsKey> {
        Some(MetricsKey {
            store_id: self.store_id.clone()?,
            day: business_day(self.placed_at?),
            order_id: order_id.to_owned(),
        })
    }

    fn after(&self, changes: &OrderChanges, last_sequence: u64) -> OrderSnapshot {
        OrderSnapshot {
            last_sequence,
            store_id: changes
                .placed
                .as_ref()
                .map(|placed| placed.store_id.clone())
                .or_else(|| self.store_id.clone()),
            placed_at: changes
                .placed
                .as_ref()
                .map(|placed| placed.placed_at)
                .or(self.placed_at),
            preparing_at: changes.preparing_at.or(self.preparing_at),
            status: changes.status.or(self.status),
        }
    }

    fn ended(&self) -> bool {
        self.status.is_some_and(Status::is_final)
    }
}

/// Where a plan's starting point came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Read from the order item in this batch.
    Read,
    /// Remembered from an earlier batch, or assumed new: another writer may have moved it.
    Guessed,
}

/// One commit of a plan, with what it changes on its own (for counting it alone).
#[derive(Debug)]
struct CommitStep<'c> {
    index: usize,
    commit: &'c LoggedCommit,
    /// The order's last applied sequence before it.
    applied: u64,
    changes: OrderChanges,
    counts: Counts,
    /// The order after it.
    after: OrderSnapshot,
}

/// What one batch does to one order, decided from its starting point before anything is
/// written.
#[derive(Debug)]
struct OrderPlan<'c> {
    order_id: String,
    known: Known,
    before: OrderSnapshot,
    /// The commits to apply, in order.
    steps: Vec<CommitStep<'c>>,
    /// The steps' changes folded into one.
    folded: OrderChanges,
    /// The ended order's last commit came again: index of that commit (its entry may be left).
    mend: Option<usize>,
    /// The commit the order stops at (a gap, a commit the view cannot hold), after the steps.
    stop: Option<ProjectionError>,
    /// `stop` is a gap.
    gapped: bool,
}

impl<'c> OrderPlan<'c> {
    fn new(
        target: &Target<'_>,
        known: Known,
        before: OrderSnapshot,
        commits: &[(usize, &'c LoggedCommit)],
    ) -> Self {
        let order_id = commits
            .first()
            .map(|(_, commit)| commit.aggregate_id.clone())
            .unwrap_or_default();
        let mut plan = OrderPlan {
            order_id,
            known,
            before: before.clone(),
            steps: Vec::new(),
            folded: OrderChanges::default(),
            mend: None,
            stop: None,
            gapped: false,
        };
        let mut snapshot = before;
        for &(index, commit) in commits {
            let applied = match Step::of(commit, snapshot.last_sequence) {
                Step::Skip => {
                    let repeated_end =
                        snapshot.ended() && commit.last_sequence() == snapshot.last_sequence;
                    if repeated_end && plan.steps.is_empty() {
                        plan.mend = Some(index);
                    }
                    continue;
                }
                Step::Gap { applied } => {
                    plan.gapped = true;
                    plan.stop = Some(target.gap(index, commit, applied));
                    break;
                }
                Step::Apply { applied } => applied,
            };
            match CommitStep::of(index, commit, applied, &snapshot) {
                Ok(step) => {
                    for event in unapplied(commit, applied) {
                        if let DomainEvent::Order(order_event) = &event.event {
                            plan.folded
                                .apply(event.sequence, event.recorded_at, order_event);
                        }
                    }
                    snapshot = step.after.clone();
                    plan.steps.push(step);
                }
                Err(poison) => {
                    plan.stop = Some(poison);
                    break;
                }
            }
        }
        plan
    }

    /// The order after the plan's steps.
    fn after(&self) -> &OrderSnapshot {
        self.steps.last().map_or(&self.before, |step| &step.after)
    }

    /// The order's sequence before the first step.
    fn applied(&self) -> u64 {
        self.steps
            .first()
            .map_or(self.before.last_sequence, |step| step.applied)
    }

    fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for step in &self.steps {
            total.add(&step.counts);
        }
        total
    }

    /// The last sequence of the last commit that counts in the metrics: where the order's entry
    /// stands after the plan, as it would after its commits applied one by one (live and
    /// rebuilt views are compared item by item, so it must not depend on how batches fold).
    fn last_counted(&self) -> u64 {
        self.steps
            .iter()
            .rev()
            .find(|step| step.counts.any())
            .map_or(self.after().last_sequence, |step| {
                step.commit.last_sequence()
            })
    }

    /// The plan ends the order.
    fn ends(&self) -> bool {
        !self.steps.is_empty() && self.after().ended()
    }

    /// The plan changes the order's metrics item.
    fn counts_anything(&self) -> bool {
        self.counts().any() || self.ends()
    }
}

impl<'c> CommitStep<'c> {
    fn of(
        index: usize,
        commit: &'c LoggedCommit,
        applied: u64,
        before: &OrderSnapshot,
    ) -> Result<Self, ProjectionError> {
        let mut changes = OrderChanges::default();
        for event in unapplied(commit, applied) {
            let DomainEvent::Order(order_event) = &event.event else {
                return Err(ProjectionError::Poison {
                    index,
                    reason: "an order commit holds a non-order event".into(),
                });
            };
            changes.apply(event.sequence, event.recorded_at, order_event);
        }
        let after = before.after(&changes, commit.last_sequence());
        if after.store_id.is_none() || after.placed_at.is_none() {
            return Err(ProjectionError::Poison {
                index,
                reason: "order events before OrderPlaced".into(),
            });
        }
        Ok(CommitStep {
            index,
            commit,
            applied,
            counts: Counts::of(before, &changes),
            changes,
            after,
        })
    }
}

/// What writing a plan came to.
#[derive(Debug)]
enum Outcome {
    /// Written (up to its stop, if it has one).
    Written,
    /// Its guessed starting point was wrong: read the order and plan again.
    Redo,
}

/// Applies a batch's order commits, one group per order (each in log order), and returns one
/// result per group.
pub(super) async fn apply(
    target: &Target<'_>,
    groups: Vec<Vec<(usize, &LoggedCommit)>>,
) -> Vec<Result<(), ProjectionError>> {
    let guesses: Vec<Option<OrderSnapshot>> = {
        let memory = target.memory();
        groups
            .iter()
            .map(|group| {
                let (_, first) = group.first()?;
                match memory.orders.get(&first.aggregate_id) {
                    Some(remembered) => Some(remembered.clone()),
                    None if first.first_sequence() == 1 => Some(OrderSnapshot::default()),
                    None => None,
                }
            })
            .collect()
    };
    let mut planned = Vec::new();
    for (group, guess) in groups.iter().zip(guesses) {
        planned.push(plan(target, group, guess));
    }
    let planned: Vec<Result<OrderPlan<'_>, ProjectionError>> = stream::iter(planned)
        .buffered(CONCURRENT_WRITES)
        .collect()
        .await;
    let mut results: Vec<Option<Result<(), ProjectionError>>> = Vec::new();
    let mut plans = Vec::new();
    for outcome in planned {
        match outcome {
            Ok(plan) => {
                plans.push((results.len(), plan));
                results.push(None);
            }
            Err(failure) => results.push(Some(Err(failure))),
        }
    }
    let written = write_plans(target, &plans).await;
    let mut redo = Vec::new();
    for ((slot, plan), outcome) in plans.into_iter().zip(written) {
        match outcome {
            Ok(Outcome::Written) => results[slot] = Some(finish(target, plan)),
            Ok(Outcome::Redo) => redo.push((slot, plan.order_id)),
            Err(failure) => {
                target.memory().orders.remove(&plan.order_id);
                results[slot] = Some(Err(failure));
            }
        }
    }
    if !redo.is_empty() {
        let mut reread = Vec::new();
        for (slot, _) in &redo {
            reread.push(plan(target, &groups[*slot], None));
        }
        let reread: Vec<_> = stream::iter(reread)
            .buffered(CONCURRENT_WRITES)
            .collect()
            .await;
        let mut plans = Vec::new();
        for ((slot, order_id), outcome) in redo.into_iter().zip(reread) {
            match outcome {
                Ok(plan) => plans.push((slot, plan)),
                Err(failure) => {
                    target.memory().orders.remove(&order_id);
                    results[slot] = Some(Err(failure));
                }
            }
        }
        let written = write_plans(target, &plans).await;
        for ((slot, plan), outcome) in plans.into_iter().zip(written) {
            results[slot] = Some(match outcome {
                Ok(Outcome::Written) => finish(target, plan),
                Ok(Outcome::Redo) => unreachable_redo(&plan.order_id),
                Err(failure) => {
                    target.memory().orders.remove(&plan.order_id);
                    Err(failure)
                }
            });
        }
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or(Ok(())))
        .collect()
}

/// A read starting point cannot be redone: [`write_order_plan`] turns its failed condition
/// into a transient failure. Kept as an error rather than a panic all the same.
fn unreachable_redo(order_id: &str) -> Result<(), ProjectionError> {
    Err(ProjectionError::Transient(
        format!("order {order_id}: moved by another writer while this one read it").into(),
    ))
}

/// Remembers the order as the written plan left it and returns where it stopped. An ended
/// order is forgotten: no later commit comes, and a redelivered one is read and skipped.
fn finish(target: &Target<'_>, plan: OrderPlan<'_>) -> Result<(), ProjectionError> {
    let after = plan.after().clone();
    let mut memory = target.memory();
    if after.ended() || after.last_sequence == 0 {
        memory.orders.remove(&plan.order_id);
    } else {
        memory.remember_order(&plan.order_id, after);
    }
    plan.stop.map_or(Ok(()), Err)
}

/// Plans one order's commits from `guess`, or from a read when there is none or when it shows
/// a gap.
async fn plan<'c>(
    target: &Target<'_>,
    commits: &[(usize, &'c LoggedCommit)],
    guess: Option<OrderSnapshot>,
) -> Result<OrderPlan<'c>, ProjectionError> {
    if let Some(guess) = guess {
        let planned = OrderPlan::new(target, Known::Guessed, guess, commits);
        if !planned.gapped {
            return Ok(planned);
        }
    }
    let Some(&(index, first)) = commits.first() else {
        return Ok(OrderPlan::new(
            target,
            Known::Read,
            OrderSnapshot::default(),
            commits,
        ));
    };
    let before = load(target, index, &first.aggregate_id).await?;
    Ok(OrderPlan::new(target, Known::Read, before, commits))
}

/// Writes `plans`. Each order's item is written once its metrics are counted (a crash between
/// the two then recounts nothing, see the module's steps 2 and 3), but no later: the orders of
/// one store and day are counted by one update per [`MAX_ORDERS_PER_UPDATE`] orders, those
/// updates queue on their one item, and each chunk's order items are written as soon as its own
/// update is done, while the next chunk's is still waiting. Orders that count nothing are written
/// straight away. One result per plan, in order.
async fn write_plans(
    target: &Target<'_>,
    plans: &[(usize, OrderPlan<'_>)],
) -> Vec<Result<Outcome, ProjectionError>> {
    let mut by_day: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut jobs = Vec::new();
    for (position, (_, plan)) in plans.iter().enumerate() {
        if let (Some(index), Some(key)) = (plan.mend, plan.before.metrics_key(&plan.order_id)) {
            let mend = forget(target, index, key, plan.before.last_sequence);
            jobs.push(Job::Mend(position, Box::pin(mend)));
            continue;
        }
        let counted_in = plan
            .counts_anything()
            .then(|| plan.after().metrics_key(&plan.order_id))
            .flatten();
        match counted_in {
            Some(key) => by_day
                .entry((key.store_id, key.day))
                .or_default()
                .push(position),
            None => jobs.push(Job::Write(position)),
        }
    }
    for positions in by_day.into_values() {
        for chunk in positions.chunks(MAX_ORDERS_PER_UPDATE) {
            jobs.push(Job::CountThenWrite(chunk.to_vec()));
        }
    }
    let mut results: Vec<Option<Result<Outcome, ProjectionError>>> =
        plans.iter().map(|_| None).collect();
    // Loops, not closures, build the futures: see `Projection::apply` of the module above.
    let mut running = Vec::new();
    for job in jobs {
        running.push(job.run(target, plans));
    }
    let mut done = stream::iter(running).buffer_unordered(CONCURRENT_WRITES);
    while let Some(finished) = done.next().await {
        for (position, result) in finished {
            results[position] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or(Ok(Outcome::Written)))
        .collect()
}

/// One independent piece of [`write_plans`]' work: its plans are written in it and nowhere
/// else.
enum Job<'a> {
    /// An ended order's repeated last commit: mend the entry an older build left (nothing else
    /// to write: its steps are all applied).
    Mend(
        usize,
        std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), ProjectionError>> + Send + 'a>,
        >,
    ),
    /// An order whose commits count nothing: its item alone.
    Write(usize),
    /// Orders of one store and day: one metrics update, then their items.
    CountThenWrite(Vec<usize>),
}

impl<'a> Job<'a> {
    async fn run(
        self,
        target: &'a Target<'_>,
        plans: &'a [(usize, OrderPlan<'_>)],
    ) -> Vec<(usize, Result<Outcome, ProjectionError>)> {
        match self {
            Job::Mend(position, mend) => vec![(position, mend.await.map(|()| Outcome::Written))],
            Job::Write(position) => {
                vec![(position, write_order_plan(target, &plans[position].1).await)]
            }
            Job::CountThenWrite(positions) => {
                let chunk: Vec<&OrderPlan<'_>> = positions
                    .iter()
                    .map(|&position| &plans[position].1)
                    .collect();
                let mut counted: HashMap<String, ProjectionError> = HashMap::new();
                for (order_id, result) in count_together(target, &chunk).await {
                    if let Err(failure) = result {
                        counted.insert(order_id, failure);
                    }
                }
                let mut writes = Vec::new();
                for position in positions {
                    let plan = &plans[position].1;
                    let failure = counted.remove(&plan.order_id);
                    writes.push(async move {
                        let result = match failure {
                            Some(failure) => Err(failure),
                            None => write_order_plan(target, plan).await,
                        };
                        (position, result)
                    });
                }
                futures::future::join_all(writes).await
            }
        }
    }
}

/// A failure repeated for every plan of a batch that stops on it (the batch is retried).
fn copy_of(failure: &ProjectionError) -> ProjectionError {
    match failure {
        ProjectionError::Poison { index, reason } => ProjectionError::Poison {
            index: *index,
            reason: reason.clone(),
        },
        other => ProjectionError::Transient(other.to_string().into()),
    }
}

/// Writes the order item for a plan's steps, folded into one update. A folded write the view
/// cannot hold (an item grown past 400 KB) is written again one commit at a time, so that
/// exactly the commit that does not fit is poison.
async fn write_order_plan(
    target: &Target<'_>,
    plan: &OrderPlan<'_>,
) -> Result<Outcome, ProjectionError> {
    let (Some(first), Some(last)) = (plan.steps.first(), plan.steps.last()) else {
        return Ok(Outcome::Written);
    };
    let written = write_order(
        target,
        first.index,
        &plan.order_id,
        first.applied,
        last.commit.last_sequence(),
        &last.after,
        &plan.folded,
    )
    .await;
    match written {
        Ok(Written::Yes) => Ok(Outcome::Written),
        Ok(Written::ConditionFailed(error)) => match plan.known {
            Known::Guessed => Ok(Outcome::Redo),
            Known::Read => Err(ProjectionError::Transient(error)),
        },
        Err(ProjectionError::Poison { .. }) if plan.steps.len() > 1 => {
            for step in &plan.steps {
                let written = write_order(
                    target,
                    step.index,
                    &plan.order_id,
                    step.applied,
                    step.commit.last_sequence(),
                    &step.after,
                    &step.changes,
                )
                .await?;
                if let Written::ConditionFailed(error) = written {
                    return Err(ProjectionError::Transient(error));
                }
            }
            Ok(Outcome::Written)
        }
        Err(failure) => Err(failure),
    }
}

fn order_key(order_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(format!("ORDER#{order_id}"))),
        ("sk".to_owned(), s("ORDER")),
    ])
}

async fn load(
    target: &Target<'_>,
    index: usize,
    order_id: &str,
) -> Result<OrderSnapshot, ProjectionError> {
    let output = target
        .client
        .get_item()
        .table_name(&target.tables.orders)
        .set_key(Some(order_key(order_id)))
        .consistent_read(true)
        .projection_expression("last_sequence, store_id, placed_at, preparing_at, #status")
        .expression_attribute_names("#status", "status")
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| dynamodb_failure(index, e))?;
    target
        .usage
        .read(ViewItem::Order, output.consumed_capacity());
    let Some(item) = output.item() else {
        return Ok(OrderSnapshot::default());
    };
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let last_sequence = item
        .get("last_sequence")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProjectionError::Poison {
            index,
            reason: format!("order item {order_id} has no readable last_sequence"),
        })?;
    Ok(OrderSnapshot {
        last_sequence,
        store_id: text("store_id"),
        placed_at: text("placed_at").as_deref().and_then(parse_time),
        preparing_at: text("preparing_at").as_deref().and_then(parse_time),
        status: text("status").as_deref().and_then(Status::parse),
    })
}

/// Writes the order item: conditioned on the marker being `applied`, advancing it to
/// `last_sequence` together with the view change (`changes`, leaving the order as `after`).
async fn write_order(
    target: &Target<'_>,
    index: usize,
    order_id: &str,
    applied: u64,
    last_sequence: u64,
    after: &OrderSnapshot,
    changes: &OrderChanges,
) -> Result<Written, ProjectionError> {
    let mut update = Update::default();
    let store_id = after.store_id.clone().unwrap_or_default();
    update.set("last_sequence", n(last_sequence));
    if let Some(placed) = &changes.placed {
        update.set("order_id", s(order_id));
        update.set("store_id", s(&placed.store_id));
        update.set("customer_id", s(&placed.customer_id));
        update.set("placed_at", s(sortable_time(placed.placed_at)));
        update.set("total_cents", n(placed.total_cents));
        update.set(
            "items",
            AttributeValue::L(placed.lines.iter().map(line).collect()),
        );
        // DynamoDB keeps no empty strings in older emulators; no note is no attribute.
        if !placed.note.is_empty() {
            update.set("note", s(&placed.note));
        }
        if !after.status.is_some_and(Status::is_final) {
            update.set("gsi2pk", s(format!("STORE#{store_id}")));
            update.set(
                "gsi2sk",
                s(format!("{}#{}", sortable_time(placed.placed_at), order_id)),
            );
        }
    }
    let times = [
        ("accepted_at", changes.accepted_at),
        ("payment_captured_at", changes.payment_captured_at),
        ("preparing_at", changes.preparing_at),
        ("ready_at", changes.ready_at),
        ("ended_at", changes.ended_at),
    ];
    for (attribute, at) in times {
        if let Some(at) = at {
            update.set(attribute, s(sortable_time(at)));
        }
    }
    if let Some(payment_id) = &changes.payment_id {
        update.set("payment_status", s("captured"));
        update.set("payment_id", s(payment_id));
    } else if changes.payment_declined {
        update.set("payment_status", s("declined"));
    }
    if let Some(reason) = &changes.end_reason {
        update.set("end_reason", s(reason));
    }
    if let (Some(status), Some(status_at)) = (changes.status, changes.status_at) {
        update.set("status", s(status.as_str()));
        update.set("status_at", s(sortable_time(status_at)));
        if status.is_final() {
            for key in ["gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"] {
                if changes.placed.is_none() || key.starts_with("gsi1") {
                    update.remove(key);
                }
            }
            let expires_at = status_at + TOMBSTONE_TTL;
            update.set("expires_at", n(expires_at.unix_timestamp()));
        } else {
            update.set(
                "gsi1pk",
                s(format!("STORE#{store_id}#STATUS#{}", status.as_str())),
            );
            update.set(
                "gsi1sk",
                s(format!("{}#{}", sortable_time(status_at), order_id)),
            );
        }
    }
    update.append(
        "timeline",
        changes
            .timeline
            .iter()
            .map(|entry| {
                let mut fields = HashMap::from([
                    ("event".to_owned(), s(entry.event)),
                    ("at".to_owned(), s(sortable_time(entry.at))),
                    ("sequence".to_owned(), n(entry.sequence)),
                ]);
                if let Some(status) = entry.status {
                    fields.insert("status".to_owned(), s(status.as_str()));
                }
                if let Some(detail) = &entry.detail {
                    fields.insert("detail".to_owned(), s(detail));
                }
                AttributeValue::M(fields)
            })
            .collect(),
    );
    let key = order_key(order_id);
    if applied == 0 && changes.placed.is_some() {
        // The order's first write: the whole item, put.
        return update
            .try_put_new(target, &target.tables.orders, key, index)
            .await;
    }
    let marker = update.name("last_sequence");
    let pk = update.name("pk");
    let expected = update.value(n(applied));
    let condition = format!("attribute_not_exists({pk}) OR {marker} = {expected}");
    update
        .try_send(target, &target.tables.orders, key, condition, index)
        .await
}

fn line(line: &domain::order::PricedLine) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("sku".to_owned(), s(line.sku.as_str())),
        ("name".to_owned(), s(line.name.as_str())),
        ("quantity".to_owned(), n(line.quantity.get())),
        (
            "customisations".to_owned(),
            AttributeValue::L(line.customisations.iter().map(|c| s(c.as_str())).collect()),
        ),
        ("unit_price_cents".to_owned(), n(line.unit_price.cents())),
        ("line_total_cents".to_owned(), n(line.line_total.cents())),
    ]))
}

/// The metrics item an order counts in: its store's item for the UTC day it was placed on.
#[derive(Debug, Clone)]
struct MetricsKey {
    store_id: String,
    day: String,
    order_id: String,
}

impl MetricsKey {
    fn key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s(format!("STORE#{}", self.store_id))),
            ("sk".to_owned(), s(format!("DAY#{}", self.day))),
        ])
    }

    /// The attribute recording the last sequence of this order counted in the item.
    fn entry(&self) -> String {
        format!("order#{}", self.order_id)
    }

    /// The order's fingerprint in the item's [`ENDED`] set.
    fn fingerprint(&self) -> String {
        fingerprint(&self.order_id).to_string()
    }
}

/// The metrics item's number set of the fingerprints of its ended orders: what is left of an
/// order's entry once it ended. About 20 bytes per order instead of the entry's ~45, and never
/// removed (the item is one store's one day). Two orders of one store and day sharing a
/// fingerprint (odds about n²/2⁶⁵ for n orders: 3·10⁻¹⁴ for a thousand) would leave the later
/// one uncounted; nothing else depends on it.
const ENDED: &str = "ended";

/// 64-bit FNV-1a of the order id: stable across builds and platforms (unlike std's hasher),
/// which the stored set depends on.
fn fingerprint(order_id: &str) -> u64 {
    order_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What one commit adds to the store's metrics.
#[derive(Debug, Default)]
struct Counts {
    placed: i64,
    active: i64,
    completed: i64,
    cancelled: i64,
    rejected: i64,
    prep_ms: i64,
    prepared: i64,
}

impl Counts {
    fn of(before: &OrderSnapshot, changes: &OrderChanges) -> Counts {
        let mut counts = Counts::default();
        if changes.placed.is_some() {
            counts.placed = 1;
            counts.active = 1;
        }
        let was_final = before.status.is_some_and(Status::is_final);
        if let (Some(status), false) = (changes.status, was_final) {
            match status {
                Status::Completed => counts.completed = 1,
                Status::Cancelled => counts.cancelled = 1,
                Status::Rejected => counts.rejected = 1,
                _ => {}
            }
            if status.is_final() {
                counts.active -= 1;
            }
        }
        let preparing_at = changes.preparing_at.or(before.preparing_at);
        if let (Some(ready_at), Some(preparing_at)) = (changes.ready_at, preparing_at) {
            counts.prep_ms = i64::try_from((ready_at - preparing_at).whole_milliseconds())
                .unwrap_or(i64::MAX)
                .max(0);
            counts.prepared = 1;
        }
        counts
    }

    fn add(&mut self, other: &Counts) {
        self.placed += other.placed;
        self.active += other.active;
        self.completed += other.completed;
        self.cancelled += other.cancelled;
        self.rejected += other.rejected;
        self.prep_ms += other.prep_ms;
        self.prepared += other.prepared;
    }

    /// The counters' attributes and what this adds to each.
    fn deltas(&self) -> [(&'static str, i64); 7] {
        [
            ("orders_placed", self.placed),
            ("orders_active", self.active),
            ("orders_completed", self.completed),
            ("orders_cancelled", self.cancelled),
            ("orders_rejected", self.rejected),
            ("prep_ms_total", self.prep_ms),
            ("prep_count", self.prepared),
        ]
    }

    fn any(&self) -> bool {
        self.placed != 0
            || self.active != 0
            || self.completed != 0
            || self.cancelled != 0
            || self.rejected != 0
            || self.prepared != 0
    }
}

/// The condition under which an order's commits after `applied` are not counted yet. For an
/// order counted before (`applied` > 0): its entry is not newer than `applied`. An order is
/// counted (its placement at least) before its item is written, so an order item at `applied`
/// means an entry that stands at or after its last counting commit, or, once the order has
/// ended, none (its fingerprint in [`ENDED`] instead): false then. For an order never written
/// (`applied` = 0): it has neither an entry nor a fingerprint (false when another writer has
/// counted it since this one found nothing). Four operators at most per order, one for an
/// order seen before: dynalite parses each condition on every call, at about a millisecond per
/// order of a 20-order update on this kind of machine.
fn uncounted(update: &mut Update, key: &MetricsKey, applied: u64) -> String {
    let entry = update.name(&key.entry());
    if applied > 0 {
        let counted_up_to = update.value(n(applied));
        return format!("{entry} <= {counted_up_to}");
    }
    let ended = update.name(ENDED);
    let fingerprint = update.value(n(key.fingerprint()));
    format!("(attribute_not_exists({entry}) AND NOT contains({ended}, {fingerprint}))")
}

/// Counts the orders of `plans` (one store and day) in their metrics item with one update,
/// each order's entry moved to its last commit (or, for an order that ends, replaced by its
/// fingerprint), conditioned on none of them being counted yet. When that fails, each order is
/// counted alone, commit by commit ([`count_alone`]). One result per order.
async fn count_together(
    target: &Target<'_>,
    plans: &[&OrderPlan<'_>],
) -> Vec<(String, Result<(), ProjectionError>)> {
    let keys: Vec<MetricsKey> = plans
        .iter()
        .filter_map(|plan| plan.after().metrics_key(&plan.order_id))
        .collect();
    let (Some(first_key), Some(first_plan)) = (keys.first(), plans.first()) else {
        return Vec::new();
    };
    let index = first_plan.steps.first().map_or(0, |step| step.index);
    let mut update = Update::default();
    update.set("store_id", s(&first_key.store_id));
    update.set("business_day", s(&first_key.day));
    let mut total = Counts::default();
    let mut ended = Vec::new();
    let mut conditions = Vec::new();
    for (plan, key) in plans.iter().zip(&keys) {
        total.add(&plan.counts());
        conditions.push(uncounted(&mut update, key, plan.applied()));
        if plan.ends() {
            update.remove(&key.entry());
            ended.push(key.fingerprint());
        } else {
            update.set(&key.entry(), n(plan.last_counted()));
        }
    }
    for (attribute, delta) in total.deltas() {
        update.add(attribute, n(delta));
    }
    if !ended.is_empty() {
        ended.sort();
        ended.dedup();
        update.add(ENDED, AttributeValue::Ns(ended));
    }
    let condition = conditions.join(" AND ");
    let together = update
        .try_send(
            target,
            &target.tables.stores,
            first_key.key(),
            condition,
            index,
        )
        .await;
    match together {
        Ok(Written::Yes) => plans
            .iter()
            .map(|plan| (plan.order_id.clone(), Ok(())))
            .collect(),
        Err(failure) if failure.is_transient() => plans
            .iter()
            .map(|plan| (plan.order_id.clone(), Err(copy_of(&failure))))
            .collect(),
        // A condition failed (a redelivery, a second writer) or the item refused the update:
        // each order alone finds what is counted, or which commit the item cannot hold.
        Ok(Written::ConditionFailed(_)) | Err(_) => {
            let mut alone = Vec::new();
            for (plan, key) in plans.iter().zip(keys) {
                alone.push(async move {
                    (plan.order_id.clone(), count_alone(target, plan, &key).await)
                });
            }
            futures::future::join_all(alone).await
        }
    }
}

/// Counts a plan's commits one by one, then replaces the entry of an order that ends by its
/// fingerprint. Every step is conditioned on its own, so what is counted already is skipped.
async fn count_alone(
    target: &Target<'_>,
    plan: &OrderPlan<'_>,
    key: &MetricsKey,
) -> Result<(), ProjectionError> {
    for step in &plan.steps {
        if step.counts.any() {
            count(target, step, key).await?;
        }
    }
    if let Some(last) = plan.steps.last().filter(|_| plan.ends()) {
        forget(target, last.index, key.clone(), last.commit.last_sequence()).await?;
    }
    Ok(())
}

/// Counts one commit in the metrics item, once (see [`uncounted`]).
async fn count(
    target: &Target<'_>,
    step: &CommitStep<'_>,
    key: &MetricsKey,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.set("store_id", s(&key.store_id));
    update.set("business_day", s(&key.day));
    update.set(&key.entry(), n(step.commit.last_sequence()));
    for (attribute, delta) in step.counts.deltas() {
        update.add(attribute, n(delta));
    }
    let condition = uncounted(&mut update, key, step.applied);
    update
        .send(
            target,
            &target.tables.stores,
            key.key(),
            condition,
            OnConditionFailed::AlreadyApplied,
            step.index,
        )
        .await
}

/// Replaces an ended order's entry in the metrics item by its fingerprint in [`ENDED`]. Only
/// the entry of this final commit is replaced; if this step is lost, the entry merely stays.
async fn forget(
    target: &Target<'_>,
    index: usize,
    key: MetricsKey,
    last_sequence: u64,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.remove(&key.entry());
    update.add(ENDED, AttributeValue::Ns(vec![key.fingerprint()]));
    let entry = update.name(&key.entry());
    let last = update.value(n(last_sequence));
    // False when the entry is gone already: nothing to do.
    let condition = format!("{entry} <= {last}");
    update
        .send(
            target,
            &target.tables.stores,
            key.key(),
            condition,
            OnConditionFailed::AlreadyApplied,
            index,
        )
        .await
}

#[cfg(test)]
mod tests {
    use commit_log::LoggedEvent;
    use domain::order::OrderEvent;
    use domain::{CustomerId, Money, Note, OrderId, StoreId};
    use test_support::{aws_test_config, unique_name};
    use time::macros::datetime;

    use std::sync::Mutex;

    use super::*;
    use crate::active_orders::{
        ActiveOrdersProjection, ActiveOrdersTables, DynamoDbUsage, InventoryMarker,
    };

    /// Applies one order's commits as a batch holding only them.
    async fn apply_one(
        target: &Target<'_>,
        commits: &[(usize, &LoggedCommit)],
    ) -> Result<(), ProjectionError> {
        let mut results = apply(target, vec![commits.to_vec()]).await;
        results.pop().expect("one result")
    }

    /// Applies `commit` onto `before`, as a writer that read `before` would.
    async fn apply_commit(
        target: &Target<'_>,
        index: usize,
        commit: &LoggedCommit,
        before: OrderSnapshot,
    ) -> Result<(), ProjectionError> {
        let plan = OrderPlan::new(target, Known::Read, before, &[(index, commit)]);
        let mut written = write_plans(target, &[(0, plan)]).await;
        written.pop().expect("one result").map(drop)
    }

    const STORE: &str = "store-overlap";

    fn commit(order_id: &str, sequence: u64, minute: i64, event: OrderEvent) -> LoggedCommit {
        let at = datetime!(2025-03-03 08:00 UTC) + time::Duration::minutes(minute);
        LoggedCommit {
            aggregate_type: "order".into(),
            aggregate_id: order_id.into(),
            committed_at: at,
            correlation_id: "overlap".into(),
            causation_id: String::new(),
            actor: String::new(),
            traceparent: String::new(),
            events: vec![LoggedEvent {
                sequence,
                position: sequence,
                recorded_at: at,
                event: DomainEvent::Order(event),
            }],
        }
    }

    fn placed(order_id: &str) -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: OrderId::parse(order_id).expect("an order id"),
            store_id: StoreId::parse(STORE).expect("a store id"),
            customer_id: CustomerId::parse("c-overlap").expect("a customer id"),
            lines: Vec::new(),
            note: Note::parse("").expect("an empty note"),
            total: Money::from_cents(0),
            payment_token: None,
        }
    }

    async fn metrics(target: &Target<'_>) -> HashMap<String, AttributeValue> {
        target
            .client
            .get_item()
            .table_name(&target.tables.stores)
            .key("pk", s(format!("STORE#{STORE}")))
            .key("sk", s("DAY#2025-03-03"))
            .consistent_read(true)
            .send()
            .await
            .expect("the metrics item is readable")
            .item
            .expect("the metrics item exists")
    }

    fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Two writers on one order (a lease stolen from a slow worker, or replay's catch-up next to
    /// the live projector): the slow one read the order before the other ended it, and only
    /// then reaches its metrics step, after the other has already cleaned the order's entry up.
    #[tokio::test]
    async fn a_second_writer_with_a_stale_read_does_not_count_an_ended_order_again() {
        let client = aws_support::dynamodb(&aws_test_config().await);
        let tables = ActiveOrdersTables {
            orders: unique_name("overlap-orders"),
            stores: unique_name("overlap-stores"),
        };
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .expect("tables");
        let (memory, usage) = (Mutex::default(), DynamoDbUsage::default());
        let target = Target {
            client: &client,
            tables,
            handover: false,
            inventory_marker: InventoryMarker::default(),
            memory: &memory,
            usage: &usage,
        };
        let id = OrderId::from(uuid::Uuid::new_v4()).to_string();
        let life = [
            commit(&id, 1, 0, placed(&id)),
            commit(&id, 2, 1, OrderEvent::OrderAccepted {}),
            commit(&id, 3, 2, OrderEvent::PreparationStarted {}),
            commit(&id, 4, 6, OrderEvent::OrderMarkedReady {}),
            commit(&id, 5, 7, OrderEvent::OrderCompleted {}),
        ];
        let (completed, earlier) = life.split_last().expect("a life");
        let indexed: Vec<(usize, &LoggedCommit)> = earlier.iter().enumerate().collect();
        apply_one(&target, &indexed)
            .await
            .expect("the order's life so far");

        // The slow writer reads the order (ready, sequence 4)...
        let stale = load(&target, 0, &id).await.expect("the order");
        // ...the other writer completes it, counts it and cleans its entry up...
        apply_one(&target, &[(0, completed)])
            .await
            .expect("completed");
        let after_first = metrics(&target).await;
        assert_eq!(number(&after_first, "orders_completed"), 1);
        assert!(!after_first.contains_key(&format!("order#{id}")));
        // ...then the slow writer goes on from what it read.
        let second = apply_commit(&target, 0, completed, stale).await;

        let after_second = metrics(&target).await;
        assert_eq!(
            number(&after_second, "orders_completed"),
            1,
            "completed counted twice: {after_second:?}"
        );
        assert_eq!(number(&after_second, "orders_active"), 0);
        assert_eq!(number(&after_second, "orders_placed"), 1);
        // Its order write finds the marker moved: a transient failure, whose retry re-reads
        // the order and skips the commit.
        assert!(
            matches!(second, Err(ProjectionError::Transient(_))),
            "{second:?}"
        );
        apply_one(&target, &[(0, completed)])
            .await
            .expect("the retry");
        assert_eq!(number(&metrics(&target).await, "orders_completed"), 1);
    }

    /// The same for the order's first commit: a writer that read no order yet counts its
    /// placement after the other writer has placed, ended and cleaned it up.
    #[tokio::test]
    async fn a_second_writer_that_read_no_order_does_not_count_an_ended_order_again() {
        let client = aws_support::dynamodb(&aws_test_config().await);
        let tables = ActiveOrdersTables {
            orders: unique_name("overlap-orders"),
            stores: unique_name("overlap-stores"),
        };
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .expect("tables");
        let (memory, usage) = (Mutex::default(), DynamoDbUsage::default());
        let target = Target {
            client: &client,
            tables,
            handover: false,
            inventory_marker: InventoryMarker::default(),
            memory: &memory,
            usage: &usage,
        };
        let id = OrderId::from(uuid::Uuid::new_v4()).to_string();
        let first = commit(&id, 1, 0, placed(&id));
        let cancelled = commit(
            &id,
            2,
            1,
            OrderEvent::OrderCancelled {
                reason: domain::Reason::parse("changed my mind").expect("a reason"),
                refund_due: false,
                stock_reserved: false,
            },
        );
        let stale = load(&target, 0, &id).await.expect("no order yet");
        apply_one(&target, &[(0, &first), (1, &cancelled)])
            .await
            .expect("placed and cancelled");
        let _ = apply_commit(&target, 0, &first, stale).await;

        let counted = metrics(&target).await;
        assert_eq!(number(&counted, "orders_placed"), 1, "{counted:?}");
        assert_eq!(number(&counted, "orders_cancelled"), 1);
        assert_eq!(number(&counted, "orders_active"), 0);
    }
}
