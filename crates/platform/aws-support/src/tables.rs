//! DynamoDB table shapes and their creation. Each table's key schema is declared once, as a
//! [`TableShape`] beside the code that reads and writes the table (`LeaseTable::SHAPE`,
//! `ParkedStore::SHAPE`, the active-orders view's, the views table's), and every table is
//! created by [`TableShape::create`]: by the binaries, by tests that need fresh tables of their
//! own, by the benchmarks. A [`crate::resources::TableResource`] names the table and carries its
//! shape into the generated manifest the local stack and the deployment (infra/cdk) read.

#[cfg(feature = "dynamodb")]
use std::error::Error;
#[cfg(feature = "dynamodb")]
use std::time::Duration;

#[cfg(feature = "dynamodb")]
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus,
};
#[cfg(feature = "dynamodb")]
use aws_sdk_dynamodb::Client;
use serde::Serialize;

/// How long [`TableShape::create`] waits for a table and its indexes to become active.
#[cfg(feature = "dynamodb")]
const ACTIVE_WITHIN: Duration = Duration::from_secs(60);

/// The type of a key attribute (serialized as DynamoDB's attribute type, `S` or `N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KeyKind {
    /// A string (`S`).
    #[serde(rename = "S")]
    String,
    /// A number (`N`).
    #[serde(rename = "N")]
    Number,
}

/// A key attribute: its name and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyAttribute {
    /// The attribute's name.
    pub name: &'static str,
    /// Its type.
    pub kind: KeyKind,
}

impl KeyAttribute {
    /// A string key attribute.
    pub const fn string(name: &'static str) -> Self {
        Self {
            name,
            kind: KeyKind::String,
        }
    }

    /// A numeric key attribute.
    pub const fn number(name: &'static str) -> Self {
        Self {
            name,
            kind: KeyKind::Number,
        }
    }
}

/// A global secondary index projecting every attribute, with string keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexShape {
    /// The index's name.
    pub name: &'static str,
    /// Its partition key.
    pub hash: &'static str,
    /// Its sort key.
    pub range: &'static str,
}

/// The key schema of a DynamoDB table (on-demand billing): what creating it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableShape {
    /// The partition key.
    pub hash: KeyAttribute,
    /// The sort key, if any.
    pub range: Option<KeyAttribute>,
    /// The global secondary indexes.
    pub indexes: &'static [IndexShape],
}

/// A table that could not be created or did not become active.
#[cfg(feature = "dynamodb")]
#[derive(Debug, thiserror::Error)]
#[error("cannot create the DynamoDB table {table}: {source}")]
pub struct CreateTableError {
    /// The table.
    pub table: String,
    /// The SDK's error, or why waiting for the table gave up.
    pub source: Box<dyn Error + Send + Sync>,
}

#[cfg(feature = "dynamodb")]
impl TableShape {
    /// Creates `table` with this shape and waits until it and its indexes are active. A table
    /// that exists already is left as it is (its shape is not compared), so running this again
    /// is harmless.
    pub async fn create(&self, client: &Client, table: &str) -> Result<(), CreateTableError> {
        let failed = |source: Box<dyn Error + Send + Sync>| CreateTableError {
            table: table.to_owned(),
            source,
        };
        let mut request = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest);
        for (attribute, role) in std::iter::once((self.hash, KeyType::Hash))
            .chain(self.range.map(|range| (range, KeyType::Range)))
        {
            request = request
                .attribute_definitions(
                    definition(attribute.name, attribute.kind).map_err(|e| failed(e.into()))?,
                )
                .key_schema(key(attribute.name, role).map_err(|e| failed(e.into()))?);
        }
        for index in self.indexes {
            let built = GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .key_schema(key(index.hash, KeyType::Hash).map_err(|e| failed(e.into()))?)
                .key_schema(key(index.range, KeyType::Range).map_err(|e| failed(e.into()))?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(|e| failed(e.into()))?;
            request = request.global_secondary_indexes(built);
            for name in [index.hash, index.range] {
                if !self.is_key(name) {
                    request = request.attribute_definitions(
                        definition(name, KeyKind::String).map_err(|e| failed(e.into()))?,
                    );
                }
            }
        }
        if let Err(error) = request.send().await {
            let exists = error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception());
            if !exists {
                return Err(failed(error.into()));
            }
        }
        wait_until_active(client, table).await.map_err(failed)
    }

    /// Whether `name` is the table's own partition or sort key (defined once).
    fn is_key(&self, name: &str) -> bool {
        self.hash.name == name || self.range.is_some_and(|range| range.name == name)
    }
}

#[cfg(feature = "dynamodb")]
fn definition(
    name: &str,
    kind: KeyKind,
) -> Result<AttributeDefinition, aws_sdk_dynamodb::error::BuildError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(match kind {
            KeyKind::String => ScalarAttributeType::S,
            KeyKind::Number => ScalarAttributeType::N,
        })
        .build()
}

#[cfg(feature = "dynamodb")]
fn key(name: &str, role: KeyType) -> Result<KeySchemaElement, aws_sdk_dynamodb::error::BuildError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(role)
        .build()
}

#[cfg(feature = "dynamodb")]
async fn wait_until_active(
    client: &Client,
    table: &str,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
    loop {
        let description = client.describe_table().table_name(table).send().await?;
        let description = description.table();
        let table_active = description.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
        let indexes_active = description.is_none_or(|t| {
            t.global_secondary_indexes()
                .iter()
                .all(|index| index.index_status() == Some(&IndexStatus::Active))
        });
        if table_active && indexes_active {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the table did not become active within a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
