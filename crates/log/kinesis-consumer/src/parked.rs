//! Parked records: the commits of an aggregate that is stopped, kept in log order while every
//! other aggregate proceeds. An aggregate stops at a commit that fails deterministically
//! (poison, until an operator [redrives](crate::redrive) it) or at a commit this build
//! does not understand (until a build that knows its events resumes it, by a redrive or on its
//! own: [`crate::redrive::resume`]); every later commit of it parks behind that one.
//!
//! A DynamoDB table with partition key `parked_key` (`<projection>#<aggregate_type>#<aggregate_id>`,
//! a string) and sort key `position` (the commit's first global position, a number): a query
//! reads an aggregate's parked commits in log order. Every write is a single item.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_support::resources::TableResource;
use aws_support::tables::{CreateTableError, KeyAttribute, TableShape};
use commit_log::CommitHeader;

use crate::RuntimeError;
use aws_support::AwsCallError;

/// How long a consumer trusts "nothing parked" for an aggregate before asking the table again.
const CLEAR_FOR: Duration = Duration::from_secs(60);
/// The most aggregates a consumer remembers as clear (memory stays bounded on a busy shard).
const CLEAR_MAX: usize = 100_000;

/// The aggregates one shard consumer has found with nothing parked, so each batch asks the table
/// only about aggregates it has not seen lately: without it every projection made one query per
/// aggregate per batch, most of the view store's load. Only the consumer holding a shard's
/// lease parks that shard's aggregates, and it forgets an aggregate here when it parks one, so
/// the answer stays true for the lease's life; the periodic reset bounds what a consumer that
/// lost its lease without knowing could miss (and the projections' sequence checks catch a gap).
#[derive(Debug)]
pub(crate) struct ClearAggregates {
    keys: HashSet<String>,
    since: Instant,
}

impl Default for ClearAggregates {
    fn default() -> Self {
        Self {
            keys: HashSet::new(),
            since: Instant::now(),
        }
    }
}

impl ClearAggregates {
    /// Whether `key` (a [`parked_key`]) was found clear lately.
    pub(crate) fn is_clear(&mut self, key: &str) -> bool {
        if self.since.elapsed() > CLEAR_FOR || self.keys.len() > CLEAR_MAX {
            *self = Self::default();
        }
        self.keys.contains(key)
    }

    /// `key` has nothing parked.
    pub(crate) fn found_clear(&mut self, key: String) {
        self.keys.insert(key);
    }

    /// `key` has something parked now.
    pub(crate) fn parked(&mut self, key: &str) {
        self.keys.remove(key);
    }
}

/// Why a commit is parked; the head of an aggregate's queue says what resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParkedKind {
    /// It failed deterministically (also in the dead-letter queue): an operator fixes the
    /// cause and redrives.
    Poison,
    /// This build does not understand its events (a writer deployed before its readers): a
    /// build that does resumes it.
    NotUnderstood,
    /// An earlier commit of its aggregate is parked; at the head of the queue (its predecessor
    /// was applied by a redrive that had already read the queue) it is resumed automatically.
    Behind,
}

impl ParkedKind {
    /// Its name in the table and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkedKind::Poison => "poison",
            ParkedKind::NotUnderstood => "not_understood",
            ParkedKind::Behind => "behind",
        }
    }

    fn parse(kind: Option<&str>, reason: &str) -> Self {
        match kind {
            Some("not_understood") => ParkedKind::NotUnderstood,
            Some("behind") => ParkedKind::Behind,
            Some(_) => ParkedKind::Poison,
            // Parked before kinds were recorded: the reason tells.
            None if reason == PARKED_BEHIND => ParkedKind::Behind,
            None => ParkedKind::Poison,
        }
    }
}

/// The reason of a commit parked behind an earlier one of its aggregate.
pub(crate) const PARKED_BEHIND: &str = "an earlier commit of this aggregate is parked";

/// One parked commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRecord {
    /// The projection that parked it.
    pub projection: String,
    /// Its aggregate type.
    pub aggregate_type: String,
    /// Its aggregate id.
    pub aggregate_id: String,
    /// Its first global position: parked commits are applied in this order.
    pub position: u64,
    /// Its last global position.
    pub last_position: u64,
    /// Its first and last sequence within the aggregate (0 for records parked before they were
    /// recorded).
    pub sequence_range: (u64, u64),
    /// The shard it was read from.
    pub shard_id: String,
    /// Its sequence number in that shard.
    pub sequence_number: String,
    /// What resumes it.
    pub kind: ParkedKind,
    /// Why it was parked (the poison reason, what this build does not understand, or that an
    /// earlier commit is parked).
    pub reason: String,
    /// The log record's bytes.
    pub data: Vec<u8>,
}

impl ParkedRecord {
    /// The parked record of the commit `header` describes, read as `data` from `shard_id` at
    /// `sequence_number`.
    pub fn new(
        projection: &str,
        header: &CommitHeader,
        shard_id: &str,
        sequence_number: &str,
        kind: ParkedKind,
        reason: String,
        data: Vec<u8>,
    ) -> Self {
        Self {
            projection: projection.to_owned(),
            aggregate_type: header.aggregate_type.clone(),
            aggregate_id: header.aggregate_id.clone(),
            position: header.first_position,
            last_position: header.last_position,
            sequence_range: (header.first_sequence, header.last_sequence),
            shard_id: shard_id.to_owned(),
            sequence_number: sequence_number.to_owned(),
            kind,
            reason,
            data,
        }
    }
}

/// The key an aggregate's parked commits share.
pub fn parked_key(projection: &str, aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{projection}#{aggregate_type}#{aggregate_id}")
}

/// The DynamoDB parked-records table.
#[derive(Debug, Clone)]
pub struct ParkedStore {
    client: Client,
    table: String,
}

impl ParkedStore {
    /// The table's key schema: partition key `parked_key` (a [`parked_key`]), sort key
    /// `position` (the commit's first global position), so a query reads an aggregate's parked
    /// commits in log order.
    pub const SHAPE: TableShape = TableShape {
        hash: KeyAttribute::string("parked_key"),
        range: Some(KeyAttribute::number("position")),
        indexes: &[],
    };

    /// The parked-records table, as the local stack and the deployment create it (settings key
    /// `dynamodb.parked_table`).
    pub const RESOURCE: TableResource = TableResource {
        name: "projector-parked",
        settings_key: "dynamodb.parked_table",
        shape: Self::SHAPE,
        time_to_live: None,
    };

    /// Creates the parked-records table `table` ([`ParkedStore::SHAPE`]) unless it exists, and
    /// waits until it is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), CreateTableError> {
        Self::SHAPE.create(client, table).await
    }

    /// The table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Parks `record`. Parking the same commit again (a batch redelivered after a crash) keeps
    /// the first copy and its reason.
    pub async fn park(&self, record: &ParkedRecord) -> Result<(), AwsCallError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                "parked_key",
                AttributeValue::S(parked_key(
                    &record.projection,
                    &record.aggregate_type,
                    &record.aggregate_id,
                )),
            )
            .item("position", AttributeValue::N(record.position.to_string()))
            .item(
                "last_position",
                AttributeValue::N(record.last_position.to_string()),
            )
            .item(
                "first_sequence",
                AttributeValue::N(record.sequence_range.0.to_string()),
            )
            .item(
                "last_sequence",
                AttributeValue::N(record.sequence_range.1.to_string()),
            )
            .item("projection", AttributeValue::S(record.projection.clone()))
            .item(
                "aggregate_type",
                AttributeValue::S(record.aggregate_type.clone()),
            )
            .item(
                "aggregate_id",
                AttributeValue::S(record.aggregate_id.clone()),
            )
            .item("shard_id", AttributeValue::S(record.shard_id.clone()))
            .item(
                "sequence_number",
                AttributeValue::S(record.sequence_number.clone()),
            )
            .item("kind", AttributeValue::S(record.kind.as_str().to_owned()))
            .item("reason", AttributeValue::S(record.reason.clone()))
            .item("record", AttributeValue::B(Blob::new(record.data.clone())))
            .condition_expression("attribute_not_exists(parked_key)")
            .send()
            .await;
        aws_support::written("dynamodb:PutItem(park)", result)?;
        Ok(())
    }

    /// Whether the aggregate has parked commits (a strongly consistent read, so a commit
    /// parked a moment ago by this process is seen).
    pub async fn has_parked(
        &self,
        projection: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<bool, AwsCallError> {
        let page = self
            .query_aggregate(projection, aggregate_type, aggregate_id)
            .limit(1)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("dynamodb:Query(parked)", e))?;
        Ok(page.count() > 0)
    }

    /// The aggregate's parked commits in log order.
    pub async fn list(
        &self,
        projection: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<ParkedRecord>, RuntimeError> {
        let mut records = Vec::new();
        let mut start_key = None;
        loop {
            let page = self
                .query_aggregate(projection, aggregate_type, aggregate_id)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| AwsCallError::from_sdk("dynamodb:Query(parked)", e))?;
            for item in page.items() {
                records.push(parse_parked(item)?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => return Ok(records),
            }
        }
    }

    /// A strongly consistent query of the aggregate's parked commits, in log order.
    fn query_aggregate(
        &self,
        projection: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("parked_key = :key")
            .expression_attribute_values(
                ":key",
                AttributeValue::S(parked_key(projection, aggregate_type, aggregate_id)),
            )
            .consistent_read(true)
            .scan_index_forward(true)
    }

    /// The aggregates (type, id) with parked commits for `projection`. A scan: the table holds
    /// only what is waiting for an operator.
    pub async fn aggregates(
        &self,
        projection: &str,
    ) -> Result<BTreeSet<(String, String)>, RuntimeError> {
        let mut aggregates = BTreeSet::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                // PROJECTION is a DynamoDB reserved word: it must go through a name placeholder.
                .filter_expression("#projection = :projection")
                .expression_attribute_names("#projection", "projection")
                .expression_attribute_values(":projection", AttributeValue::S(projection.into()))
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| AwsCallError::from_sdk("dynamodb:Scan(parked)", e))?;
            for item in page.items() {
                let record = parse_parked(item)?;
                aggregates.insert((record.aggregate_type, record.aggregate_id));
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => return Ok(aggregates),
            }
        }
    }

    /// Marks a parked commit as poison with `reason`: it was understood and applied, and failed
    /// deterministically, so only an operator's redrive will move it now.
    pub async fn mark_poison(
        &self,
        record: &ParkedRecord,
        reason: &str,
    ) -> Result<(), AwsCallError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(
                "parked_key",
                AttributeValue::S(parked_key(
                    &record.projection,
                    &record.aggregate_type,
                    &record.aggregate_id,
                )),
            )
            .key("position", AttributeValue::N(record.position.to_string()))
            .update_expression("SET #kind = :kind, reason = :reason")
            .condition_expression("attribute_exists(parked_key)")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(
                ":kind",
                AttributeValue::S(ParkedKind::Poison.as_str().to_owned()),
            )
            .expression_attribute_values(":reason", AttributeValue::S(reason.to_owned()))
            .send()
            .await;
        // Not written: applied and removed by someone else meanwhile, nothing to mark.
        aws_support::written("dynamodb:UpdateItem(parked)", result)?;
        Ok(())
    }

    /// Removes a parked commit once it is applied.
    pub async fn remove(&self, record: &ParkedRecord) -> Result<(), AwsCallError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(
                "parked_key",
                AttributeValue::S(parked_key(
                    &record.projection,
                    &record.aggregate_type,
                    &record.aggregate_id,
                )),
            )
            .key("position", AttributeValue::N(record.position.to_string()))
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("dynamodb:DeleteItem(parked)", e))?;
        Ok(())
    }
}

fn parse_parked(item: &HashMap<String, AttributeValue>) -> Result<ParkedRecord, RuntimeError> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| RuntimeError::MalformedParked(format!("no {name}")))
    };
    let reason = text("reason")?;
    // Absent from records parked before they were written.
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(ParkedRecord {
        last_position: number("last_position"),
        sequence_range: (number("first_sequence"), number("last_sequence")),
        kind: ParkedKind::parse(text("kind").ok().as_deref(), &reason),
        reason,
        projection: text("projection")?,
        aggregate_type: text("aggregate_type")?,
        aggregate_id: text("aggregate_id")?,
        position: item
            .get("position")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| RuntimeError::MalformedParked("no numeric position".into()))?,
        shard_id: text("shard_id")?,
        sequence_number: text("sequence_number")?,
        data: item
            .get("record")
            .and_then(|v| v.as_b().ok())
            .map(|blob| blob.as_ref().to_vec())
            .ok_or_else(|| RuntimeError::MalformedParked("no record".into()))?,
    })
}
