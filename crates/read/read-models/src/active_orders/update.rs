//! A DynamoDB update expression assembled from placeholders only: every attribute name becomes
//! `#nK` and every value `:vK`, so no data ever reaches the expression text and reserved words
//! (`status`, `name`...) need no special care.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

use super::{dynamodb_failure, Target, ViewItem};
use commit_log::projection::ProjectionError;

/// The parts of one `UpdateItem` call.
#[derive(Debug, Default)]
pub(super) struct Update {
    sets: Vec<String>,
    adds: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    /// The attributes this update gives an item that does not exist yet (what
    /// [`Update::try_put_new`] writes).
    fresh: HashMap<String, AttributeValue>,
}

impl Update {
    /// The placeholder of attribute `attribute`.
    pub(super) fn name(&mut self, attribute: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| *a == attribute) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    /// A placeholder for `value`.
    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// `SET attribute = value`.
    pub(super) fn set(&mut self, attribute: &str, value: AttributeValue) {
        self.fresh.insert(attribute.to_owned(), value.clone());
        let name = self.name(attribute);
        let value = self.value(value);
        self.sets.push(format!("{name} = {value}"));
    }

    /// `ADD attribute value` (a number: creates it at `value` when missing).
    pub(super) fn add(&mut self, attribute: &str, value: AttributeValue) {
        self.fresh.insert(attribute.to_owned(), value.clone());
        let name = self.name(attribute);
        let value = self.value(value);
        self.adds.push(format!("{name} {value}"));
    }

    /// `REMOVE attribute`.
    pub(super) fn remove(&mut self, attribute: &str) {
        self.fresh.remove(attribute);
        let name = self.name(attribute);
        self.removes.push(name);
    }

    /// Appends `entries` to the list `attribute`, creating it when missing.
    pub(super) fn append(&mut self, attribute: &str, entries: Vec<AttributeValue>) {
        self.fresh
            .insert(attribute.to_owned(), AttributeValue::L(entries.clone()));
        let name = self.name(attribute);
        let empty = self.value(AttributeValue::L(Vec::new()));
        let entries = self.value(AttributeValue::L(entries));
        self.sets.push(format!(
            "{name} = list_append(if_not_exists({name}, {empty}), {entries})"
        ));
    }

    /// The update expression.
    pub(super) fn expression(&self) -> String {
        let mut clauses = Vec::new();
        if !self.sets.is_empty() {
            clauses.push(format!("SET {}", self.sets.join(", ")));
        }
        if !self.adds.is_empty() {
            clauses.push(format!("ADD {}", self.adds.join(", ")));
        }
        if !self.removes.is_empty() {
            clauses.push(format!("REMOVE {}", self.removes.join(", ")));
        }
        clauses.join(" ")
    }

    /// The names and values, for the request.
    fn into_parts(self) -> (HashMap<String, String>, HashMap<String, AttributeValue>) {
        (self.names, self.values)
    }

    /// Writes this update to the item at `key` of `table` if `condition` (built from this
    /// update's placeholders) holds. A failed condition is read as `on_failed` says; every
    /// other failure is classified by [`dynamodb_failure`] for commit `index`.
    pub(super) async fn send(
        self,
        target: &Target<'_>,
        table: &str,
        key: HashMap<String, AttributeValue>,
        condition: String,
        on_failed: OnConditionFailed,
        index: usize,
    ) -> Result<(), ProjectionError> {
        match self.try_send(target, table, key, condition, index).await? {
            Written::Yes => Ok(()),
            Written::ConditionFailed(error) => match on_failed {
                OnConditionFailed::AlreadyApplied => Ok(()),
                OnConditionFailed::MarkerMoved => Err(ProjectionError::Transient(error)),
            },
        }
    }

    /// [`Update::send`] for a caller that decides itself what a failed condition means.
    pub(super) async fn try_send(
        self,
        target: &Target<'_>,
        table: &str,
        key: HashMap<String, AttributeValue>,
        condition: String,
        index: usize,
    ) -> Result<Written, ProjectionError> {
        let item = ViewItem::of(&key);
        let expression = self.expression();
        let (names, values) = self.into_parts();
        let result = target
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let units = result.map(|output| output.consumed_capacity().and_then(units));
        written(target, item, units, index)
    }

    /// Writes the item this update would create at `key` of `table`, as one PutItem, if there
    /// is no item at `key`: the same result as [`Update::try_send`] with the condition
    /// "no item, or one whose `last_sequence` is 0" (no item written by the view has one), for
    /// less of DynamoDB's work (dynalite parses no expression). A failed condition means an
    /// item exists.
    pub(super) async fn try_put_new(
        self,
        target: &Target<'_>,
        table: &str,
        key: HashMap<String, AttributeValue>,
        index: usize,
    ) -> Result<Written, ProjectionError> {
        let kind = ViewItem::of(&key);
        let mut item = self.fresh;
        item.extend(key);
        let result = target
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let units = result.map(|output| output.consumed_capacity().and_then(units));
        written(target, kind, units, index)
    }
}

/// The capacity units a call reports it consumed.
fn units(capacity: &aws_sdk_dynamodb::types::ConsumedCapacity) -> Option<f64> {
    capacity.capacity_units()
}

/// What a conditional write's answer (its consumed units when it was written) means for commit
/// `index`, counted in the projection's usage as a write of `item`.
fn written<E>(
    target: &Target<'_>,
    item: ViewItem,
    result: Result<Option<f64>, aws_sdk_dynamodb::error::SdkError<E>>,
    index: usize,
) -> Result<Written, ProjectionError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(units) => {
            target.usage.wrote(item, units);
            Ok(Written::Yes)
        }
        Err(error) if aws_support::is_condition_failed(&error) => {
            // A refused condition is billed as a write of the item as it is.
            target.usage.wrote(item, None);
            Ok(Written::ConditionFailed(Box::new(error)))
        }
        Err(error) => Err(dynamodb_failure(index, error)),
    }
}

/// What a conditional write did.
#[derive(Debug)]
pub(super) enum Written {
    /// The condition held and the item was written.
    Yes,
    /// The condition did not hold: nothing was written.
    ConditionFailed(Box<dyn std::error::Error + Send + Sync>),
}

/// What a failed write condition means.
#[derive(Debug, Clone, Copy)]
pub(super) enum OnConditionFailed {
    /// The item already holds this commit (written before a crash): nothing to do.
    AlreadyApplied,
    /// Another worker moved the aggregate's marker since it was read (a lease changing hands):
    /// the batch is retried, re-reads the marker and skips what is applied.
    MarkerMoved,
}

/// A string attribute.
pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_hold_placeholders_only() {
        let mut update = Update::default();
        update.set("status", s("ready"));
        update.add("orders_active", n(-1));
        update.remove("gsi1pk");
        update.set("status_at", s("2025"));
        let status = update.name("status");
        assert_eq!(status, "#n0");
        assert_eq!(
            update.expression(),
            "SET #n0 = :v0, #n3 = :v2 ADD #n1 :v1 REMOVE #n2"
        );
        let (names, values) = update.into_parts();
        assert_eq!(names.len(), 4);
        assert_eq!(values.len(), 3);
    }
}
