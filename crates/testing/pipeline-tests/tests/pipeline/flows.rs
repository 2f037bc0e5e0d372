//! The asynchronous flows end to end: orders dropped on the intake queue by a delivery platform
//! go through the saga, the payment processor (with the sandbox gateway), the barista and back,
//! on the real command API, relay, Kinesis, SQS queues with redrive policies and PostgreSQL.

use std::future::pending;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use flows::app::Application;
use flows::dead_letters::DeadLetters;
use flows::intake::IntakeOrder;
use flows::notifications::{Notification, NotificationKind};
use flows::payments::{
    ChargeOutcome, ChargeRequest, GatewayError, PaymentGateway, PaymentRequest, RefundRequest,
    SandboxGateway, TestCard,
};
use flows::settings::Settings;
use kinesis_consumer::{LeaseTable, ParkedStore};
use proto::v1 as pb;
use test_support::{unique_name, PATIENCE};
use tokio::task::JoinHandle;

use crate::support::{eventually, Pipeline, STORE};
use crate::workload::{open_the_store, Clients};

/// The flows' queues, tables and settings for one test, and the sandbox gateway every flows
/// process of the test shares (a real gateway outlives the workers that call it).
pub(crate) struct Rig {
    pub(crate) settings: Settings,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sandbox: SandboxGateway,
}

impl Rig {
    pub(crate) async fn new(pipeline: &Pipeline) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&pipeline.sdk);
        let (intake, intake_dlq) = queue_pair(&sqs, "intake", false).await;
        let (payments, payments_dlq) = queue_pair(&sqs, "payments", true).await;
        let (notifications, notifications_dlq) = queue_pair(&sqs, "notifications", false).await;
        let projector_dlq = create_queue(&sqs, &unique_name("flows-poison"), false, None).await;

        let mut settings = Settings::defaults().unwrap();
        settings.auth.service_token = Some(pipeline.service_token());
        settings.command_api.url = format!("http://{}", pipeline.grpc_address);
        settings.kinesis.stream_name = pipeline.stream.name.clone();
        let queues = &mut settings.sqs;
        queues.projector_dlq_url = Some(projector_dlq);
        queues.intake_queue_url = Some(intake);
        queues.intake_dlq_url = Some(intake_dlq);
        queues.payments_queue_url = Some(payments);
        queues.payments_dlq_url = Some(payments_dlq);
        queues.notifications_queue_url = Some(notifications);
        queues.notifications_dlq_url = Some(notifications_dlq);
        // Short waits so a killed worker's messages and leases come back quickly.
        queues.wait_time_seconds = 1;
        queues.visibility_timeout_seconds = 2;
        queues.retry_initial_ms = 1_000;
        queues.retry_max_ms = 1_000;
        settings.runtime.lease_duration_ms = 1_500;
        settings.runtime.batch_size = 25;
        settings.admin.port = 0;
        settings.log.filter = "warn".into();
        let mut rig = Self {
            settings,
            sqs,
            // Longer than the visibility timeout: the slow card needs the heartbeat.
            sandbox: SandboxGateway::new(std::time::Duration::from_secs(3)),
        };
        rig.new_consumer_groups(pipeline).await;
        rig
    }

    /// New lease and parked tables: flows processes spawned from now on read the log from its
    /// start, as if every commit were delivered again.
    pub(crate) async fn new_consumer_groups(&mut self, pipeline: &Pipeline) {
        let leases_table = unique_name("flows-leases");
        let parked_table = unique_name("flows-parked");
        LeaseTable::create_table(&pipeline.dynamodb, &leases_table)
            .await
            .unwrap();
        ParkedStore::create_table(&pipeline.dynamodb, &parked_table)
            .await
            .unwrap();
        self.settings.dynamodb.leases_table = leases_table;
        self.settings.dynamodb.parked_table = parked_table;
    }

    /// A flows process (every worker) paying through `gateway`, running until the task is
    /// aborted: a crash.
    pub(crate) async fn spawn(
        &self,
        worker_id: &str,
        gateway: Arc<dyn PaymentGateway>,
    ) -> JoinHandle<()> {
        let mut settings = self.settings.clone();
        settings.runtime.worker_id = Some(worker_id.into());
        let app = Application::build_with_gateway(&settings, gateway)
            .await
            .unwrap();
        tokio::spawn(async move { app.run_until_stopped(pending()).await.unwrap() })
    }

    /// What a delivery platform drops on the intake queue.
    pub(crate) async fn drop_intake(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(self.settings.sqs.intake_queue_url.as_deref().unwrap())
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// The first `count` notifications (read messages are deleted), and any that came with them.
    pub(crate) async fn notifications(&self, count: usize) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while seen.len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {count} notifications, got {seen:?}"
            );
            self.read_notifications(&mut seen).await;
        }
        seen
    }

    async fn read_notifications(&self, seen: &mut Vec<Notification>) {
        let url = self
            .settings
            .sqs
            .notifications_queue_url
            .as_deref()
            .unwrap();
        let output = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in output.messages.unwrap_or_default() {
            seen.push(serde_json::from_str(message.body().unwrap()).unwrap());
            self.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }

    pub(crate) fn dead_letters(&self, queue: &str) -> DeadLetters {
        DeadLetters::new(self.sqs.clone(), self.settings.queue(queue).unwrap())
    }
}

pub(crate) async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    fifo: bool,
    redrive_to: Option<&str>,
) -> String {
    let mut request = sqs.create_queue().queue_name(name);
    if fifo {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some(arn) = redrive_to {
        request = request.attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": "5"}).to_string(),
        );
    }
    request.send().await.unwrap().queue_url.unwrap()
}

/// A queue and its dead-letter queue, as `scripts/resources.py` declares them.
pub(crate) async fn queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    fifo: bool,
) -> (String, String) {
    let base = unique_name(&format!("flows-{name}"));
    let suffix = if fifo { ".fifo" } else { "" };
    let dlq = create_queue(sqs, &format!("{base}-dlq{suffix}"), fifo, None).await;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let queue = create_queue(sqs, &format!("{base}{suffix}"), fifo, Some(&arn)).await;
    (queue, dlq)
}

/// An intake order from `platform` for two oat lattes and a croissant ($12.25).
pub(crate) fn intake_order(
    platform: &str,
    external_id: &str,
    customer: &str,
    card: TestCard,
) -> String {
    serde_json::json!({
        "schema_version": 1,
        "platform": platform,
        "external_order_id": external_id,
        "store_id": STORE,
        "customer_id": customer,
        "lines": [
            {"sku": "LATTE-12", "quantity": 2, "customisations": ["oat milk"]},
            {"sku": "CROISSANT", "quantity": 1}
        ],
        "note": "leave at the door",
        "payment": {"payment_token": card.token()}
    })
    .to_string()
}

pub(crate) fn order_id_of(body: &str) -> String {
    IntakeOrder::parse(body).unwrap().order_id().to_string()
}

pub(crate) async fn order(clients: &mut Clients, order_id: &str) -> Option<pb::Order> {
    clients
        .saga
        .get_order(pb::GetOrderRequest {
            order_id: order_id.into(),
        })
        .await
        .ok()
        .map(|response| response.into_inner())
}

/// SKU -> (on hand, reserved) at [`STORE`].
pub(crate) async fn stock(clients: &mut Clients) -> Vec<(String, u32, u32)> {
    let inventory = clients
        .inventory
        .get_inventory(pb::GetInventoryRequest {
            store_id: STORE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut levels: Vec<(String, u32, u32)> = inventory
        .levels
        .into_iter()
        .map(|level| (level.sku, level.on_hand, level.reserved))
        .collect();
    levels.sort();
    levels
}

async fn loyalty(clients: &mut Clients, customer: &str) -> Option<pb::LoyaltyAccount> {
    clients
        .loyalty
        .get_loyalty_account(pb::GetLoyaltyAccountRequest {
            customer_id: customer.into(),
        })
        .await
        .ok()
        .map(|response| response.into_inner())
}

/// The barista makes and hands over the order.
async fn play_barista(clients: &mut Clients, order_id: &str) {
    let transition = |step: &str| pb::OrderTransitionRequest {
        idempotency_key: format!("barista-{step}-{order_id}"),
        order_id: order_id.into(),
    };
    clients
        .barista
        .start_preparing(transition("start"))
        .await
        .unwrap();
    clients
        .barista
        .mark_ready(transition("ready"))
        .await
        .unwrap();
    clients
        .barista
        .complete_order(transition("complete"))
        .await
        .unwrap();
}

/// How many events of `event_type` the order has, or mention it (inventory and loyalty), in the
/// event store.
pub(crate) async fn events_about(pipeline: &Pipeline, event_type: &str, order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = $1 \
         AND (aggregate_id = $2 OR payload::text LIKE '%' || $2 || '%')",
    )
    .bind(event_type)
    .bind(order_id)
    .fetch_one(&pipeline.events_db.pool)
    .await
    .unwrap()
}

pub(crate) async fn is_paid_and_accepted(clients: &mut Clients, order_id: &str) -> bool {
    order(clients, order_id)
        .await
        .is_some_and(|o| o.status() == pb::OrderStatus::Accepted && o.payment_captured)
}

#[tokio::test]
async fn an_intake_order_is_paid_completed_committed_and_earns_points_at_its_tier() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    // $100 earlier made the customer Silver (1,000 points): 1.25x from now on.
    clients
        .loyalty
        .earn_points(pb::EarnPointsRequest {
            idempotency_key: "earlier-order".into(),
            customer_id: "c-silver".into(),
            order_id: uuid::Uuid::new_v4().to_string(),
            amount: Some(pb::Money { cents: 10_000 }),
        })
        .await
        .unwrap();
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("ubereats", "UE-1001", "c-silver", TestCard::Approve);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually(
        "the order placed, stock reserved, accepted and paid",
        || {
            let mut clients = Clients::new(&pipeline);
            let order_id = order_id.clone();
            async move { is_paid_and_accepted(&mut clients, &order_id).await }
        },
    )
    .await;
    assert_eq!(
        stock(&mut clients).await,
        [("CROISSANT".into(), 20, 1), ("LATTE-12".into(), 20, 2)]
    );

    play_barista(&mut clients, &order_id).await;
    // $12.25 earns 10 points a dollar at Silver's 1.25x: 153.125, rounded down.
    eventually("the reservation committed and the points earned", || {
        let mut clients = Clients::new(&pipeline);
        async move {
            let account = loyalty(&mut clients, "c-silver").await.unwrap();
            account.balance == 1_000 + 153
                && stock(&mut clients).await
                    == [("CROISSANT".into(), 19, 0), ("LATTE-12".into(), 18, 0)]
        }
    })
    .await;
    let account = loyalty(&mut clients, "c-silver").await.unwrap();
    assert_eq!(account.tier(), pb::LoyaltyTier::Silver);

    // The customer heard of the upgrade to Silver and of the ready order.
    let seen = rig.notifications(2).await;
    let kinds: Vec<&NotificationKind> = seen.iter().map(|n| &n.message).collect();
    assert!(kinds.contains(&&NotificationKind::TierUpgraded {
        from: domain::Tier::Bronze,
        to: domain::Tier::Silver,
    }));
    assert!(kinds.contains(&&NotificationKind::OrderReady {
        order_id: order_id.clone(),
        store_id: STORE.into(),
    }));
    assert!(seen.iter().all(|n| n.customer_id == "c-silver"));

    // One charge of the total.
    let ledger = rig.sandbox.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].idempotency_id, format!("{order_id}/charge"));
    assert_eq!(ledger[0].amount_cents, 1_225);
    assert!(matches!(ledger[0].outcome, ChargeOutcome::Captured { .. }));
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn a_declined_card_rejects_the_order_releases_its_stock_and_tells_the_customer() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("deliveroo", "D-77", "c-2", TestCard::Decline);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually("the order rejected and its reservation released", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        let pipeline = &pipeline;
        async move {
            order(&mut clients, &order_id)
                .await
                .is_some_and(|o| o.status() == pb::OrderStatus::Rejected)
                && events_about(pipeline, "ReservationReleased", &order_id).await == 1
        }
    })
    .await;
    assert_eq!(events_about(&pipeline, "StockReserved", &order_id).await, 1);
    assert_eq!(
        stock(&mut clients).await,
        [("CROISSANT".into(), 20, 0), ("LATTE-12".into(), 20, 0)]
    );

    let seen = rig.notifications(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].customer_id, "c-2");
    assert_eq!(
        seen[0].message,
        NotificationKind::OrderRejected {
            order_id: order_id.clone(),
            store_id: STORE.into(),
            reason: "payment declined".into(),
        }
    );
    assert_eq!(
        rig.sandbox.ledger()[0].outcome,
        ChargeOutcome::Declined {
            reason: "card declined".into()
        }
    );
    flows.abort();
    pipeline.stop().await;
}

/// A gateway in front of the sandbox whose first charge goes through and then never answers:
/// the worker calling it is killed while it waits, after the charge, before recording it.
struct ChargeThenHang {
    sandbox: SandboxGateway,
    hung: AtomicBool,
}

#[async_trait]
impl PaymentGateway for ChargeThenHang {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, GatewayError> {
        let outcome = self.sandbox.charge(request).await;
        if !self.hung.swap(true, Ordering::SeqCst) {
            pending::<()>().await;
        }
        outcome
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError> {
        self.sandbox.refund(request).await
    }
}

#[tokio::test]
async fn duplicate_deliveries_and_a_worker_killed_mid_payment_never_double_charge_reserve_or_earn()
{
    let pipeline = Pipeline::start().await;
    let mut rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let first = rig
        .spawn(
            "flows-1",
            Arc::new(ChargeThenHang {
                sandbox: rig.sandbox.clone(),
                hung: AtomicBool::new(false),
            }),
        )
        .await;

    // The platform delivers its order twice.
    let body = intake_order("justeat", "JE-5", "c-3", TestCard::Approve);
    rig.drop_intake(&body).await;
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually("the card charged by the first worker", || async {
        rig.sandbox.ledger().len() == 1
    })
    .await;
    // Killed mid-message: charged, not recorded, not deleted. The saga dies with it, wherever
    // it was.
    first.abort();
    let _ = first.await;
    let second = rig.spawn("flows-2", Arc::new(rig.sandbox.clone())).await;
    eventually("the payment recorded by the second worker", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move { is_paid_and_accepted(&mut clients, &order_id).await }
    })
    .await;

    // The saga's payment request delivered again, past the queue's deduplication window.
    let again = PaymentRequest::charge(&order_id, STORE, "c-3", 1_225, TestCard::Approve.token());
    rig.sqs
        .send_message()
        .queue_url(rig.settings.sqs.payments_queue_url.as_deref().unwrap())
        .message_body(serde_json::to_string(&again).unwrap())
        .message_group_id(&order_id)
        .message_deduplication_id(format!("{}-late-copy", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap();
    eventually("the late copy handled", || async {
        rig.sandbox.ledger()[0].calls >= 3
    })
    .await;

    play_barista(&mut clients, &order_id).await;
    eventually("the reservation committed and the points earned", || {
        let mut clients = Clients::new(&pipeline);
        async move {
            loyalty(&mut clients, "c-3")
                .await
                .is_some_and(|a| a.balance > 0)
                && stock(&mut clients).await
                    == [("CROISSANT".into(), 19, 0), ("LATTE-12".into(), 18, 0)]
        }
    })
    .await;
    // Every commit delivered again: a replacement with new consumer groups reads the whole
    // log from its start through the saga and the notifications.
    second.abort();
    let _ = second.await;
    rig.new_consumer_groups(&pipeline).await;
    let third = rig.spawn("flows-3", Arc::new(rig.sandbox.clone())).await;
    pipeline.wait_published().await;
    pipeline
        .wait_groups_caught_up(&rig.settings.dynamodb.leases_table, 2)
        .await;

    let ledger = rig.sandbox.ledger();
    assert_eq!(ledger.len(), 1, "one charge: {ledger:?}");
    assert!(!ledger[0].refunded);
    for (event, expected) in [
        ("OrderPlaced", 1),
        ("StockReserved", 1),
        ("OrderAccepted", 1),
        ("PaymentCaptured", 1),
        ("ReservationCommitted", 1),
        ("PointsEarned", 1),
    ] {
        assert_eq!(
            events_about(&pipeline, event, &order_id).await,
            expected,
            "{event} events of the order"
        );
    }
    // Bronze: $12.25 earns 122 points, once.
    assert_eq!(loyalty(&mut clients, "c-3").await.unwrap().balance, 122);
    third.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn a_malformed_intake_order_is_dead_lettered_with_its_reason_and_placed_once_corrected() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let good = intake_order("ubereats", "UE-2002", "c-4", TestCard::Approve);
    let bad = good.replace("LATTE-12", "latte-12");
    rig.drop_intake(&bad).await;
    let dead_letters = rig.dead_letters("intake");
    eventually("the malformed order in the dead-letter queue", || async {
        !dead_letters.list(10).await.unwrap().is_empty()
    })
    .await;
    let listed = dead_letters.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let letter = &listed[0];
    assert_eq!(letter.body, bad);
    assert!(
        letter.reason.contains("lines[0].sku") && letter.reason.contains("uppercase"),
        "{}",
        letter.reason
    );
    assert_eq!(
        dead_letters.show(&letter.message_id).await.unwrap().body,
        bad
    );

    // The operator corrects it and re-drives it.
    let moved = dead_letters
        .redrive(Some(&letter.message_id), Some(&good))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let order_id = order_id_of(&good);
    eventually("the corrected order placed and paid", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move { is_paid_and_accepted(&mut clients, &order_id).await }
    })
    .await;
    assert!(dead_letters.list(10).await.unwrap().is_empty());
    assert_eq!(events_about(&pipeline, "OrderPlaced", &order_id).await, 1);
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn a_gateway_that_keeps_timing_out_is_retried_past_the_queues_delivery_limit_until_its_deadline_and_a_slow_one_is_called_once(
) {
    let pipeline = Pipeline::start().await;
    let mut rig = Rig::new(&pipeline).await;
    // Five deliveries (the queue's maxReceiveCount) a second apart take about five seconds.
    rig.settings.payments.charge_deadline_ms = 12_000;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    // Two replicas: a message whose visibility lapsed would go to the idle one.
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;
    let replica = rig.spawn("flows-2", Arc::new(rig.sandbox.clone())).await;

    let slow = intake_order("ubereats", "UE-SLOW", "c-5", TestCard::SlowApprove);
    let timing_out = intake_order("ubereats", "UE-TIMEOUT", "c-6", TestCard::Timeout);
    rig.drop_intake(&slow).await;
    rig.drop_intake(&timing_out).await;

    // Retried past the queue's delivery limit (requeued, never dead-lettered), then given up
    // at its deadline.
    eventually("more gateway calls than the queue's deliveries", || async {
        rig.sandbox.timeouts() > 5
    })
    .await;
    let unpaid_id = order_id_of(&timing_out);
    eventually("the timing-out order rejected", || {
        let mut clients = Clients::new(&pipeline);
        let unpaid_id = unpaid_id.clone();
        async move {
            order(&mut clients, &unpaid_id)
                .await
                .is_some_and(|o| o.status() == pb::OrderStatus::Rejected)
        }
    })
    .await;
    assert!(
        rig.sandbox.timeouts() > 5,
        "{} calls",
        rig.sandbox.timeouts()
    );
    assert!(rig
        .dead_letters("payments")
        .list(10)
        .await
        .unwrap()
        .is_empty());
    assert!(
        !order(&mut clients, &unpaid_id)
            .await
            .unwrap()
            .payment_captured
    );

    // The slow call outlived the visibility timeout: extended, never delivered twice.
    let slow_id = order_id_of(&slow);
    eventually("the slow payment captured", || {
        let mut clients = Clients::new(&pipeline);
        let slow_id = slow_id.clone();
        async move { is_paid_and_accepted(&mut clients, &slow_id).await }
    })
    .await;
    let ledger = rig.sandbox.ledger();
    let charge = ledger
        .iter()
        .find(|entry| entry.idempotency_id == format!("{slow_id}/charge"))
        .unwrap();
    assert_eq!(charge.calls, 1, "{charge:?}");
    flows.abort();
    replica.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_after_payment_is_refunded_and_its_stock_released() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("ubereats", "UE-CANCEL", "c-7", TestCard::Approve);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually("the order accepted and paid", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move { is_paid_and_accepted(&mut clients, &order_id).await }
    })
    .await;
    clients
        .barista
        .cancel_order(pb::CancelOrderRequest {
            idempotency_key: format!("cancel-{order_id}"),
            order_id: order_id.clone(),
            reason: "the courier never came".into(),
        })
        .await
        .unwrap();
    eventually("the payment refunded and the stock released", || {
        let mut clients = Clients::new(&pipeline);
        let rig = &rig;
        async move {
            rig.sandbox.ledger().first().is_some_and(|c| c.refunded)
                && stock(&mut clients).await
                    == [("CROISSANT".into(), 20, 0), ("LATTE-12".into(), 20, 0)]
        }
    })
    .await;
    assert_eq!(rig.sandbox.ledger().len(), 1);
    eventually("the refund recorded on the order", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move {
            order(&mut clients, &order_id)
                .await
                .is_some_and(|o| o.payment_refunded)
        }
    })
    .await;
    assert_eq!(
        events_about(&pipeline, "PaymentRefunded", &order_id).await,
        1
    );
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn an_order_the_store_cannot_stock_is_rejected_uncharged_and_the_customer_told() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    // One latte left; the order wants two.
    open_the_store(&mut clients, 1).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("ubereats", "UE-EMPTY", "c-8", TestCard::Approve);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    let seen = rig.notifications(1).await;
    assert_eq!(
        seen[0].message,
        NotificationKind::OrderRejected {
            order_id: order_id.clone(),
            store_id: STORE.into(),
            reason: "out of stock".into(),
        }
    );
    let rejected = order(&mut clients, &order_id).await.unwrap();
    assert_eq!(rejected.status(), pb::OrderStatus::Rejected);
    assert_eq!(events_about(&pipeline, "StockReserved", &order_id).await, 0);
    assert!(rig.sandbox.ledger().is_empty(), "nothing charged");
    assert_eq!(
        stock(&mut clients).await,
        [("CROISSANT".into(), 1, 0), ("LATTE-12".into(), 1, 0)]
    );
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn an_order_whose_stock_a_client_reserved_itself_is_accepted_not_rejected() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let order_id = uuid::Uuid::new_v4().to_string();
    clients
        .saga
        .place_order(pb::PlaceOrderRequest {
            idempotency_key: format!("place-{order_id}"),
            order_id: order_id.clone(),
            store_id: STORE.into(),
            customer_id: "c-9".into(),
            lines: vec![pb::OrderLine {
                sku: "LATTE-12".into(),
                quantity: 1,
                customisations: vec![],
            }],
            note: String::new(),
            payment_token: TestCard::Approve.token().into(),
        })
        .await
        .unwrap();
    clients
        .inventory
        .reserve_stock(pb::ReserveStockRequest {
            idempotency_key: format!("client-reserve-{order_id}"),
            store_id: STORE.into(),
            order_id: order_id.clone(),
            lines: vec![pb::StockLine {
                sku: "LATTE-12".into(),
                quantity: 1,
            }],
        })
        .await
        .unwrap();
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;
    eventually("the order accepted and paid", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move { is_paid_and_accepted(&mut clients, &order_id).await }
    })
    .await;
    assert_eq!(events_about(&pipeline, "StockReserved", &order_id).await, 1);
    flows.abort();
    pipeline.stop().await;
}
