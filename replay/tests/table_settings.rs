//! A view swapped in keeps what the deployment set on the live tables: TTL, point-in-time
//! recovery, the KMS key, deletion protection and tags. Against moto, which implements the
//! calls involved (dynalite has no UpdateTimeToLive); and against dynalite, which must not make
//! a swap fail on what it lacks.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_dynamodb::types::{
    PointInTimeRecoverySpecification, SseSpecification, SseType, Tag, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use common::{fresh_store, write_orders};
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, ViewAlias};
use replay::dynamodb::{swap_in_tables, target_tables, TablesProgress};
use replay::{rebuild, RebuildOptions};
use test_support::{aws_test_config, unique_name};

/// A DynamoDB client on moto (`ORDERPIPE_MOTO_URL`, from the stack's env file).
async fn moto() -> Client {
    let url = std::env::var("ORDERPIPE_MOTO_URL").expect("ORDERPIPE_MOTO_URL (source .stack/env)");
    let config = aws_sdk_dynamodb::config::Builder::from(&aws_test_config().await)
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

/// What the deployment (CDK) sets on a live table.
async fn deploy_settings(client: &Client, table: &str, ttl: bool) {
    if ttl {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    client
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    client
        .update_table()
        .table_name(table)
        .sse_specification(
            SseSpecification::builder()
                .enabled(true)
                .sse_type(SseType::Kms)
                .kms_master_key_id("alias/orderpipe-views")
                .build(),
        )
        .deletion_protection_enabled(true)
        .send()
        .await
        .unwrap();
    let arn = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.table_arn().map(str::to_owned))
        .unwrap();
    client
        .tag_resource()
        .resource_arn(arn)
        .tags(
            Tag::builder()
                .key("OrderpipeView")
                .value("active-orders")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// The settings under test, as text a failure message shows whole.
async fn settings_of(client: &Client, table: &str) -> Vec<String> {
    let description = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let description = description.table().unwrap();
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description();
    let backups = client
        .describe_continuous_backups()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| s.as_str().to_owned());
    let tags = client
        .list_tags_of_resource()
        .resource_arn(description.table_arn().unwrap())
        .send()
        .await
        .unwrap();
    let mut tags: Vec<String> = tags
        .tags()
        .iter()
        .map(|t| format!("{}={}", t.key(), t.value()))
        .collect();
    tags.sort();
    vec![
        format!(
            "ttl: {:?} on {:?}",
            ttl.and_then(|t| t.time_to_live_status())
                .map(|s| s.as_str()),
            ttl.and_then(|t| t.attribute_name())
        ),
        format!("point-in-time recovery: {pitr:?}"),
        format!(
            "encryption: {:?} {:?}",
            description
                .sse_description()
                .and_then(|s| s.sse_type())
                .map(|s| s.as_str()),
            description
                .sse_description()
                .and_then(|s| s.kms_master_key_arn())
                .is_some()
        ),
        format!(
            "deletion protection: {:?}",
            description.deletion_protection_enabled()
        ),
        format!("tags: {tags:?}"),
    ]
}

async fn unprotect_and_delete(client: &Client, tables: &ActiveOrdersTables) {
    for table in [&tables.orders, &tables.stores] {
        let _ = client
            .update_table()
            .table_name(table)
            .deletion_protection_enabled(false)
            .send()
            .await;
        let _ = client.delete_table().table_name(table).send().await;
    }
}

#[tokio::test]
async fn a_swapped_in_view_keeps_the_live_tables_settings() {
    let store = fresh_store().await;
    write_orders(&store).await;
    let client = moto().await;
    let views_table = unique_name("settings-views");
    ViewAlias::create_table(&client, &views_table)
        .await
        .unwrap();
    let live = target_tables(&unique_name("settings-live")).unwrap();
    ActiveOrdersProjection::create_tables(&client, &live)
        .await
        .unwrap();
    deploy_settings(&client, &live.orders, true).await;
    deploy_settings(&client, &live.stores, false).await;
    let alias = ViewAlias::new(client.clone(), &views_table, live.clone());

    let rebuilt = target_tables(&unique_name("settings-rebuild")).unwrap();
    ActiveOrdersProjection::create_tables(&client, &rebuilt)
        .await
        .unwrap();
    let progress = TablesProgress::new(client.clone(), &views_table, rebuilt.clone());
    progress.start().await.unwrap();
    let projection = ActiveOrdersProjection::new(client.clone(), rebuilt.clone());
    let options = RebuildOptions {
        until: None,
        batch_commits: 50,
    };
    rebuild(&store, &projection, &progress, &options, |_| {})
        .await
        .unwrap();
    swap_in_tables(&store, &alias, &rebuilt, &progress, 50, |_| {})
        .await
        .unwrap();

    for (from, to) in [
        (&live.orders, &rebuilt.orders),
        (&live.stores, &rebuilt.stores),
    ] {
        assert_eq!(
            settings_of(&client, to).await,
            settings_of(&client, from).await,
            "{to} did not get {from}'s settings"
        );
    }
    unprotect_and_delete(&client, &live).await;
    unprotect_and_delete(&client, &rebuilt).await;
    let _ = client.delete_table().table_name(&views_table).send().await;
}

#[tokio::test]
async fn a_swap_on_an_emulator_without_ttl_support_still_succeeds() {
    let store = fresh_store().await;
    write_orders(&store).await;
    let client = aws_support::dynamodb(&aws_test_config().await);
    let views_table = unique_name("settings-views");
    ViewAlias::create_table(&client, &views_table)
        .await
        .unwrap();
    let live = target_tables(&unique_name("settings-live")).unwrap();
    ActiveOrdersProjection::create_tables(&client, &live)
        .await
        .unwrap();
    let alias = ViewAlias::new(client.clone(), &views_table, live.clone());
    let rebuilt = target_tables(&unique_name("settings-rebuild")).unwrap();
    ActiveOrdersProjection::create_tables(&client, &rebuilt)
        .await
        .unwrap();
    let progress = TablesProgress::new(client.clone(), &views_table, rebuilt.clone());
    progress.start().await.unwrap();
    swap_in_tables(&store, &alias, &rebuilt, &progress, 50, |_| {})
        .await
        .unwrap();
    assert_eq!(alias.live().await.unwrap().tables, rebuilt);
}
