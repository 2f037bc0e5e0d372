//! The lease table: one item per projection and shard (`lease_key` = `<projection>#<shard_id>`)
//! holding its owner, a counter, the checkpoint and the parent shards.
//!
//! Leases are counter-based, as in the Kinesis Client Library: the owner renews by incrementing
//! `lease_counter`; another worker that sees the counter stand still for the lease duration
//! (measured on its own clock, so no clock needs to agree) may take the lease. Every write is
//! one `UpdateItem`/`PutItem` conditioned on the counter it last saw (and the owner), and
//! increments the counter, so of two writers racing on one lease exactly one wins. No write
//! needs a transaction, which dynalite lacks.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_support::resources::TableResource;
use aws_support::tables::{CreateTableError, KeyAttribute, TableShape};

use crate::kinesis::ShardInfo;
use crate::RuntimeError;
use aws_support::AwsCallError;

const TRIM_HORIZON: &str = "TRIM_HORIZON";
const SHARD_END: &str = "SHARD_END";

/// A Kinesis sequence number. Real ones have up to 56 digits, more than any integer type holds,
/// so they stay text and order by (length, text), which is numeric order for digit strings
/// without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Wraps a sequence number as Kinesis returned it.
    pub fn new(digits: impl Into<String>) -> Self {
        Self(digits.into())
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.len(), &self.0).cmp(&(other.0.len(), &other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How far a projection has read a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing read yet: start at the oldest record.
    TrimHorizon,
    /// Every record up to and including this one is applied.
    After(SequenceNumber),
    /// The shard is closed and read to its end; its children may start.
    ShardEnd,
}

impl Checkpoint {
    fn parse(text: &str) -> Option<Self> {
        match text {
            TRIM_HORIZON => Some(Self::TrimHorizon),
            SHARD_END => Some(Self::ShardEnd),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Self::After(SequenceNumber::new(digits)))
            }
            _ => None,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::TrimHorizon => TRIM_HORIZON,
            Self::After(sequence) => sequence.as_str(),
            Self::ShardEnd => SHARD_END,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The projection (the consumer group).
    pub projection: String,
    /// The shard.
    pub shard_id: String,
    /// The worker holding it; `None` when free.
    pub owner: Option<String>,
    /// Incremented by every write; a counter that stands still means a dead owner.
    pub counter: u64,
    /// How far the projection has read the shard.
    pub checkpoint: Checkpoint,
    /// The shards this one was split or merged from.
    pub parent_shard_ids: Vec<String>,
    /// How far behind the shard's tip the owner was at its last write, if it reported it.
    pub millis_behind_latest: Option<i64>,
}

impl Lease {
    /// `<projection>#<shard_id>`: the table's key.
    pub fn key(&self) -> String {
        lease_key(&self.projection, &self.shard_id)
    }
}

/// The key of a projection's lease on a shard.
pub fn lease_key(projection: &str, shard_id: &str) -> String {
    format!("{projection}#{shard_id}")
}

/// Why a conditional lease write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease changed since it was read (renewed, taken, checkpointed by another worker):
    /// whoever wrote it owns it now.
    #[error("the lease changed under us (another worker holds it)")]
    Lost,
    /// The call failed.
    #[error(transparent)]
    Call(#[from] AwsCallError),
}

/// The DynamoDB lease table.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: Client,
    table: String,
}

impl LeaseTable {
    /// The table's key schema: partition key `lease_key` (`<projection>#<shard_id>`).
    pub const SHAPE: TableShape = TableShape {
        hash: KeyAttribute::string("lease_key"),
        range: None,
        indexes: &[],
    };

    /// The lease table, as the local stack and the deployment create it (settings key
    /// `dynamodb.leases_table`, shared by every log-consuming process).
    pub const RESOURCE: TableResource = TableResource {
        name: "projector-leases",
        settings_key: "dynamodb.leases_table",
        shape: Self::SHAPE,
        time_to_live: None,
    };

    /// Creates the lease table `table` ([`LeaseTable::SHAPE`]) unless it exists, and waits
    /// until it is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), CreateTableError> {
        Self::SHAPE.create(client, table).await
    }

    /// The table `table` (partition key `lease_key`, a string).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Creates a free lease at TRIM_HORIZON for `shard` unless one exists; `true` if created.
    pub async fn create_if_absent(
        &self,
        projection: &str,
        shard: &ShardInfo,
    ) -> Result<bool, AwsCallError> {
        let parents = shard
            .parent_shard_ids
            .iter()
            .map(|id| AttributeValue::S(id.clone()))
            .collect();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                "lease_key",
                AttributeValue::S(lease_key(projection, &shard.shard_id)),
            )
            .item("projection", AttributeValue::S(projection.to_owned()))
            .item("shard_id", AttributeValue::S(shard.shard_id.clone()))
            .item("lease_counter", AttributeValue::N("0".into()))
            .item("checkpoint", AttributeValue::S(TRIM_HORIZON.into()))
            .item("parent_shard_ids", AttributeValue::L(parents))
            .condition_expression("attribute_not_exists(lease_key)")
            .send()
            .await;
        aws_support::written("dynamodb:PutItem", result)
    }

    /// Every lease of every projection (a strongly consistent scan: the table holds one item
    /// per projection and shard, a few hundred at most).
    pub async fn list(&self) -> Result<Vec<Lease>, RuntimeError> {
        let mut leases = Vec::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| AwsCallError::from_sdk("dynamodb:Scan", e))?;
            for item in page.items() {
                leases.push(parse_lease(item)?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => break,
            }
        }
        leases.sort_by(|a, b| (&a.projection, &a.shard_id).cmp(&(&b.projection, &b.shard_id)));
        Ok(leases)
    }

    /// Takes `lease` (free, expired, or stolen) for `owner`, if nobody wrote it since it was
    /// read.
    pub async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("lease_key", AttributeValue::S(lease.key()))
            .update_expression("SET lease_owner = :owner, lease_counter = lease_counter + :one")
            .condition_expression("lease_counter = :counter")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":counter", counter_value(lease.counter))
            .send()
            .await
            .map_err(|e| conditional("dynamodb:UpdateItem(take)", e))?;
        Ok(Lease {
            owner: Some(owner.to_owned()),
            counter: lease.counter + 1,
            ..lease.clone()
        })
    }

    /// Renews a held lease, recording how far behind its consumer is.
    pub async fn renew(
        &self,
        lease: &Lease,
        millis_behind_latest: Option<i64>,
    ) -> Result<Lease, LeaseError> {
        let mut request = self
            .owned_write(lease)
            .update_expression(match millis_behind_latest {
                Some(_) => {
                    "SET lease_counter = lease_counter + :one, millis_behind_latest = :behind"
                }
                None => "SET lease_counter = lease_counter + :one",
            });
        if let Some(behind) = millis_behind_latest {
            request = request
                .expression_attribute_values(":behind", AttributeValue::N(behind.to_string()));
        }
        request
            .send()
            .await
            .map_err(|e| conditional("dynamodb:UpdateItem(renew)", e))?;
        Ok(Lease {
            counter: lease.counter + 1,
            millis_behind_latest: millis_behind_latest.or(lease.millis_behind_latest),
            ..lease.clone()
        })
    }

    /// Records `checkpoint` on a held lease.
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: Checkpoint,
        millis_behind_latest: Option<i64>,
    ) -> Result<Lease, LeaseError> {
        let behind = millis_behind_latest
            .or(lease.millis_behind_latest)
            .unwrap_or(0);
        self.owned_write(lease)
            .update_expression(
                "SET checkpoint = :checkpoint, millis_behind_latest = :behind, \
                 lease_counter = lease_counter + :one",
            )
            .expression_attribute_values(":checkpoint", AttributeValue::S(checkpoint.to_string()))
            .expression_attribute_values(":behind", AttributeValue::N(behind.to_string()))
            .send()
            .await
            .map_err(|e| conditional("dynamodb:UpdateItem(checkpoint)", e))?;
        Ok(Lease {
            counter: lease.counter + 1,
            checkpoint,
            millis_behind_latest: Some(behind),
            ..lease.clone()
        })
    }

    /// Gives a held lease up (graceful shutdown), so another worker takes it at once instead of
    /// waiting for it to expire.
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.owned_write(lease)
            .update_expression("REMOVE lease_owner SET lease_counter = lease_counter + :one")
            .send()
            .await
            .map_err(|e| conditional("dynamodb:UpdateItem(release)", e))?;
        Ok(())
    }

    /// An update of a lease we hold: it applies only if nobody wrote the lease since our last
    /// write (same counter) and we still own it.
    fn owned_write(
        &self,
        lease: &Lease,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("lease_key", AttributeValue::S(lease.key()))
            .condition_expression("lease_counter = :counter AND lease_owner = :owner")
            .expression_attribute_values(":counter", counter_value(lease.counter))
            .expression_attribute_values(
                ":owner",
                AttributeValue::S(lease.owner.clone().unwrap_or_default()),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
    }
}

fn counter_value(counter: u64) -> AttributeValue {
    AttributeValue::N(counter.to_string())
}

fn conditional<R>(
    operation: &'static str,
    error: aws_support::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
) -> LeaseError
where
    R: fmt::Debug + Send + Sync + 'static,
{
    let error = AwsCallError::from_sdk(operation, error);
    if error.is_condition_failed() {
        LeaseError::Lost
    } else {
        LeaseError::Call(error)
    }
}

fn parse_lease(item: &HashMap<String, AttributeValue>) -> Result<Lease, RuntimeError> {
    let key = item
        .get("lease_key")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let malformed = |reason: &str| RuntimeError::MalformedLease {
        key: key.clone(),
        reason: reason.to_owned(),
    };
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let checkpoint_text = text("checkpoint").ok_or_else(|| malformed("no checkpoint"))?;
    Ok(Lease {
        projection: text("projection").ok_or_else(|| malformed("no projection"))?,
        shard_id: text("shard_id").ok_or_else(|| malformed("no shard_id"))?,
        owner: text("lease_owner"),
        counter: item
            .get("lease_counter")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed("no numeric lease_counter"))?,
        checkpoint: Checkpoint::parse(&checkpoint_text)
            .ok_or_else(|| malformed("checkpoint is not TRIM_HORIZON, SHARD_END or digits"))?,
        parent_shard_ids: item
            .get("parent_shard_ids")
            .and_then(|v| v.as_l().ok())
            .map(|parents| {
                parents
                    .iter()
                    .filter_map(|p| p.as_s().ok().cloned())
                    .collect()
            })
            .unwrap_or_default(),
        millis_behind_latest: item
            .get("millis_behind_latest")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_numerically_beyond_any_integer() {
        let small = SequenceNumber::new("9");
        let long = SequenceNumber::new("49590338271490256608559692538361571095921575989136588801");
        let longer_tail =
            SequenceNumber::new("49590338271490256608559692538361571095921575989136588802");
        assert!(small < long);
        assert!(long < longer_tail);
        assert_eq!(long.cmp(&long.clone()), Ordering::Equal);
    }

    #[test]
    fn checkpoints_round_trip_through_their_stored_text() {
        for checkpoint in [
            Checkpoint::TrimHorizon,
            Checkpoint::ShardEnd,
            Checkpoint::After(SequenceNumber::new("4959033827149025660855")),
        ] {
            assert_eq!(Checkpoint::parse(checkpoint.as_str()), Some(checkpoint));
        }
        assert_eq!(Checkpoint::parse("LATEST"), None);
        assert_eq!(Checkpoint::parse(""), None);
    }
}
