//! Inventory commits: one item per store and SKU (stock, reservations, low-stock warning, the
//! open reorder) and the store inventory's marker item.
//!
//! A commit may touch several SKUs. Each SKU item records the last inventory sequence applied to
//! it (`applied_sequence`) and is updated on the condition that it is older than the commit, so
//! every SKU write is idempotent on its own; the marker (`sk = INVENTORY`, `last_sequence`) is
//! advanced last. A crash in between leaves some SKUs written: the retry skips them by their
//! condition and finishes the rest.
//!
//! Where the inventory's progress is read from ([`Progress`]): the marker says which commits are
//! in every SKU item they touch (`complete`), the SKU items' highest `applied_sequence` which
//! commits are in some of them (`seen`). A commit up to `complete` is skipped, one after `seen`
//! plus one is a gap, and one in between is written again (each SKU write skipped where the item
//! holds it). So the marker need not be advanced after every batch: with
//! [`InventoryMarker::SkuItems`] it is written only when a batch's last commit of the inventory
//! touches no SKU, one write and one call fewer per inventory and batch. Builds before this one
//! read only the marker and would take a marker left behind for a gap: that setting waits until
//! every writer of the view (projectors, replay) runs this build or a later one.
//!
//! A batch's consecutive commits of one inventory are written as one: each SKU they touch once,
//! with their changes folded in commit order, then the marker once (a hot store's reservations
//! arrive many to a batch: one write per SKU instead of one per SKU and commit, plus a marker
//! each). A SKU item that an earlier attempt wrote up to a commit inside the run (its batch ended
//! there, and it crashed before the marker) fails the folded write's condition; that SKU alone is
//! then written commit by commit, each write skipped where the item holds it already.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use commit_log::{DomainEvent, LoggedCommit};
use domain::inventory::InventoryEvent;
use time::OffsetDateTime;

use super::update::{n, s, OnConditionFailed, Update, Written};
use super::{dynamodb_failure, InventoryMarker, Target, ViewItem};
use crate::order_changes::sortable_time;
use crate::progress::{unapplied, Step};
use commit_log::projection::ProjectionError;

/// A change of the low-stock state.
#[derive(Debug, Clone, Copy)]
enum Warning {
    /// The threshold it crossed is the change's `threshold`.
    Raised {
        available: u32,
        at: OffsetDateTime,
    },
    Cleared {
        available: u32,
    },
}

/// A change of the SKU's open reorder (the last in a commit wins: a delivery and the next
/// reorder it calls for may share one).
#[derive(Debug, Clone, Copy)]
enum OpenReorder {
    Opened {
        number: u64,
        quantity: u32,
        at: OffsetDateTime,
    },
    Delivered,
}

/// A change of the suggested reorder quantity (the last wins).
#[derive(Debug, Clone, Copy)]
enum Suggestion {
    Set(u32),
    /// The warning was cleared: no reorder is suggested any more.
    Removed,
}

/// What one commit, or a run of an inventory's commits folded in order, does to one SKU: the
/// same item as writing each commit's change after the other.
#[derive(Debug, Default, Clone)]
struct SkuChange {
    /// A count replaced on-hand stock (deltas after it are folded into it).
    on_hand: Option<i64>,
    on_hand_delta: i64,
    reserved_delta: i64,
    /// The last threshold set or stated by a raised warning.
    threshold: Option<u32>,
    warning: Option<Warning>,
    reorder: Option<Suggestion>,
    open_reorder: Option<OpenReorder>,
}

impl SkuChange {
    fn add_on_hand(&mut self, delta: i64) {
        match &mut self.on_hand {
            Some(on_hand) => *on_hand += delta,
            None => self.on_hand_delta += delta,
        }
    }

    /// This change followed by `later`: what writing one after the other leaves.
    fn then(&mut self, later: &SkuChange) {
        match later.on_hand {
            Some(on_hand) => {
                self.on_hand = Some(on_hand);
                self.on_hand_delta = 0;
            }
            None => self.add_on_hand(later.on_hand_delta),
        }
        self.reserved_delta += later.reserved_delta;
        self.threshold = later.threshold.or(self.threshold);
        self.warning = later.warning.or(self.warning);
        self.reorder = later.reorder.or(self.reorder);
        self.open_reorder = later.open_reorder.or(self.open_reorder);
    }
}

/// What is known of one inventory's progress (module docs): every commit up to `complete` is in
/// every SKU item it touches, and some SKU item holds commits up to `seen` (at least
/// `complete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    complete: u64,
    seen: u64,
}

impl Progress {
    /// What this projection wrote itself: complete up to `last_sequence`.
    fn complete_to(last_sequence: u64) -> Progress {
        Progress {
            complete: last_sequence,
            seen: last_sequence,
        }
    }

    /// The step for `commit`. A commit between `complete` and `seen` is applied from the
    /// sequence before it: its SKU writes are skipped where an item holds it already.
    fn step(&self, commit: &LoggedCommit) -> Step {
        if commit.last_sequence() <= self.complete {
            Step::Skip
        } else if commit.first_sequence() > self.seen + 1 {
            Step::Gap { applied: self.seen }
        } else {
            Step::Apply {
                applied: self.complete.max(commit.first_sequence().saturating_sub(1)),
            }
        }
    }

    /// After `commit` is written (or found written) in every SKU item it touches.
    fn after(&self, commit: &LoggedCommit) -> Progress {
        Progress {
            complete: commit.last_sequence(),
            seen: self.seen.max(commit.last_sequence()),
        }
    }
}

/// Applies one store inventory's commits in order, starting from the progress the projection
/// remembers (read when it remembers none, or when the remembered one shows a gap: another
/// writer may have moved it on). Whatever fails, the inventory is forgotten, so the retry reads
/// its progress again.
pub(super) async fn apply(
    target: &Target<'_>,
    commits: Vec<(usize, &LoggedCommit)>,
) -> Result<(), ProjectionError> {
    let Some((_, first)) = commits.first() else {
        return Ok(());
    };
    let store_id = first.aggregate_id.clone();
    let remembered = target.memory().inventories.get(&store_id).copied();
    let result = apply_from(target, &commits, remembered).await;
    let mut memory = target.memory();
    match result {
        Ok(complete) => memory.remember_inventory(&store_id, complete),
        Err(_) => {
            memory.inventories.remove(&store_id);
        }
    }
    result.map(drop)
}

/// [`apply`] from `remembered` (complete up to it); returns where the commits leave the
/// inventory complete.
async fn apply_from(
    target: &Target<'_>,
    commits: &[(usize, &LoggedCommit)],
    remembered: Option<u64>,
) -> Result<u64, ProjectionError> {
    let mut remembered = remembered.map(Progress::complete_to);
    // The progress once `run` is written.
    let mut progress: Option<Progress> = None;
    let mut run: Option<Run<'_>> = None;
    for &(index, commit) in commits {
        let store_id = &commit.aggregate_id;
        let known = match progress {
            Some(known) => known,
            None => match remembered.take() {
                Some(guess) if !matches!(guess.step(commit), Step::Gap { .. }) => guess,
                _ => load_progress(target, index, store_id).await?,
            },
        };
        let applied = match known.step(commit) {
            Step::Skip => {
                progress = Some(known);
                continue;
            }
            Step::Gap { applied } => {
                // The commits before the gap are applied, as one by one they would be.
                if let Some(run) = run.take() {
                    run.write(target).await?;
                }
                return Err(target.gap(index, commit, applied));
            }
            Step::Apply { applied } => applied,
        };
        let mut changes: BTreeMap<String, SkuChange> = BTreeMap::new();
        for event in unapplied(commit, applied) {
            let DomainEvent::Inventory(inventory_event) = &event.event else {
                if let Some(run) = run.take() {
                    run.write(target).await?;
                }
                return Err(ProjectionError::Poison {
                    index,
                    reason: "an inventory commit holds a non-inventory event".into(),
                });
            };
            fold(&mut changes, inventory_event, event.recorded_at);
        }
        run.get_or_insert_with(|| Run::after(applied))
            .add(index, commit, applied, changes);
        progress = Some(known.after(commit));
    }
    if let Some(run) = run {
        run.write(target).await?;
    }
    Ok(progress.map_or(0, |known| known.complete))
}

/// One inventory's consecutive commits of a batch, to be written as one (module docs).
struct Run<'c> {
    /// The marker before the run's first commit.
    applied_before: u64,
    /// Per SKU: the run's changes folded, and each commit's own for the commit-by-commit
    /// fallback (with the marker before that commit).
    skus: BTreeMap<String, (SkuChange, Vec<CommitChange<'c>>)>,
    /// The run's last commit and its index in the batch.
    last: Option<(usize, &'c LoggedCommit)>,
    /// Whether the last commit touched a SKU, whose item then records it.
    last_in_sku_items: bool,
}

/// One commit's change of one SKU.
struct CommitChange<'c> {
    index: usize,
    commit: &'c LoggedCommit,
    applied: u64,
    change: SkuChange,
}

impl<'c> Run<'c> {
    fn after(applied_before: u64) -> Run<'c> {
        Run {
            applied_before,
            skus: BTreeMap::new(),
            last: None,
            last_in_sku_items: false,
        }
    }

    /// Adds the next commit (applied from `applied`, the marker after the previous one).
    fn add(
        &mut self,
        index: usize,
        commit: &'c LoggedCommit,
        applied: u64,
        changes: BTreeMap<String, SkuChange>,
    ) {
        self.last_in_sku_items = !changes.is_empty();
        for (sku, change) in changes {
            let (folded, own) = self.skus.entry(sku).or_default();
            folded.then(&change);
            own.push(CommitChange {
                index,
                commit,
                applied,
                change,
            });
        }
        self.last = Some((index, commit));
    }

    /// Each SKU once (they are independent: each is conditioned on its own marker), then the
    /// inventory's marker, unless the SKU items record the progress ([`InventoryMarker`]) and
    /// the run's last commit is in one of them.
    async fn write(self, target: &Target<'_>) -> Result<(), ProjectionError> {
        let Some((index, last)) = self.last else {
            return Ok(());
        };
        let applied_before = self.applied_before;
        futures::future::try_join_all(self.skus.iter().map(|(sku, (folded, own))| async move {
            // As of the last commit that touched the SKU, as one by one it would be.
            let Some(latest) = own.last() else {
                return Ok(());
            };
            let written = write_sku(
                target,
                latest.index,
                latest.commit,
                applied_before,
                sku,
                folded,
            );
            match written.await {
                Ok(Written::Yes) => Ok(()),
                Err(failure) if failure.is_transient() => Err(failure),
                // The item holds part of the run, or DynamoDB refused the folded write for
                // good: commit by commit, so that a refusal names its own commit.
                Ok(Written::ConditionFailed(_)) | Err(_) => {
                    commit_by_commit(target, sku, own).await
                }
            }
        }))
        .await?;
        if target.inventory_marker == InventoryMarker::Item || !self.last_in_sku_items {
            advance_marker(target, index, last, applied_before).await?;
        }
        Ok(())
    }
}

/// Writes one SKU's changes `own` one commit after the other, each skipped where the item
/// holds it already (its condition fails).
async fn commit_by_commit(
    target: &Target<'_>,
    sku: &str,
    own: &[CommitChange<'_>],
) -> Result<(), ProjectionError> {
    for commit in own {
        let index = commit.index;
        // Either outcome is right: written now, or held already.
        let _ = write_sku(
            target,
            index,
            commit.commit,
            commit.applied,
            sku,
            &commit.change,
        )
        .await?;
    }
    Ok(())
}

/// The marker item's sort key.
pub(super) const MARKER_SORT_KEY: &str = "INVENTORY";

fn fold(changes: &mut BTreeMap<String, SkuChange>, event: &InventoryEvent, at: OffsetDateTime) {
    fn change<'a>(
        changes: &'a mut BTreeMap<String, SkuChange>,
        sku: &domain::Sku,
    ) -> &'a mut SkuChange {
        changes.entry(sku.to_string()).or_default()
    }
    match event {
        InventoryEvent::StockSet {
            sku,
            on_hand,
            low_stock_threshold,
            ..
        } => {
            let change = change(changes, sku);
            change.on_hand = Some(i64::from(*on_hand));
            change.on_hand_delta = 0;
            change.threshold = Some(*low_stock_threshold);
        }
        InventoryEvent::StockRestocked { sku, quantity } => {
            change(changes, sku).add_on_hand(i64::from(*quantity));
        }
        InventoryEvent::StockAdjusted { sku, delta, .. } => {
            change(changes, sku).add_on_hand(i64::from(*delta));
        }
        InventoryEvent::StockReserved { lines, .. } => {
            for line in lines {
                change(changes, &line.sku).reserved_delta += i64::from(line.quantity.get());
            }
        }
        InventoryEvent::ReservationReleased { lines, .. } => {
            for line in lines {
                change(changes, &line.sku).reserved_delta -= i64::from(line.quantity.get());
            }
        }
        InventoryEvent::ReservationCommitted { lines, .. } => {
            for line in lines {
                let change = change(changes, &line.sku);
                change.reserved_delta -= i64::from(line.quantity.get());
                change.add_on_hand(-i64::from(line.quantity.get()));
            }
        }
        InventoryEvent::LowStockWarningRaised {
            sku,
            available,
            threshold,
        } => {
            let change = change(changes, sku);
            change.warning = Some(Warning::Raised {
                available: *available,
                at,
            });
            change.threshold = Some(*threshold);
        }
        InventoryEvent::ReorderRequested {
            sku,
            suggested_quantity,
            reorder_number,
        } => {
            let change = change(changes, sku);
            change.reorder = Some(Suggestion::Set(*suggested_quantity));
            // A 1.0 suggestion (number 0) opened no reorder.
            if *reorder_number > 0 {
                change.open_reorder = Some(OpenReorder::Opened {
                    number: *reorder_number,
                    quantity: *suggested_quantity,
                    at,
                });
            }
        }
        InventoryEvent::DeliveryReceived { sku, quantity, .. } => {
            let change = change(changes, sku);
            change.add_on_hand(i64::from(*quantity));
            change.open_reorder = Some(OpenReorder::Delivered);
        }
        InventoryEvent::LowStockWarningCleared { sku, available } => {
            let change = change(changes, sku);
            change.warning = Some(Warning::Cleared {
                available: *available,
            });
            change.reorder = Some(Suggestion::Removed);
        }
    }
}

fn key(store_id: &str, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(format!("STORE#{store_id}"))),
        ("sk".to_owned(), s(sk)),
    ])
}

/// Reads the inventory's [`Progress`]: the marker item's `last_sequence` and the highest
/// `applied_sequence` of its SKU items (one query of the store's items from `INVENTORY` on,
/// which sorts before every `SKU#`).
async fn load_progress(
    target: &Target<'_>,
    index: usize,
    store_id: &str,
) -> Result<Progress, ProjectionError> {
    let mut complete = 0;
    let mut seen = 0;
    let mut start = None;
    loop {
        let output = target
            .client
            .query()
            .table_name(&target.tables.stores)
            .key_condition_expression("#pk = :pk AND #sk >= :from")
            .projection_expression("#sk, last_sequence, applied_sequence")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_values(":pk", s(format!("STORE#{store_id}")))
            .expression_attribute_values(":from", s(MARKER_SORT_KEY))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| dynamodb_failure(index, e))?;
        target
            .usage
            .read(ViewItem::InventoryMarker, output.consumed_capacity());
        for item in output.items() {
            let number = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match item.get("sk").and_then(|v| v.as_s().ok()) {
                Some(sk) if sk == MARKER_SORT_KEY => complete = number("last_sequence"),
                Some(sk) if sk.starts_with("SKU#") => seen = seen.max(number("applied_sequence")),
                _ => {}
            }
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    Ok(Progress {
        complete,
        seen: seen.max(complete),
    })
}

/// Writes `change` as of `commit` (the last one it holds) on the condition that the SKU item
/// holds nothing after `applied`; `ConditionFailed` when it does.
async fn write_sku(
    target: &Target<'_>,
    index: usize,
    commit: &LoggedCommit,
    applied: u64,
    sku: &str,
    change: &SkuChange,
) -> Result<Written, ProjectionError> {
    let mut update = Update::default();
    update.set("store_id", s(&commit.aggregate_id));
    update.set("sku", s(sku));
    update.set("applied_sequence", n(commit.last_sequence()));
    update.set("updated_at", s(sortable_time(commit.committed_at)));
    match change.on_hand {
        Some(on_hand) => update.set("on_hand", n(on_hand)),
        None => update.add("on_hand", n(change.on_hand_delta)),
    }
    update.add("reserved", n(change.reserved_delta));
    if let Some(threshold) = change.threshold {
        update.set("low_stock_threshold", n(threshold));
    }
    match change.warning {
        Some(Warning::Raised { available, at, .. }) => {
            update.set("low_stock", AttributeValue::Bool(true));
            update.set("low_stock_available", n(available));
            update.set("low_stock_since", s(sortable_time(at)));
        }
        Some(Warning::Cleared { available }) => {
            update.set("low_stock", AttributeValue::Bool(false));
            update.set("low_stock_available", n(available));
            update.remove("low_stock_since");
        }
        None => {}
    }
    match change.reorder {
        Some(Suggestion::Set(quantity)) => update.set("reorder_suggested", n(quantity)),
        Some(Suggestion::Removed) => update.remove("reorder_suggested"),
        None => {}
    }
    // The open reorder outlives the warning (stock corrected above the threshold before the
    // delivery): only its delivery closes it.
    match change.open_reorder {
        Some(OpenReorder::Opened {
            number,
            quantity,
            at,
        }) => {
            update.set("open_reorder_number", n(number));
            update.set("open_reorder_quantity", n(quantity));
            update.set("open_reorder_since", s(sortable_time(at)));
        }
        Some(OpenReorder::Delivered) => {
            update.remove("open_reorder_number");
            update.remove("open_reorder_quantity");
            update.remove("open_reorder_since");
        }
        None => {}
    }
    let marker = update.name("applied_sequence");
    let expected = update.value(n(applied));
    let condition = format!("attribute_not_exists({marker}) OR {marker} <= {expected}");
    update
        .try_send(
            target,
            &target.tables.stores,
            key(&commit.aggregate_id, format!("SKU#{sku}")),
            condition,
            index,
        )
        .await
}

async fn advance_marker(
    target: &Target<'_>,
    index: usize,
    commit: &LoggedCommit,
    applied: u64,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.set("store_id", s(&commit.aggregate_id));
    update.set("last_sequence", n(commit.last_sequence()));
    // At most, not equal: with the SKU items recording the progress, the marker may stand
    // behind what was read. One past it means another writer moved the inventory on.
    let marker = update.name("last_sequence");
    let expected = update.value(n(applied));
    let condition = format!("attribute_not_exists({marker}) OR {marker} <= {expected}");
    update
        .send(
            target,
            &target.tables.stores,
            key(&commit.aggregate_id, MARKER_SORT_KEY.into()),
            condition,
            OnConditionFailed::MarkerMoved,
            index,
        )
        .await
}
