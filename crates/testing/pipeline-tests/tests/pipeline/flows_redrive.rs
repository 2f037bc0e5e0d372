//! `flows redrive`: a saga commit parked for a cause that is gone (here: the flows were given a
//! service token signed by a key the API's JWKS does not hold, so the API refused it as
//! UNAUTHENTICATED, which no retry can change) is applied by a redrive once the operator has
//! fixed the cause.

use std::future::pending;
use std::sync::Arc;

use auth_tokens::{SigningKey, TokenIssuer};
use command_api::auth::Role;
use flows::app::Application;
use flows::payments::SandboxGateway;
use flows::queues::PAYMENTS_QUEUE;
use flows::settings::{LayeredSettings, Settings};
use kinesis_consumer::dead_letters::DeadLetterQueue;
use kinesis_consumer::{LeaseTable, ParkedKind, ParkedStore};
use proto::v1 as pb;
use proto::v1::order_service_client::OrderServiceClient;
use test_support::{unique_name, TEST_AUDIENCE, TEST_ISSUER};

use crate::flows_rig::fresh_queue;
use crate::support::{eventually, Pipeline, STORE};
use crate::workload::{open_the_store, Clients};

/// Settings of a flows process that runs only the saga, on fresh tables and queues.
pub(crate) async fn saga_settings(pipeline: &Pipeline) -> Settings {
    let sqs = aws_sdk_sqs::Client::new(&pipeline.sdk);
    let poison = fresh_queue(&sqs, DeadLetterQueue::RESOURCE).await;
    let payments = fresh_queue(&sqs, PAYMENTS_QUEUE).await;
    let mut settings = Settings::built_in().unwrap();
    settings.flows.workers = "order_saga".into();
    settings.command_api.url = format!("http://{}", pipeline.grpc_address);
    settings.command_api.attempts = 2;
    settings.kinesis.stream_name = pipeline.stream.name.clone();
    settings.sqs.projector_dlq_url = Some(poison.dead_letter_url);
    settings.sqs.payments_queue_url = payments.queue_url;
    settings.sqs.payments_dlq_url = Some(payments.dead_letter_url);
    settings.dynamodb.leases_table = unique_name("redrive-leases");
    settings.dynamodb.parked_table = unique_name("redrive-parked");
    LeaseTable::create_table(&pipeline.dynamodb, &settings.dynamodb.leases_table)
        .await
        .unwrap();
    ParkedStore::create_table(&pipeline.dynamodb, &settings.dynamodb.parked_table)
        .await
        .unwrap();
    settings.runtime.lease_duration_ms = 1_500;
    settings.runtime.worker_id = Some("saga-1".into());
    settings.admin.port = 0;
    settings.log.filter = "warn".into();
    settings
}

/// `customer` orders one latte ($4.50) with no payment token (the store records the payment);
/// returns the order id.
pub(crate) async fn place_order(pipeline: &Pipeline, customer: &str) -> String {
    let order_id = uuid::Uuid::new_v4().to_string();
    OrderServiceClient::with_interceptor(
        pipeline.channel.clone(),
        pipeline.bearer(Role::Customer, customer),
    )
    .place_order(pb::PlaceOrderRequest {
        idempotency_key: format!("place-{order_id}"),
        order_id: order_id.clone(),
        store_id: STORE.into(),
        customer_id: customer.into(),
        lines: vec![pb::OrderLine {
            sku: "LATTE-12".into(),
            quantity: 1,
            customisations: vec![],
        }],
        note: String::new(),
        payment_token: String::new(),
    })
    .await
    .unwrap();
    order_id
}

#[tokio::test]
async fn a_parked_saga_commit_is_applied_by_flows_redrive_once_the_cause_is_gone() {
    let pipeline = Pipeline::start().await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let mut settings = saga_settings(&pipeline).await;
    // The misconfiguration: a service token from a key the command API's JWKS does not hold.
    let stranger = SigningKey::generate().unwrap();
    let foreign_token = TokenIssuer::new(&stranger, TEST_ISSUER, TEST_AUDIENCE)
        .mint(
            "flows",
            Role::Service,
            None,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    settings.auth.service_token = Some(foreign_token.into());
    let app = Application::build_with_gateway(
        &settings,
        Arc::new(SandboxGateway::new(std::time::Duration::from_secs(1))),
    )
    .await
    .unwrap();
    let flows = tokio::spawn(async move { app.run_until_stopped(pending()).await.unwrap() });

    let order_id = place_order(&pipeline, "c-1").await;

    let parked = ParkedStore::new(pipeline.dynamodb.clone(), &settings.dynamodb.parked_table);
    eventually("the saga to park the order's commit", || async {
        !parked
            .list("order_saga", "order", &order_id)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let waiting = parked.list("order_saga", "order", &order_id).await.unwrap();
    assert_eq!(waiting[0].kind, ParkedKind::Poison, "{waiting:?}");
    assert!(waiting[0].reason.contains("Unauthenticated"), "{waiting:?}");
    flows.abort();
    let _ = flows.await;
    let status = |order: pb::Order| order.status();
    let placed = clients
        .saga
        .get_order(pb::GetOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(placed), pb::OrderStatus::Placed);

    // The operator gives the flows a token the issuer minted and redrives the parked commits.
    settings.auth.service_token = Some(pipeline.service_token());
    let outcomes = flows::app::redrive(&settings, "saga", None).await.unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].1, order_id);
    assert_eq!(
        (outcomes[0].2.applied, outcomes[0].2.stopped_at.clone()),
        (1, None)
    );
    assert!(parked
        .list("order_saga", "order", &order_id)
        .await
        .unwrap()
        .is_empty());
    let accepted = clients
        .saga
        .get_order(pb::GetOrderRequest { order_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status(accepted),
        pb::OrderStatus::Accepted,
        "stock reserved, order accepted"
    );
    pipeline.stop().await;
}
