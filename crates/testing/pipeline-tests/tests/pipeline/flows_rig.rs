//! The flows' test rig, shared by the flows tests and the order trace test (its own binary):
//! queues shaped as the code declares them, consumer-group tables, a sandbox gateway, and the
//! reads the tests make.

use std::future::pending;
use std::sync::Arc;

use aws_support::queues::QueueUrls;
use aws_support::resources::QueueResource;
use flows::app::Application;
use flows::dead_letters::DeadLetters;
use flows::intake::IntakeOrder;
use flows::notifications::Notification;
use flows::payments::{PaymentGateway, SandboxGateway, TestCard};
use flows::queues::{INTAKE_QUEUE, NOTIFICATIONS_QUEUE, PAYMENTS_QUEUE, PURCHASE_ORDERS_QUEUE};
use flows::settings::{LayeredSettings, Settings};
use kinesis_consumer::dead_letters::DeadLetterQueue;
use kinesis_consumer::{LeaseTable, ParkedStore};
use proto::v1 as pb;
use test_support::{unique_name, PATIENCE};
use tokio::task::JoinHandle;

use crate::support::{Pipeline, STORE};
use crate::workload::Clients;

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
        let intake = fresh_queue(&sqs, INTAKE_QUEUE).await;
        let payments = fresh_queue(&sqs, PAYMENTS_QUEUE).await;
        let notifications = fresh_queue(&sqs, NOTIFICATIONS_QUEUE).await;
        let poison = fresh_queue(&sqs, DeadLetterQueue::RESOURCE).await;
        let purchase_orders = fresh_queue(&sqs, PURCHASE_ORDERS_QUEUE).await;

        let mut settings = Settings::built_in().unwrap();
        settings.auth.service_token = Some(pipeline.service_token());
        settings.command_api.url = format!("http://{}", pipeline.grpc_address);
        settings.kinesis.stream_name = pipeline.stream.name.clone();
        let queues = &mut settings.sqs;
        queues.projector_dlq_url = Some(poison.dead_letter_url);
        queues.intake_queue_url = intake.queue_url;
        queues.intake_dlq_url = Some(intake.dead_letter_url);
        queues.payments_queue_url = payments.queue_url;
        queues.payments_dlq_url = Some(payments.dead_letter_url);
        queues.notifications_queue_url = notifications.queue_url;
        queues.notifications_dlq_url = Some(notifications.dead_letter_url);
        queues.purchase_orders_queue_url = purchase_orders.queue_url;
        queues.purchase_orders_dlq_url = Some(purchase_orders.dead_letter_url);
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
        seen.extend(
            self.receive_json(url)
                .await
                .into_iter()
                .map(|body| serde_json::from_value(body).unwrap()),
        );
    }

    /// One receive (up to 10 messages, waiting up to a second) from the queue at `url`: each
    /// body as JSON, the message deleted.
    pub(crate) async fn receive_json(&self, url: &str) -> Vec<serde_json::Value> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let mut bodies = Vec::new();
        for message in output.messages.unwrap_or_default() {
            bodies.push(serde_json::from_str(message.body().unwrap()).unwrap());
            self.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        bodies
    }

    pub(crate) fn dead_letters(&self, queue: &str) -> DeadLetters {
        DeadLetters::new(self.sqs.clone(), self.settings.queue(queue).unwrap())
    }
}

/// Fresh queues shaped as `queue` declares them (the local stack and the deployment create
/// theirs from the same declaration), under a name of their own.
pub(crate) async fn fresh_queue(sqs: &aws_sdk_sqs::Client, queue: QueueResource) -> QueueUrls {
    queue
        .shape
        .create(sqs, &unique_name(&format!("flows-{}", queue.name)))
        .await
        .unwrap()
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
