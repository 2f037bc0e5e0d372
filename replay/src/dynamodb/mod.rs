//! The DynamoDB active-orders view as a replay target.
//!
//! DynamoDB has no schemas and cannot rename a table, so a target is a pair of fresh tables
//! named after a base (`<base>-orders`, `<base>-stores`), replay's progress lives in the views
//! table next to the alias (item `rebuild#<orders table>`), and a swap moves the alias
//! ([`read_models::ViewAlias`]) instead of renaming anything.

mod compare;
mod progress;
mod settings;
mod swap;

pub use compare::{compare_tables, compare_views, VerifyOptions};
pub use progress::TablesProgress;
pub use settings::{copy_table_settings, SettingsCopied};
pub use swap::{finish_handover, roll_back_handover, swap_in_tables, HandoverEnd, TablesSwap};

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use read_models::ActiveOrdersTables;

use crate::error::ReplayError;

/// The tables of a target named `base`, refused unless both names are valid DynamoDB table
/// names (3 to 255 characters of `a-z A-Z 0-9 _ . -`).
pub fn target_tables(base: &str) -> Result<ActiveOrdersTables, ReplayError> {
    let tables = ActiveOrdersTables {
        orders: format!("{base}-orders"),
        stores: format!("{base}-stores"),
    };
    let valid = |name: &str| {
        (3..=255).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if valid(base) && valid(&tables.orders) && valid(&tables.stores) {
        Ok(tables)
    } else {
        Err(ReplayError::InvalidTableName(base.to_owned()))
    }
}

/// Which of `tables` exist.
pub async fn existing_tables(
    client: &Client,
    tables: &ActiveOrdersTables,
) -> Result<Vec<String>, ReplayError> {
    let mut existing = Vec::new();
    for table in [&tables.orders, &tables.stores] {
        match client.describe_table().table_name(table).send().await {
            Ok(_) => existing.push(table.clone()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(error) => return Err(ReplayError::dynamodb(table, error)),
        }
    }
    Ok(existing)
}

/// Deletes `tables` (a scratch target), those that exist.
pub async fn drop_tables(client: &Client, tables: &ActiveOrdersTables) -> Result<(), ReplayError> {
    for table in existing_tables(client, tables).await? {
        client
            .delete_table()
            .table_name(&table)
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(&table, e))?;
    }
    Ok(())
}

/// Deletes every item of `tables` (an in-place rebuild), 25 keys per `BatchWriteItem`, retrying
/// the keys DynamoDB leaves unprocessed under throttling.
pub async fn empty_tables(client: &Client, tables: &ActiveOrdersTables) -> Result<(), ReplayError> {
    for table in [&tables.orders, &tables.stores] {
        let mut keys = client
            .scan()
            .table_name(table)
            .projection_expression("pk, sk")
            .into_paginator()
            .items()
            .send();
        let mut batch = Vec::new();
        while let Some(key) = keys.next().await {
            batch.push(key.map_err(|e| ReplayError::dynamodb(table, e))?);
            if batch.len() == 25 {
                delete_keys(client, table, std::mem::take(&mut batch)).await?;
            }
        }
        delete_keys(client, table, batch).await?;
    }
    Ok(())
}

async fn delete_keys(
    client: &Client,
    table: &str,
    keys: Vec<HashMap<String, AttributeValue>>,
) -> Result<(), ReplayError> {
    let mut requests = keys
        .into_iter()
        .map(|key| {
            let delete = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| ReplayError::DynamoDb {
                    table: table.to_owned(),
                    source: e.into(),
                })?;
            Ok(WriteRequest::builder().delete_request(delete).build())
        })
        .collect::<Result<Vec<_>, ReplayError>>()?;
    let mut pause = Duration::from_millis(50);
    while !requests.is_empty() {
        let output = client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(table, e))?;
        requests = output
            .unprocessed_items
            .and_then(|mut left| left.remove(table))
            .unwrap_or_default();
        if !requests.is_empty() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_two_tables_named_after_its_base() {
        let tables = target_tables("orderpipe-active-orders-rebuild-1700000000").ok();
        assert_eq!(
            tables,
            Some(ActiveOrdersTables {
                orders: "orderpipe-active-orders-rebuild-1700000000-orders".into(),
                stores: "orderpipe-active-orders-rebuild-1700000000-stores".into(),
            })
        );
        for bad in ["", "ab", "has space", "slash/name", &"x".repeat(250)] {
            assert!(
                matches!(target_tables(bad), Err(ReplayError::InvalidTableName(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
