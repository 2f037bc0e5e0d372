//! The whole pipeline at once: commands over gRPC into the event store, the relay publishing the
//! outbox to Kinesis, and the projectors building the DynamoDB, history and analytics views.
#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use command_api::auth::{Role, TokenAuthority};
use command_api::configuration::{
    AdminSettings, AuthSettings, DatabaseSettings, GrpcSettings, LogFormat, LogSettings,
    Settings as ApiSettings, StoreSettings,
};
use projectors::projection::Projection;
use projectors::projections::{
    ActiveOrdersProjection, ActiveOrdersTables, AnalyticsProjection, HistoryProjection, SchemaName,
    OPEN_BY_STORE_INDEX,
};
use projectors::runtime::{Worker, WorkerConfig};
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::loyalty_service_client::LoyaltyServiceClient;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use relay::configuration::{KinesisSettings, RelaySettings, Settings as RelaySettingsRoot};
use relay::record_log::KinesisLog;
use secrecy::SecretString;
use test_support::{
    aws_test_config, fresh_database, replay, unique_name, TestDatabase, TestStream, PATIENCE,
};
use tokio::sync::watch;
use tonic::service::Interceptor;
use tonic::transport::Channel;

const STORE: &str = "s1";
const SECRET: &str = "end-to-end-secret-end-to-end-secret-0001";

fn database(test: &TestDatabase) -> DatabaseSettings {
    DatabaseSettings {
        url: Some(SecretString::from(test.url.clone())),
        host: String::new(),
        port: 0,
        name: String::new(),
        username: String::new(),
        password: None,
        max_connections: 8,
        acquire_timeout_ms: 2_000,
    }
}

fn quiet_log() -> LogSettings {
    LogSettings {
        format: LogFormat::Pretty,
        filter: "warn".into(),
    }
}

fn loopback() -> AdminSettings {
    AdminSettings {
        host: "127.0.0.1".into(),
        port: 0,
    }
}

/// Adds a bearer token to every call.
fn bearer(token: String) -> impl Interceptor + Clone {
    move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(request)
    }
}

/// Waits until `check` holds, or fails the test with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    hash: &str,
    range: Option<(&str, ScalarAttributeType)>,
) {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(hash)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(hash)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        );
    if let Some((range, kind)) = range {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(range)
                    .attribute_type(kind)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(range)
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.unwrap();
}

#[tokio::test]
async fn an_order_flows_from_grpc_through_kinesis_into_every_read_model() {
    // --- the dependencies, fresh for this test
    let events_db = fresh_database().await;
    let views_db = fresh_database().await;
    let sdk = aws_test_config().await;
    let stream = TestStream::create(2).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = ActiveOrdersTables {
        orders: unique_name("active-orders"),
        stores: unique_name("store-metrics"),
    };
    ActiveOrdersProjection::create_tables(&dynamodb, &tables)
        .await
        .unwrap();
    let (leases_table, parked_table) = (unique_name("leases"), unique_name("parked"));
    create_table(&dynamodb, &leases_table, "lease_key", None).await;
    create_table(
        &dynamodb,
        &parked_table,
        "parked_key",
        Some(("position", ScalarAttributeType::N)),
    )
    .await;
    let dead_letters = aws_sdk_sqs::Client::new(&sdk)
        .create_queue()
        .queue_name(unique_name("projector-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    // --- the command API
    let api = command_api::startup::Application::build(ApiSettings {
        grpc: GrpcSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_message_bytes: 65_536,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 2_000,
        },
        admin: loopback(),
        database: database(&events_db),
        auth: AuthSettings {
            jwt_secret: SecretString::from(SECRET),
            issuer: "orderpipe".into(),
            audience: "orderpipe-api".into(),
        },
        store: StoreSettings {
            snapshot_every: 50,
            max_batch_commits: 256,
            conflict_retries: 8,
        },
        log: quiet_log(),
    })
    .await
    .unwrap();
    let grpc = format!("http://{}", api.grpc_address());
    let api = tokio::spawn(api.run_until_stopped(until_stopped()));

    // --- the relay
    let relay = relay::startup::Application::build_with_log(
        RelaySettingsRoot {
            database: database(&events_db),
            admin: loopback(),
            log: quiet_log(),
            aws: Default::default(),
            kinesis: KinesisSettings {
                stream_name: stream.name.clone(),
            },
            relay: RelaySettings {
                batch_size: 500,
                poll_interval_ms: 20,
                lock_key: 7_000_001,
                standby_retry_ms: 200,
                retry_initial_ms: 50,
                retry_max_ms: 1_000,
            },
        },
        Arc::new(KinesisLog::new(&stream.client, stream.name.clone())),
    )
    .await
    .unwrap();
    let relay = tokio::spawn(relay.run_until_stopped(until_stopped()));

    // --- the projectors, with all three read models
    let (history_schema, analytics_schema) = (
        SchemaName::parse("history").unwrap(),
        SchemaName::parse("analytics").unwrap(),
    );
    HistoryProjection::create_schema(&views_db.pool, &history_schema)
        .await
        .unwrap();
    AnalyticsProjection::create_schema(&views_db.pool, &analytics_schema)
        .await
        .unwrap();
    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(ActiveOrdersProjection::new(
            dynamodb.clone(),
            tables.clone(),
        )),
        Arc::new(HistoryProjection::new(
            views_db.pool.clone(),
            history_schema,
        )),
        Arc::new(AnalyticsProjection::new(
            views_db.pool.clone(),
            analytics_schema,
        )),
    ];
    let worker = Worker::new(
        &sdk,
        WorkerConfig {
            worker_id: "end-to-end".into(),
            stream_name: stream.name.clone(),
            leases_table,
            parked_table,
            dead_letter_queue_url: dead_letters,
            lease_duration: Duration::from_secs(3),
            batch_size: 500,
            max_apply_attempts: 3,
            poll_interval: Duration::from_millis(200),
            shard_sync_interval: Duration::from_secs(5),
        },
        projections,
    );
    let worker = tokio::spawn(worker.run(until_stopped()));

    // --- commands over gRPC, as the services, staff and customers would send them
    let channel = Channel::from_shared(grpc).unwrap().connect_lazy();
    let tokens = TokenAuthority::new(&AuthSettings {
        jwt_secret: SecretString::from(SECRET),
        issuer: "orderpipe".into(),
        audience: "orderpipe-api".into(),
    });
    let token = |role, subject: &str| {
        let store = matches!(role, Role::Barista | Role::StoreManager).then_some(STORE);
        tokens
            .mint(subject, role, store, Duration::from_secs(600))
            .unwrap()
    };
    let service = bearer(token(Role::Service, "saga"));
    let mut menu = MenuServiceClient::with_interceptor(channel.clone(), service.clone());
    let mut inventory = InventoryServiceClient::with_interceptor(channel.clone(), service.clone());
    let mut loyalty = LoyaltyServiceClient::with_interceptor(channel.clone(), service.clone());
    let mut saga = OrderServiceClient::with_interceptor(channel.clone(), service);
    let mut barista =
        OrderServiceClient::with_interceptor(channel.clone(), bearer(token(Role::Barista, "ana")));
    let mut commits = 0;

    for (sku, name, cents) in [
        ("LATTE-12", "Latte 12oz", 450),
        ("CROISSANT", "Croissant", 325),
    ] {
        menu.add_menu_item(pb::AddMenuItemRequest {
            idempotency_key: format!("menu-{sku}"),
            sku: sku.into(),
            name: name.into(),
            price: Some(pb::Money { cents }),
            category: pb::MenuCategory::Drink as i32,
        })
        .await
        .unwrap();
        inventory
            .set_stock(pb::SetStockRequest {
                idempotency_key: format!("stock-{sku}"),
                store_id: STORE.into(),
                sku: sku.into(),
                on_hand: 20,
                low_stock_threshold: 5,
            })
            .await
            .unwrap();
        commits += 2;
    }

    let (completed, open, cancelled) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    for (order_id, customer) in [(&completed, "c-1"), (&open, "c-2"), (&cancelled, "c-3")] {
        OrderServiceClient::with_interceptor(
            channel.clone(),
            bearer(token(Role::Customer, customer)),
        )
        .place_order(pb::PlaceOrderRequest {
            idempotency_key: format!("place-{order_id}"),
            order_id: order_id.clone(),
            store_id: STORE.into(),
            customer_id: customer.into(),
            lines: vec![
                pb::OrderLine {
                    sku: "LATTE-12".into(),
                    quantity: 2,
                    customisations: vec!["oat milk".into()],
                },
                pb::OrderLine {
                    sku: "CROISSANT".into(),
                    quantity: 1,
                    customisations: vec![],
                },
            ],
            note: "no sugar".into(),
        })
        .await
        .unwrap();
        commits += 1;
    }
    let transition = |key: &str, order_id: &str| pb::OrderTransitionRequest {
        idempotency_key: format!("{key}-{order_id}"),
        order_id: order_id.into(),
    };
    for order_id in [&completed, &open] {
        inventory
            .reserve_stock(pb::ReserveStockRequest {
                idempotency_key: format!("reserve-{order_id}"),
                store_id: STORE.into(),
                order_id: order_id.clone(),
                lines: vec![
                    pb::StockLine {
                        sku: "LATTE-12".into(),
                        quantity: 2,
                    },
                    pb::StockLine {
                        sku: "CROISSANT".into(),
                        quantity: 1,
                    },
                ],
            })
            .await
            .unwrap();
        saga.accept_order(transition("accept", order_id))
            .await
            .unwrap();
        commits += 2;
    }
    saga.record_payment_captured(pb::RecordPaymentCapturedRequest {
        idempotency_key: "pay".into(),
        order_id: completed.clone(),
        payment_id: "pay_1".into(),
        amount: Some(pb::Money { cents: 1225 }),
    })
    .await
    .unwrap();
    barista
        .start_preparing(transition("start", &completed))
        .await
        .unwrap();
    barista
        .mark_ready(transition("ready", &completed))
        .await
        .unwrap();
    barista
        .complete_order(transition("complete", &completed))
        .await
        .unwrap();
    inventory
        .commit_reservation(pb::CommitReservationRequest {
            idempotency_key: "commit-stock".into(),
            store_id: STORE.into(),
            order_id: completed.clone(),
        })
        .await
        .unwrap();
    loyalty
        .earn_points(pb::EarnPointsRequest {
            idempotency_key: "earn".into(),
            customer_id: "c-1".into(),
            order_id: completed.clone(),
            amount: Some(pb::Money { cents: 1225 }),
        })
        .await
        .unwrap();
    barista
        .cancel_order(pb::CancelOrderRequest {
            idempotency_key: "cancel".into(),
            order_id: cancelled.clone(),
            reason: "customer left".into(),
        })
        .await
        .unwrap();
    commits += 7;

    // --- the log: every commit once, in order per aggregate, each aggregate on one shard
    let outbox_empty = || async {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&events_db.pool)
            .await
            .unwrap();
        waiting == 0
    };
    eventually("the relay to empty the outbox", outbox_empty).await;
    let seen = replay(&stream.read_all().await);
    assert_eq!(seen.commits_applied, commits);
    assert_eq!(
        seen.last_sequence[&("order".to_owned(), completed.clone())],
        6
    );

    // --- DynamoDB: the barista board shows the open order only, and the day's metrics
    let open_orders = || async {
        dynamodb
            .query()
            .table_name(&tables.orders)
            .index_name(OPEN_BY_STORE_INDEX)
            .key_condition_expression("gsi2pk = :store")
            .expression_attribute_values(":store", AttributeValue::S(format!("STORE#{STORE}")))
            .send()
            .await
            .unwrap()
            .items()
            .iter()
            .filter_map(|item| item.get("order_id")?.as_s().ok().cloned())
            .collect::<Vec<_>>()
    };
    eventually("the board to show only the open order", || async {
        open_orders().await == vec![open.clone()]
    })
    .await;

    // --- history: every order with its status, the completed order's timeline, loyalty, stock
    let history_done = || async {
        let statuses: Vec<(String, String)> = sqlx::query_as(
            "SELECT order_id::text, status FROM history.orders ORDER BY customer_id",
        )
        .fetch_all(&views_db.pool)
        .await
        .unwrap();
        statuses
            == vec![
                (completed.clone(), "completed".to_owned()),
                (open.clone(), "accepted".to_owned()),
                (cancelled.clone(), "cancelled".to_owned()),
            ]
    };
    eventually("history to show every order's status", history_done).await;
    let timeline: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM history.order_status_changes WHERE order_id = $1::uuid",
    )
    .bind(&completed)
    .fetch_one(&views_db.pool)
    .await
    .unwrap();
    assert_eq!(
        timeline, 6,
        "placed, accepted, paid, preparing, ready, completed"
    );
    eventually("the loyalty ledger", || async {
        let points: Option<i64> = sqlx::query_scalar(
            "SELECT sum(points)::bigint FROM history.loyalty_ledger WHERE customer_id = 'c-1'",
        )
        .fetch_one(&views_db.pool)
        .await
        .unwrap();
        points == Some(122)
    })
    .await;

    // --- analytics: one fact per order, its items, the hour dimension
    eventually("analytics facts", || async {
        let facts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT order_id, status, total_cents FROM analytics.fact_orders ORDER BY customer_id",
        )
        .fetch_all(&views_db.pool)
        .await
        .unwrap();
        facts
            == vec![
                (completed.clone(), "completed".to_owned(), 1225),
                (open.clone(), "accepted".to_owned(), 1225),
                (cancelled.clone(), "cancelled".to_owned(), 1225),
            ]
    })
    .await;
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.fact_order_items")
        .fetch_one(&views_db.pool)
        .await
        .unwrap();
    assert_eq!(items, 6);

    stop.send(true).unwrap();
    api.await.unwrap().unwrap();
    relay.await.unwrap().unwrap();
    worker.await.unwrap();
}
