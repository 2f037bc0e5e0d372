//! Comparing two active-orders views item by item.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use projectors::projections::ActiveOrdersTables;

use crate::error::ReplayError;
use crate::verify::{Comparison, TableDifference};

/// Compares `left` and `right` table by table (`orders`, `stores`): every item as a canonical
/// text (attributes sorted by name), listing the items on one side only. Scans both sides in
/// full, which is what a verification of a view's whole content costs.
pub async fn compare_tables(
    client: &Client,
    left: &ActiveOrdersTables,
    right: &ActiveOrdersTables,
) -> Result<Comparison, ReplayError> {
    let mut differences = Vec::new();
    for (role, left_table, right_table) in [
        ("orders", &left.orders, &right.orders),
        ("stores", &left.stores, &right.stores),
    ] {
        let left_items = scan_texts(client, left_table).await?;
        let right_items = scan_texts(client, right_table).await?;
        if left_items != right_items {
            differences.push(TableDifference {
                table: role.to_owned(),
                left_rows: Some(left_items.len() as i64),
                right_rows: Some(right_items.len() as i64),
                only_in_left: only_in(&left_items, &right_items),
                only_in_right: only_in(&right_items, &left_items),
            });
        }
    }
    Ok(Comparison {
        tables_compared: 2,
        differences,
    })
}

/// Every item of `table` as canonical text, sorted.
async fn scan_texts(client: &Client, table: &str) -> Result<Vec<String>, ReplayError> {
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send();
    let mut texts = Vec::new();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| ReplayError::dynamodb(table, e))?;
        texts.push(item_text(&item));
    }
    texts.sort();
    Ok(texts)
}

/// The items of sorted `left` that sorted `right` lacks, duplicates counted.
fn only_in(left: &[String], right: &[String]) -> Vec<String> {
    let mut remaining: BTreeMap<&str, usize> = BTreeMap::new();
    for item in right {
        *remaining.entry(item).or_default() += 1;
    }
    left.iter()
        .filter(|item| match remaining.get_mut(item.as_str()) {
            Some(count) if *count > 0 => {
                *count -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
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

    #[test]
    fn only_in_counts_duplicates() {
        let left = vec!["a".to_owned(), "a".to_owned(), "b".to_owned()];
        let right = vec!["a".to_owned(), "c".to_owned()];
        assert_eq!(only_in(&left, &right), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(only_in(&right, &left), vec!["c".to_owned()]);
    }
}
