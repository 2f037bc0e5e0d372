//! The settings a deployment puts on the live view's tables, which a rebuilt table must get
//! before it is swapped in: TTL on `expires_at` (without it ended orders' tombstones are never
//! removed), point-in-time recovery, the KMS key the tables are encrypted with, deletion
//! protection, and tags (the alarms find the view's tables by tag, so they follow a swap).
//!
//! They are read from the live tables (DescribeTable, DescribeTimeToLive,
//! DescribeContinuousBackups, ListTagsOfResource) rather than from configuration, so whatever
//! the deployment set is what the rebuild gets. An endpoint that does not implement one of
//! these calls (dynalite has no TTL or backup API) is reported, not fatal: the swap goes on and
//! the operator is told what could not be carried over.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, SseSpecification, SseStatus,
    SseType, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;

use crate::error::ReplayError;

/// What was read from one table. `None`: the endpoint does not implement the call.
#[derive(Debug, Clone, Default, PartialEq)]
struct Settings {
    arn: Option<String>,
    /// The TTL attribute, when TTL is on (or being switched on).
    ttl: Option<Option<String>>,
    point_in_time_recovery: Option<bool>,
    /// The KMS key's ARN when the table is encrypted with a KMS key (customer or AWS managed);
    /// `None` inside: DynamoDB's own key.
    kms_key: Option<String>,
    deletion_protection: bool,
    tags: Option<Vec<Tag>>,
}

/// What [`copy_table_settings`] did for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsCopied {
    /// The table that got the settings.
    pub table: String,
    /// The settings applied (those it already had are not listed).
    pub applied: Vec<String>,
    /// The settings this endpoint cannot read or set (an emulator); on AWS, empty.
    pub unsupported: Vec<String>,
}

/// Gives `to` the settings of `from` that it lacks (see the module documentation), waiting for
/// each table update to finish before the next.
pub async fn copy_table_settings(
    client: &Client,
    from: &str,
    to: &str,
) -> Result<SettingsCopied, ReplayError> {
    let mut copied = SettingsCopied {
        table: to.to_owned(),
        ..SettingsCopied::default()
    };
    let source = read(client, from, &mut copied.unsupported).await?;
    let mut ignored = Vec::new();
    let target = read(client, to, &mut ignored).await?;

    if let (Some(Some(attribute)), Some(current)) = (&source.ttl, &target.ttl) {
        if current.as_ref() != Some(attribute) {
            let specification = TimeToLiveSpecification::builder()
                .attribute_name(attribute)
                .enabled(true)
                .build()
                .map_err(|e| built(to, e))?;
            let result = client
                .update_time_to_live()
                .table_name(to)
                .time_to_live_specification(specification)
                .send()
                .await;
            outcome(result, to, "ttl", &mut copied)?;
            copied.applied.push(format!("TTL on {attribute}"));
        }
    }
    if source.point_in_time_recovery == Some(true) && target.point_in_time_recovery == Some(false) {
        let specification = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()
            .map_err(|e| built(to, e))?;
        let result = client
            .update_continuous_backups()
            .table_name(to)
            .point_in_time_recovery_specification(specification)
            .send()
            .await;
        outcome(result, to, "point-in-time recovery", &mut copied)?;
        copied.applied.push("point-in-time recovery".to_owned());
    }
    if source.kms_key.is_some() && source.kms_key != target.kms_key {
        let key = source.kms_key.clone().unwrap_or_default();
        let result = client
            .update_table()
            .table_name(to)
            .sse_specification(
                SseSpecification::builder()
                    .enabled(true)
                    .sse_type(SseType::Kms)
                    .kms_master_key_id(&key)
                    .build(),
            )
            .send()
            .await;
        outcome(result, to, "KMS encryption", &mut copied)?;
        wait_until_active(client, to).await?;
        copied
            .applied
            .push(format!("encryption with KMS key {key}"));
    }
    if source.deletion_protection && !target.deletion_protection {
        let result = client
            .update_table()
            .table_name(to)
            .deletion_protection_enabled(true)
            .send()
            .await;
        outcome(result, to, "deletion protection", &mut copied)?;
        wait_until_active(client, to).await?;
        copied.applied.push("deletion protection".to_owned());
    }
    if let (Some(tags), Some(target_tags), Some(arn)) = (&source.tags, &target.tags, &target.arn) {
        let missing: Vec<Tag> = tags
            .iter()
            .filter(|tag| !target_tags.contains(tag))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|t| t.key().to_owned()).collect();
            let result = client
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(missing))
                .send()
                .await;
            outcome(result, to, "tags", &mut copied)?;
            copied.applied.push(format!("tags {}", names.join(", ")));
        }
    }
    Ok(copied)
}

async fn read(
    client: &Client,
    table: &str,
    unsupported: &mut Vec<String>,
) -> Result<Settings, ReplayError> {
    let description = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| ReplayError::dynamodb(table, e))?;
    let description = description.table();
    let sse = description.and_then(|t| t.sse_description());
    let kms_key = sse
        .filter(|s| {
            matches!(
                s.status(),
                Some(SseStatus::Enabled) | Some(SseStatus::Enabling)
            ) && s.sse_type() == Some(&SseType::Kms)
        })
        .and_then(|s| s.kms_master_key_arn().map(str::to_owned));
    let mut settings = Settings {
        arn: description.and_then(|t| t.table_arn().map(str::to_owned)),
        kms_key,
        deletion_protection: description
            .and_then(|t| t.deletion_protection_enabled())
            .unwrap_or(false),
        ..Settings::default()
    };
    match client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
    {
        Ok(output) => {
            let description = output.time_to_live_description();
            let on = description
                .and_then(|d| d.time_to_live_status())
                .is_some_and(|s| {
                    matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                });
            settings.ttl = Some(
                on.then(|| description.and_then(|d| d.attribute_name().map(str::to_owned)))
                    .flatten(),
            );
        }
        Err(error) if not_implemented(&error) => unsupported.push("TTL".to_owned()),
        Err(error) => return Err(ReplayError::dynamodb(table, error)),
    }
    match client
        .describe_continuous_backups()
        .table_name(table)
        .send()
        .await
    {
        Ok(output) => {
            settings.point_in_time_recovery = Some(
                output
                    .continuous_backups_description()
                    .and_then(|d| d.point_in_time_recovery_description())
                    .and_then(|p| p.point_in_time_recovery_status())
                    == Some(&PointInTimeRecoveryStatus::Enabled),
            );
        }
        Err(error) if not_implemented(&error) => {
            unsupported.push("point-in-time recovery".to_owned())
        }
        Err(error) => return Err(ReplayError::dynamodb(table, error)),
    }
    if let Some(arn) = &settings.arn {
        match client
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await
        {
            Ok(output) => settings.tags = Some(output.tags().to_vec()),
            Err(error) if not_implemented(&error) => unsupported.push("tags".to_owned()),
            Err(error) => return Err(ReplayError::dynamodb(table, error)),
        }
    }
    Ok(settings)
}

/// An update's result: an endpoint without the call is reported, anything else is fatal.
fn outcome<T, E>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E>>,
    table: &str,
    what: &str,
    copied: &mut SettingsCopied,
) -> Result<(), ReplayError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(error) if not_implemented(&error) => {
            copied.unsupported.push(what.to_owned());
            Ok(())
        }
        Err(error) => Err(ReplayError::dynamodb(table, error)),
    }
}

/// The endpoint does not implement the operation (an emulator): DynamoDB itself implements
/// every call used here.
fn not_implemented<E: ProvideErrorMetadata>(error: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    let code = error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code);
    matches!(
        code,
        Some("UnknownOperationException" | "NotImplemented" | "UnsupportedOperation")
    )
}

fn built(table: &str, error: aws_sdk_dynamodb::error::BuildError) -> ReplayError {
    ReplayError::DynamoDb {
        table: table.to_owned(),
        source: error.into(),
    }
}

/// Waits until `table` is active again after an update (DynamoDB takes one update at a time).
async fn wait_until_active(client: &Client, table: &str) -> Result<(), ReplayError> {
    for _ in 0..600 {
        let output = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| ReplayError::dynamodb(table, e))?;
        let status = output.table().and_then(|t| t.table_status());
        if status == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(ReplayError::DynamoDb {
        table: table.to_owned(),
        source: "the table did not become active again within two minutes".into(),
    })
}
