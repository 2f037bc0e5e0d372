//! Comparing the live active-orders view with a rebuild, item by item, streaming.
//!
//! Each side is scanned a page at a time and the page's keys are looked up on the other side
//! (BatchGetItem), so memory holds a page, the differences listed and the keys to re-check,
//! never a whole table. Not every disagreement is a fault of the live view:
//!
//! - **expired**: an ended order's tombstone past its `expires_at` is deleted from the live
//!   table by DynamoDB's TTL (within days of expiry), while the rebuild has just written it;
//!   such an item missing on the live side is skipped;
//! - **moving**: the live projector applies new commits while verify runs, and the rebuild
//!   reflects the store as of its end. An item whose marker differs between the sides (an
//!   order's `last_sequence`; a stock item's `applied_sequence`, the last inventory commit that
//!   touched it; the per-order entries of a metrics item) is not compared at first but
//!   re-checked: the rebuild
//!   is caught up with the store again, then verify waits ([`VerifyOptions::recheck_after`])
//!   so the live projector can apply what the rebuild has, then reads both sides again. An
//!   item where the live side is then *ahead* (commits newer than the catch-up) is skipped and
//!   reported; one where the live side is still *behind* or missing is a difference: the
//!   projector had the wait to apply it (a projector lagging more than that also trips the
//!   consumer-lag alarm).
//!
//! Items whose markers agree must be equal, and are reported when they are not. A store's
//! `INVENTORY` item is not compared here (the strict [`compare_tables`] does): it records how
//! far a writer got, not the view, and a writer that records that in the stock items
//! (`dynamodb.inventory_marker = sku_items`) leaves none or an older one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use read_models::ActiveOrdersTables;

use crate::error::ReplayError;
use crate::verify::{Comparison, Skipped, TableDifference};

/// How many items of a table's differences, and of each skip reason, are listed (all are
/// counted).
pub const LISTED: usize = 50;
/// Most keys held for the re-check; beyond it, moving items are skipped at once.
const RECHECK_LIMIT: usize = 100_000;
/// Keys per BatchGetItem (DynamoDB's limit).
const BATCH_GET: usize = 100;

/// How [`compare_views`] judges what the sides cannot agree on yet.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Unix seconds the TTL check uses; `None`: no item counts as expired.
    pub now: Option<i64>,
    /// How long to wait before re-checking moving items; `None`: no re-check, moving items are
    /// differences (a strict compare of two still views).
    pub recheck_after: Option<Duration>,
    /// Items per scan page (DynamoDB returns at most 1 MB a page anyway).
    pub page_size: i32,
}

impl Default for VerifyOptions {
    /// The live view against a rebuild: TTL as of now, a re-check after five seconds.
    fn default() -> Self {
        Self {
            now: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
            recheck_after: Some(Duration::from_secs(5)),
            page_size: 500,
        }
    }
}

/// Compares `left` and `right` table by table (`orders`, `stores`), strictly: every item as a
/// canonical text (attributes sorted by name), listing the items on one side only.
pub async fn compare_tables(
    client: &Client,
    left: &ActiveOrdersTables,
    right: &ActiveOrdersTables,
) -> Result<Comparison, ReplayError> {
    let strict = VerifyOptions {
        now: None,
        recheck_after: None,
        page_size: 500,
    };
    compare_views(client, left, right, &strict, || async { Ok(()) }).await
}

type Item = HashMap<String, AttributeValue>;

/// Why an item pair was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    Expired,
    Moving,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::Expired => {
                "ended orders past their TTL (expires_at): DynamoDB has deleted them from the \
                 live table, the rebuild has them"
            }
            Skip::Moving => {
                "still moving after the re-check: the live view holds commits newer than the \
                 rebuild's last catch-up (orders changing while verify ran)"
            }
        }
    }
}

/// Compares the live view `live` with the rebuild `rebuilt` (see the module documentation).
/// `catch_up` brings the rebuild up to the store's end again before the re-check.
pub async fn compare_views<F, Fut>(
    client: &Client,
    live: &ActiveOrdersTables,
    rebuilt: &ActiveOrdersTables,
    options: &VerifyOptions,
    catch_up: F,
) -> Result<Comparison, ReplayError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), ReplayError>>,
{
    let mut tables = Vec::new();
    for (role, left, right) in [
        ("orders", &live.orders, &rebuilt.orders),
        ("stores", &live.stores, &rebuilt.stores),
    ] {
        let mut pass = TablePass::new(role, left, right);
        pass.scan(client, options, Side::Left).await?;
        pass.scan(client, options, Side::Right).await?;
        tables.push(pass);
    }
    let pending: usize = tables.iter().map(|t| t.moving.len()).sum();
    if pending > 0 {
        if let Some(wait) = options.recheck_after {
            catch_up().await?;
            tokio::time::sleep(wait).await;
            for pass in &mut tables {
                pass.recheck(client, options).await?;
            }
        }
    }
    let mut comparison = Comparison {
        tables_compared: tables.len(),
        differences: Vec::new(),
        skipped: Vec::new(),
    };
    let mut skipped: BTreeMap<Skip, Skipped> = BTreeMap::new();
    for pass in tables {
        for (skip, count, examples) in pass.skipped() {
            let entry = skipped.entry(skip).or_insert_with(|| Skipped {
                reason: skip.reason().to_owned(),
                count: 0,
                examples: Vec::new(),
            });
            entry.count += count;
            for example in examples {
                if entry.examples.len() < LISTED {
                    entry.examples.push(example);
                }
            }
        }
        if let Some(difference) = pass.difference() {
            comparison.differences.push(difference);
        }
    }
    comparison.skipped = skipped.into_values().collect();
    Ok(comparison)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The live table.
    Left,
    /// The rebuilt table.
    Right,
}

/// One table pair's comparison, accumulated page by page.
struct TablePass<'a> {
    role: &'static str,
    left: &'a str,
    right: &'a str,
    left_rows: i64,
    right_rows: i64,
    only_left: Vec<String>,
    only_right: Vec<String>,
    differing: u64,
    moving: Vec<Item>,
    skipped: BTreeMap<Skip, (u64, Vec<String>)>,
}

impl<'a> TablePass<'a> {
    fn new(role: &'static str, left: &'a str, right: &'a str) -> Self {
        Self {
            role,
            left,
            right,
            left_rows: 0,
            right_rows: 0,
            only_left: Vec::new(),
            only_right: Vec::new(),
            differing: 0,
            moving: Vec::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// Scans `side`'s table and looks each page's keys up on the other side. The left scan
    /// judges every pair and every left-only item; the right scan only the right-only items.
    async fn scan(
        &mut self,
        client: &Client,
        options: &VerifyOptions,
        side: Side,
    ) -> Result<(), ReplayError> {
        let (table, other) = match side {
            Side::Left => (self.left, self.right),
            Side::Right => (self.right, self.left),
        };
        let mut start: Option<Item> = None;
        loop {
            let page = client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .limit(options.page_size.max(1))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| ReplayError::dynamodb(table, e))?;
            let items = page.items().to_vec();
            match side {
                Side::Left => self.left_rows += items.len() as i64,
                Side::Right => self.right_rows += items.len() as i64,
            }
            let found = batch_get(client, other, items.iter().map(key_of).collect()).await?;
            for item in items {
                let counterpart = found.get(&key_text(&key_of(&item)));
                match (side, counterpart) {
                    (Side::Left, counterpart) => {
                        self.judge(options, Some(&item), counterpart, true)?
                    }
                    (Side::Right, None) => self.judge(options, None, Some(&item), true)?,
                    (Side::Right, Some(_)) => {}
                }
            }
            match page.last_evaluated_key() {
                Some(next) if !next.is_empty() => start = Some(next.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// Judges one pair (either side may be missing). `first_look`: a moving pair is held for
    /// the re-check; otherwise (the re-check itself) it is skipped.
    fn judge(
        &mut self,
        options: &VerifyOptions,
        left: Option<&Item>,
        right: Option<&Item>,
        first_look: bool,
    ) -> Result<(), ReplayError> {
        if options.recheck_after.is_some() && sort_key(left.or(right)) == "INVENTORY" {
            return Ok(());
        }
        if let (Some(left), Some(right)) = (left, right) {
            if item_text(left) == item_text(right) {
                return Ok(());
            }
        }
        if left.is_none() && right.is_some_and(|item| expired(item, options.now)) {
            self.skip(Skip::Expired, right);
            return Ok(());
        }
        if options.recheck_after.is_some() {
            match markers(left, right) {
                Markers::Same => {}
                _ if first_look && self.moving.len() < RECHECK_LIMIT => {
                    let key = key_of(left.or(right).unwrap_or(&Item::new()));
                    self.moving.push(key);
                    return Ok(());
                }
                Markers::LiveAhead => {
                    self.skip(Skip::Moving, left.or(right));
                    return Ok(());
                }
                // Still behind after the wait: judged as it stands.
                Markers::LiveBehind => {}
            }
        }
        self.differing += 1;
        if let Some(left) = left {
            if self.only_left.len() < LISTED {
                self.only_left.push(item_text(left));
            }
        }
        if let Some(right) = right {
            if self.only_right.len() < LISTED {
                self.only_right.push(item_text(right));
            }
        }
        Ok(())
    }

    fn skip(&mut self, why: Skip, item: Option<&Item>) {
        let entry = self.skipped.entry(why).or_default();
        entry.0 += 1;
        if let Some(item) = item {
            if entry.1.len() < LISTED {
                entry.1.push(item_text(&key_of(item)));
            }
        }
    }

    /// Reads the held keys again on both sides and judges them once more.
    async fn recheck(
        &mut self,
        client: &Client,
        options: &VerifyOptions,
    ) -> Result<(), ReplayError> {
        let keys = std::mem::take(&mut self.moving);
        for chunk in keys.chunks(BATCH_GET) {
            let left = batch_get(client, self.left, chunk.to_vec()).await?;
            let right = batch_get(client, self.right, chunk.to_vec()).await?;
            for key in chunk {
                let text = key_text(key);
                self.judge(options, left.get(&text), right.get(&text), false)?;
            }
        }
        Ok(())
    }

    fn skipped(&self) -> Vec<(Skip, u64, Vec<String>)> {
        self.skipped
            .iter()
            .map(|(skip, (count, examples))| (*skip, *count, examples.clone()))
            .collect()
    }

    fn difference(&self) -> Option<TableDifference> {
        (self.differing > 0).then(|| TableDifference {
            table: self.role.to_owned(),
            left_rows: Some(self.left_rows),
            right_rows: Some(self.right_rows),
            only_in_left: self.only_left.clone(),
            only_in_right: self.only_right.clone(),
        })
    }
}

/// Where an aggregate stands on the live side against the rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markers {
    Same,
    /// The live side holds commits the rebuild does not (newer than its catch-up).
    LiveAhead,
    /// The live side lacks commits the rebuild holds (lag, or loss).
    LiveBehind,
}

impl Markers {
    fn of(live: u64, rebuilt: u64) -> Markers {
        match live.cmp(&rebuilt) {
            std::cmp::Ordering::Equal => Markers::Same,
            std::cmp::Ordering::Greater => Markers::LiveAhead,
            std::cmp::Ordering::Less => Markers::LiveBehind,
        }
    }
}

/// A number attribute (a marker); missing: 0, nothing applied.
/// Where the pair's item stands on the live side against the rebuild.
fn markers(left: Option<&Item>, right: Option<&Item>) -> Markers {
    let sk = sort_key(left.or(right));
    let marker = |item: Option<&Item>, name: &str| number(item.and_then(|i| i.get(name)));
    if sk == "ORDER" {
        return Markers::of(
            marker(left, "last_sequence"),
            marker(right, "last_sequence"),
        );
    }
    if sk.starts_with("SKU#") {
        return Markers::of(
            marker(left, "applied_sequence"),
            marker(right, "applied_sequence"),
        );
    }
    if sk.starts_with("DAY#") {
        return metrics_markers(left, right);
    }
    Markers::Same
}

/// The item's sort key (empty for none).
fn sort_key(item: Option<&Item>) -> &str {
    item.and_then(|item| item.get("sk"))
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

fn number(value: Option<&AttributeValue>) -> u64 {
    value
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A metrics item's markers: its per-order entries (`order#<id>` = last sequence counted) and
/// its `ended` set. Behind when the live side lacks or trails any order the rebuild counted,
/// ahead when it only has more.
fn metrics_markers(live: Option<&Item>, rebuilt: Option<&Item>) -> Markers {
    let entries = |item: Option<&Item>| -> BTreeMap<String, u64> {
        item.into_iter()
            .flatten()
            .filter(|(name, _)| name.starts_with("order#"))
            .map(|(name, value)| (name.clone(), number(Some(value))))
            .collect()
    };
    let ended = |item: Option<&Item>| -> Vec<String> {
        item.and_then(|i| i.get("ended"))
            .and_then(|v| v.as_ns().ok())
            .cloned()
            .unwrap_or_default()
    };
    let (live_entries, rebuilt_entries) = (entries(live), entries(rebuilt));
    let (live_ended, rebuilt_ended) = (ended(live), ended(rebuilt));
    if live_entries == rebuilt_entries && {
        let (mut a, mut b) = (live_ended.clone(), rebuilt_ended.clone());
        a.sort();
        b.sort();
        a == b
    } {
        return Markers::Same;
    }
    // An order the rebuild ended and the live side did not, or counted further: behind. An
    // entry the live side lacks is behind too, unless the live side ended orders the rebuild
    // has not (then it may be that one, moved on to its fingerprint).
    let live_ended_more = live_ended.iter().any(|f| !rebuilt_ended.contains(f));
    let behind = rebuilt_ended.iter().any(|f| !live_ended.contains(f))
        || rebuilt_entries
            .iter()
            .any(|(order, sequence)| match live_entries.get(order) {
                Some(live) => live < sequence,
                None => !live_ended_more,
            });
    if behind {
        Markers::LiveBehind
    } else {
        Markers::LiveAhead
    }
}

/// Past its TTL: `expires_at` (unix seconds) before `now`.
fn expired(item: &Item, now: Option<i64>) -> bool {
    let Some(now) = now else {
        return false;
    };
    item.get("expires_at")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|at| at < now)
}

fn key_of(item: &Item) -> Item {
    item.iter()
        .filter(|(name, _)| name.as_str() == "pk" || name.as_str() == "sk")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn key_text(key: &Item) -> String {
    item_text(key)
}

/// The items of `table` at `keys`, by key text (strongly consistent; unprocessed keys are
/// asked again with backoff).
async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
) -> Result<HashMap<String, Item>, ReplayError> {
    let mut found = HashMap::new();
    for chunk in keys.chunks(BATCH_GET) {
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build()
                .map_err(|e| ReplayError::DynamoDb {
                    table: table.to_owned(),
                    source: e.into(),
                })?,
        );
        let mut pause = Duration::from_millis(50);
        while let Some(request) = pending.take() {
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| ReplayError::dynamodb(table, e))?;
            for item in output
                .responses()
                .and_then(|r| r.get(table))
                .into_iter()
                .flatten()
            {
                found.insert(key_text(&key_of(item)), item.clone());
            }
            pending = output
                .unprocessed_keys()
                .and_then(|left| left.get(table))
                .filter(|left| !left.keys().is_empty())
                .cloned();
            if pending.is_some() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
    Ok(found)
}

/// An item as text that does not depend on the SDK's map order: `{name: value, ...}` by name.
fn item_text(item: &HashMap<String, AttributeValue>) -> String {
    let sorted: BTreeMap<&String, &AttributeValue> = item.iter().collect();
    let fields: Vec<String> = sorted
        .into_iter()
        .map(|(name, value)| format!("{name}: {}", value_text(value)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

fn value_text(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(text) => format!("{text:?}"),
        AttributeValue::N(number) => number.clone(),
        AttributeValue::Bool(flag) => flag.to_string(),
        AttributeValue::Null(_) => "null".to_owned(),
        AttributeValue::M(map) => item_text(map),
        AttributeValue::L(list) => {
            let entries: Vec<String> = list.iter().map(value_text).collect();
            format!("[{}]", entries.join(", "))
        }
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => {
            let mut sorted = set.clone();
            sorted.sort();
            format!("<{}>", sorted.join(", "))
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_text_is_independent_of_attribute_order() {
        let item = |pairs: &[(&str, AttributeValue)]| -> HashMap<String, AttributeValue> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let a = item(&[
            ("pk", AttributeValue::S("ORDER#1".into())),
            ("last_sequence", AttributeValue::N("3".into())),
            (
                "lines",
                AttributeValue::L(vec![AttributeValue::S("latte".into())]),
            ),
        ]);
        let b = item(&[
            (
                "lines",
                AttributeValue::L(vec![AttributeValue::S("latte".into())]),
            ),
            ("last_sequence", AttributeValue::N("3".into())),
            ("pk", AttributeValue::S("ORDER#1".into())),
        ]);
        assert_eq!(item_text(&a), item_text(&b));
        assert_eq!(
            item_text(&a),
            r#"{last_sequence: 3, lines: ["latte"], pk: "ORDER#1"}"#
        );
    }
}
