//! A rebuild's progress on DynamoDB tables, kept in the views table.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use projectors::projections::ActiveOrdersTables;

use crate::error::ReplayError;
use crate::progress::ProgressStore;

/// The item `rebuild#<orders table>` of the views table: the last position applied into a
/// target's tables. Its presence marks the tables as a replay target, which lets
/// `replay rebuild` resume into them but never write into tables it did not create.
#[derive(Debug, Clone)]
pub struct TablesProgress {
    client: Client,
    views_table: String,
    target: ActiveOrdersTables,
}

impl TablesProgress {
    /// The progress of a rebuild into `target`, kept in `views_table`.
    pub fn new(client: Client, views_table: impl Into<String>, target: ActiveOrdersTables) -> Self {
        Self {
            client,
            views_table: views_table.into(),
            target,
        }
    }

    fn key(&self) -> AttributeValue {
        AttributeValue::S(format!("rebuild#{}", self.target.orders))
    }

    /// True when a rebuild into the target has started (and not yet been swapped in).
    pub async fn exists(&self) -> Result<bool, ReplayError> {
        Ok(self.read().await?.is_some())
    }

    /// Marks the target as a replay target, position 0, unless it is one already.
    pub async fn start(&self) -> Result<(), ReplayError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.views_table)
            .item("name", self.key())
            .item(
                "stores_table",
                AttributeValue::S(self.target.stores.clone()),
            )
            .item("last_position", AttributeValue::N("0".into()))
            .condition_expression("attribute_not_exists(#name)")
            .expression_attribute_names("#name", "name")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(ReplayError::dynamodb(&self.views_table, error)),
        }
    }

    /// Forgets the progress: the tables are live (swapped in) or gone.
    pub async fn remove(&self) -> Result<(), ReplayError> {
        self.client
            .delete_item()
            .table_name(&self.views_table)
            .key("name", self.key())
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(&self.views_table, e))?;
        Ok(())
    }

    async fn read(&self) -> Result<Option<i64>, ReplayError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.views_table)
            .key("name", self.key())
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(&self.views_table, e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        item.get("last_position")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| ReplayError::MalformedProgress(self.target.orders.clone()))
    }
}

#[async_trait]
impl ProgressStore for TablesProgress {
    /// One target holds one projection, so the position is the target's.
    async fn load(&self, _projection: &str) -> Result<Option<i64>, ReplayError> {
        self.read().await
    }

    async fn save(&self, _projection: &str, position: i64) -> Result<(), ReplayError> {
        self.client
            .update_item()
            .table_name(&self.views_table)
            .key("name", self.key())
            .update_expression("SET last_position = :position")
            .expression_attribute_values(":position", AttributeValue::N(position.to_string()))
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(&self.views_table, e))?;
        Ok(())
    }
}
