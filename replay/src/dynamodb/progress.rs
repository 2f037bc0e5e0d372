//! A rebuild's progress on DynamoDB tables, kept in the views table.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use read_models::ActiveOrdersTables;

use crate::error::ReplayError;
use crate::progress::ProgressStore;

/// The item `rebuild#<orders table>` of the views table: the last position applied into a
/// target's tables. Its presence marks the tables as a replay target, which lets
/// `replay rebuild` resume into them but never write into tables it did not create. A rebuild
/// meant to be swapped in also records which live tables it is to replace (`swap_of`), so
/// `replay rebuild --swap` without `--target` finds it again after an interruption.
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
            Err(error) if aws_support::is_condition_failed(&error) => Ok(()),
            Err(error) => Err(ReplayError::dynamodb(&self.views_table, error)),
        }
    }

    /// Records that the target is being built to replace the live tables `live` (see
    /// [`TablesProgress::swaps_of`]).
    pub async fn mark_for_swap(&self, live: &ActiveOrdersTables) -> Result<(), ReplayError> {
        self.client
            .update_item()
            .table_name(&self.views_table)
            .key("name", self.key())
            .update_expression("SET swap_of = :live")
            .condition_expression("attribute_exists(#name)")
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":live", AttributeValue::S(live.orders.clone()))
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(&self.views_table, e))?;
        Ok(())
    }

    /// The targets of unfinished rebuilds marked to replace `live` (oldest name first). The
    /// views table holds one alias and a few progress items, so a scan is cheap.
    pub async fn swaps_of(
        client: &Client,
        views_table: &str,
        live: &ActiveOrdersTables,
    ) -> Result<Vec<ActiveOrdersTables>, ReplayError> {
        let mut items = client
            .scan()
            .table_name(views_table)
            .consistent_read(true)
            .filter_expression("begins_with(#name, :rebuild) AND swap_of = :live")
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":rebuild", AttributeValue::S("rebuild#".into()))
            .expression_attribute_values(":live", AttributeValue::S(live.orders.clone()))
            .into_paginator()
            .items()
            .send();
        let mut targets = Vec::new();
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| ReplayError::dynamodb(views_table, e))?;
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            let (Some(name), Some(stores)) = (text("name"), text("stores_table")) else {
                return Err(ReplayError::MalformedProgress(views_table.to_owned()));
            };
            let orders = name.trim_start_matches("rebuild#").to_owned();
            targets.push(ActiveOrdersTables { orders, stores });
        }
        targets.sort_by(|a, b| a.orders.cmp(&b.orders));
        Ok(targets)
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
