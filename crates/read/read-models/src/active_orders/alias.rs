//! Which tables are the live active-orders view.
//!
//! DynamoDB cannot rename a table, so a rebuilt view is swapped in by moving an alias: one item
//! of the views table (hash key `name`, item `alias#active_orders`) naming the live orders and
//! stores tables. The projector resolves it once per batch, after the batch's records are in
//! hand, and the dashboard once per read; without the item both use the configured tables.
//!
//! A swap moves the alias with `handover` set, then replay catches the new tables up with the
//! store's end read after the move, then clears `handover`. Every commit the projector applied
//! to the old tables was in the store before the move (it resolved the alias after reading the
//! commit), so the catch-up covers it. Meanwhile the projector may meet a commit whose
//! predecessor only the old tables hold yet: while `handover` is set such a gap is retried, not
//! dead-lettered, and the catch-up fills it.
//!
//! A handover left unfinished (the swap was interrupted) is finished by catching the tables the
//! alias names up and clearing `handover`, or rolled back by [`ViewAlias::begin_rollback`]:
//! the alias goes back to the previous tables, still in handover and marked `rolling_back`,
//! and those tables are caught up the same way (they lack what the projector wrote to the
//! abandoned ones meanwhile). `replay handover --finish|--abort` does both.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_support::resources::TableResource;
use aws_support::tables::{KeyAttribute, TableShape};

use super::ActiveOrdersTables;
use crate::SetupError;

/// The alias item's key in the views table.
const ALIAS_KEY: &str = "alias#active_orders";

/// Why the alias could not be read or moved.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    /// DynamoDB refused or failed.
    #[error("DynamoDB error on the views table {table}: {source}")]
    DynamoDb {
        /// The views table.
        table: String,
        /// The SDK's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The alias no longer names the tables the caller expected: someone else moved it.
    #[error("the active-orders alias moved meanwhile (expected it on {expected})")]
    Moved {
        /// The orders table the caller expected the alias on.
        expected: String,
    },
    /// The alias item exists but is not one this code wrote.
    #[error("the active-orders alias item is malformed: {0}")]
    Malformed(&'static str),
}

/// The live view as the alias names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    /// The tables readers and the projector use.
    pub tables: ActiveOrdersTables,
    /// A swap is catching the tables up: gaps are retried, not dead-lettered.
    pub handover: bool,
    /// The tables live before the last swap, if one happened (kept until an operator drops
    /// them); after a rollback, the abandoned rebuild.
    pub previous: Option<ActiveOrdersTables>,
    /// The handover is a rollback to the tables live before an unfinished swap.
    pub rolling_back: bool,
}

/// The views table holding the active-orders alias (settings key `dynamodb.views_table`).
#[derive(Debug, Clone)]
pub struct ViewAlias {
    client: Client,
    table: String,
    configured: ActiveOrdersTables,
}

impl ViewAlias {
    /// The alias in `table`, falling back to `configured` while no swap has ever moved it.
    pub fn new(client: Client, table: impl Into<String>, configured: ActiveOrdersTables) -> Self {
        Self {
            client,
            table: table.into(),
            configured,
        }
    }

    /// The views table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The DynamoDB client the alias reads with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The views table's key schema: partition key `name` (the alias item
    /// `alias#active_orders`, replay's progress items `rebuild#<orders table>`).
    pub const SHAPE: TableShape = TableShape {
        hash: KeyAttribute::string("name"),
        range: None,
        indexes: &[],
    };

    /// The views table, as the local stack and the deployment create it (settings key
    /// `dynamodb.views_table`).
    pub const RESOURCE: TableResource = TableResource {
        name: "views",
        settings_key: "dynamodb.views_table",
        shape: Self::SHAPE,
        time_to_live: None,
    };

    /// Creates the views table ([`ViewAlias::SHAPE`]) if missing and waits until it is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), SetupError> {
        Ok(Self::SHAPE.create(client, table).await?)
    }

    /// The live view (a strongly consistent read, so a swap is seen at once). Without the
    /// alias item, or without the views table (replay creates it before any swap), the
    /// configured tables are live.
    pub async fn live(&self) -> Result<LiveView, AliasError> {
        let configured = LiveView {
            tables: self.configured.clone(),
            handover: false,
            previous: None,
            rolling_back: false,
        };
        let output = match self
            .client
            .get_item()
            .table_name(&self.table)
            .key("name", AttributeValue::S(ALIAS_KEY.to_owned()))
            .consistent_read(true)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(configured)
            }
            Err(error) => return Err(self.failed(error)),
        };
        let Some(item) = output.item() else {
            return Ok(configured);
        };
        let optional = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let text = |name: &'static str| optional(name).ok_or(AliasError::Malformed(name));
        Ok(LiveView {
            tables: ActiveOrdersTables {
                orders: text("orders_table")?,
                stores: text("stores_table")?,
            },
            handover: item
                .get("handover")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            previous: optional("previous_orders_table")
                .zip(optional("previous_stores_table"))
                .map(|(orders, stores)| ActiveOrdersTables { orders, stores }),
            rolling_back: item
                .get("rolling_back")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
        })
    }

    /// Points the alias at `to` with `handover` set, provided it still names `from`: two swaps
    /// at once cannot both win.
    pub async fn begin_handover(
        &self,
        from: &ActiveOrdersTables,
        to: &ActiveOrdersTables,
    ) -> Result<(), AliasError> {
        let mut item = HashMap::from([
            ("name".to_owned(), AttributeValue::S(ALIAS_KEY.to_owned())),
            (
                "orders_table".to_owned(),
                AttributeValue::S(to.orders.clone()),
            ),
            (
                "stores_table".to_owned(),
                AttributeValue::S(to.stores.clone()),
            ),
            ("handover".to_owned(), AttributeValue::Bool(true)),
        ]);
        item.insert(
            "previous_orders_table".to_owned(),
            AttributeValue::S(from.orders.clone()),
        );
        item.insert(
            "previous_stores_table".to_owned(),
            AttributeValue::S(from.stores.clone()),
        );
        // Never moved: the configured tables are live, and only they may be swapped out.
        let condition = if *from == self.configured {
            "attribute_not_exists(#name) OR (orders_table = :from AND handover = :false)"
        } else {
            "attribute_exists(#name) AND orders_table = :from AND handover = :false"
        };
        self.put_if(item, condition, &from.orders).await
    }

    /// Rolls an unfinished swap back: the alias, in handover on `abandoned`, goes back to
    /// `back_to` (the tables live before), still in handover and marked `rolling_back`, with
    /// `abandoned` as its previous tables. Conditional on the alias still naming `abandoned`
    /// in handover.
    pub async fn begin_rollback(
        &self,
        abandoned: &ActiveOrdersTables,
        back_to: &ActiveOrdersTables,
    ) -> Result<(), AliasError> {
        let item = HashMap::from([
            ("name".to_owned(), AttributeValue::S(ALIAS_KEY.to_owned())),
            (
                "orders_table".to_owned(),
                AttributeValue::S(back_to.orders.clone()),
            ),
            (
                "stores_table".to_owned(),
                AttributeValue::S(back_to.stores.clone()),
            ),
            ("handover".to_owned(), AttributeValue::Bool(true)),
            ("rolling_back".to_owned(), AttributeValue::Bool(true)),
            (
                "previous_orders_table".to_owned(),
                AttributeValue::S(abandoned.orders.clone()),
            ),
            (
                "previous_stores_table".to_owned(),
                AttributeValue::S(abandoned.stores.clone()),
            ),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("orders_table = :from AND handover = :true")
            .expression_attribute_values(":from", AttributeValue::S(abandoned.orders.clone()))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if aws_support::is_condition_failed(&error) => Err(AliasError::Moved {
                expected: abandoned.orders.clone(),
            }),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Clears `handover` (and `rolling_back`) once the tables `live` names are caught up.
    pub async fn end_handover(&self, live: &ActiveOrdersTables) -> Result<(), AliasError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("name", AttributeValue::S(ALIAS_KEY.to_owned()))
            .update_expression("SET handover = :false REMOVE rolling_back")
            .condition_expression("orders_table = :live")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":live", AttributeValue::S(live.orders.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if aws_support::is_condition_failed(&error) => Err(AliasError::Moved {
                expected: live.orders.clone(),
            }),
            Err(error) => Err(self.failed(error)),
        }
    }

    async fn put_if(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        expected: &str,
    ) -> Result<(), AliasError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":from", AttributeValue::S(expected.to_owned()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if aws_support::is_condition_failed(&error) => Err(AliasError::Moved {
                expected: expected.to_owned(),
            }),
            Err(error) => Err(self.failed(error)),
        }
    }

    fn failed<E>(&self, error: aws_sdk_dynamodb::error::SdkError<E>) -> AliasError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        AliasError::DynamoDb {
            table: self.table.clone(),
            source: Box::new(error),
        }
    }
}
