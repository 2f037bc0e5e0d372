//! What must hold of the flows (saga, payments, notifications) once the pipeline has settled,
//! by the contract's "compensation is unconditional" and issue 15:
//!
//! - no order is left in Placed;
//! - no order whose charge was requested is unresolved past the payment deadline;
//! - every store's `reserved` stock equals the reservations of its open orders (none leaked by
//!   a cancelled, rejected or completed order);
//! - every captured payment is on a completed order or refunded (or on an order still open);
//! - every completed order was charged, reserved, committed and credited exactly once;
//! - no notification is lost: every notification-worthy event has its message on the
//!   notifications queue (duplicates allowed);
//! - nothing is left parked that a redrive would apply.
//!
//! The checks read the event store, the API (stock levels), the notifications queue and the
//! parked table; they are retried until they hold or the settling deadline passes, since the
//! flows may still be catching up after the last fault.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use auth_tokens::client::Bearer;
use auth_tokens::{Role, TokenIssuer};
use aws_sdk_sqs::types::QueueAttributeName;
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use serde::Deserialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::time::Instant;
use tonic::transport::Endpoint;

use crate::checks::Verdict;
use crate::load::{Ledger, STOCK_ON_HAND, STORES};

/// Between two rounds of the checks while the flows catch up.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How long after the payment deadline an unresolved charge still counts as being resolved:
/// the processor acts on the charge's next delivery (at most the run's longest queue retry
/// delay away), then the rejection goes through the saga.
const DEADLINE_SLACK: Duration = Duration::from_secs(20);

/// An order's story as the store tells it.
#[derive(Debug, Default, Clone)]
struct OrderStory {
    store_id: String,
    status: &'static str,
    /// Placed with a payment token: the saga requests a charge once it accepts the order.
    has_payment_token: bool,
    accepted_at: Option<OffsetDateTime>,
    /// Event counts by type, of the order's own events and of the inventory and loyalty events
    /// that name it.
    counts: BTreeMap<String, usize>,
    /// SKU -> quantity of its reservation, while held.
    held: BTreeMap<String, i64>,
}

impl OrderStory {
    fn count(&self, event_type: &str) -> usize {
        self.counts.get(event_type).copied().unwrap_or(0)
    }

    fn is_open(&self) -> bool {
        matches!(self.status, "Placed" | "Accepted" | "Preparing" | "Ready")
    }
}

/// The status an order event leads to, for those that change it.
fn status_after(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "OrderPlaced" => "Placed",
        "OrderAccepted" => "Accepted",
        "PreparationStarted" => "Preparing",
        "OrderMarkedReady" => "Ready",
        "OrderCompleted" => "Completed",
        "OrderRejected" => "Rejected",
        "OrderCancelled" => "Cancelled",
        _ => return None,
    })
}

#[derive(Debug, Deserialize)]
struct Line {
    sku: String,
    quantity: i64,
}

/// Every order's story, from the store.
async fn order_stories(pool: &PgPool) -> sqlx::Result<HashMap<String, OrderStory>> {
    type Row = (
        String,
        String,
        String,
        OffsetDateTime,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<serde_json::Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, event_type, recorded_at, \
         jsonb_path_query_first(payload, '$.**.order_id') #>> '{}', \
         jsonb_path_query_first(payload, '$.**.store_id') #>> '{}', \
         jsonb_path_query_first(payload, '$.**.payment_token') #>> '{}', \
         jsonb_path_query_first(payload, '$.**.lines') \
         FROM events WHERE aggregate_type IN ('order', 'inventory', 'loyalty') \
         ORDER BY global_position",
    )
    .fetch_all(pool)
    .await?;
    let mut stories: HashMap<String, OrderStory> = HashMap::new();
    for (kind, aggregate_id, event_type, recorded_at, order_id, store_id, token, lines) in rows {
        let order_id = match kind.as_str() {
            "order" => aggregate_id.clone(),
            _ => match order_id {
                Some(order_id) => order_id,
                None => continue,
            },
        };
        let story = stories.entry(order_id).or_default();
        *story.counts.entry(event_type.clone()).or_default() += 1;
        if kind == "order" {
            if let Some(status) = status_after(&event_type) {
                story.status = status;
            }
            if event_type == "OrderPlaced" {
                story.store_id = store_id.unwrap_or_default();
                story.has_payment_token = token.is_some_and(|t| !t.is_empty());
            }
            if event_type == "OrderAccepted" {
                story.accepted_at = Some(recorded_at);
            }
        } else if kind == "inventory" {
            let lines: Vec<Line> = lines
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default();
            match event_type.as_str() {
                "StockReserved" => {
                    for line in lines {
                        *story.held.entry(line.sku).or_default() += line.quantity;
                    }
                }
                "ReservationReleased" | "ReservationCommitted" => story.held.clear(),
                _ => {}
            }
        }
    }
    Ok(stories)
}

/// The flows' checks, retried every few seconds until all hold or `deadline` passes.
pub async fn run(
    pool: &PgPool,
    aws: &aws_config::SdkConfig,
    ledger: &Ledger,
    tokens: &TokenIssuer,
    command_api: &Endpoint,
    payment_deadline: Duration,
    deadline: Instant,
) -> anyhow::Result<Vec<Verdict>> {
    let mut notifications = NotificationsSeen::new(aws);
    let mut tries = 0;
    loop {
        tries += 1;
        let stories = order_stories(pool).await?;
        let mut verdicts = vec![
            no_order_left_in_placed(&stories),
            no_charge_unresolved_past_the_deadline(&stories, payment_deadline),
            reserved_stock_equals_open_reservations(&stories, tokens, command_api).await,
            captured_payments_are_completed_or_refunded(&stories),
            completed_orders_got_everything_once(&stories),
            notifications.none_lost(pool).await?,
            nothing_left_parked(aws).await,
        ];
        let settled = verdicts.iter().all(|v| v.passed);
        if settled || Instant::now() >= deadline {
            let detail = format!(
                "{} orders placed by the clients: {} completed, {} open, {} cancelled, {} \
                 rejected, {} left to the payment deadline; checks tried {tries} time(s)",
                stories.len(),
                ledger.orders.completed,
                ledger.orders.open,
                ledger.orders.cancelled,
                ledger.orders.rejected,
                ledger.orders.left_unpaid,
            );
            verdicts.push(Verdict::new("the flows' orders", &[], detail));
            return Ok(verdicts);
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

fn no_order_left_in_placed(stories: &HashMap<String, OrderStory>) -> Verdict {
    let problems: Vec<String> = stories
        .iter()
        .filter(|(_, story)| story.status == "Placed")
        .map(|(id, story)| format!("order {id} is still Placed ({:?})", story.counts))
        .collect();
    Verdict::new(
        "no order left in Placed (the saga accepted or rejected each)",
        &problems,
        format!("{} orders", stories.len()),
    )
}

fn no_charge_unresolved_past_the_deadline(
    stories: &HashMap<String, OrderStory>,
    payment_deadline: Duration,
) -> Verdict {
    let now = OffsetDateTime::now_utc();
    let mut pending = 0;
    let mut problems = Vec::new();
    for (id, story) in stories {
        let resolved = story.count("PaymentCaptured") > 0
            || story.count("PaymentDeclined") > 0
            || !story.is_open();
        let (true, false, Some(accepted_at)) =
            (story.has_payment_token, resolved, story.accepted_at)
        else {
            continue;
        };
        let waited = now - accepted_at;
        if waited > payment_deadline + DEADLINE_SLACK {
            problems.push(format!(
                "order {id}: charge requested {:.0} s ago, neither captured nor declined, order \
                 still {} (payment deadline {} s, plus {} s to act on it)",
                waited.as_seconds_f64(),
                story.status,
                payment_deadline.as_secs(),
                DEADLINE_SLACK.as_secs()
            ));
        } else {
            pending += 1;
        }
    }
    Verdict::new(
        "no charge left unresolved past the payment deadline",
        &problems,
        format!(
            "{pending} charge(s) unresolved but still within the {} s deadline",
            payment_deadline.as_secs()
        ),
    )
}

async fn reserved_stock_equals_open_reservations(
    stories: &HashMap<String, OrderStory>,
    tokens: &TokenIssuer,
    command_api: &Endpoint,
) -> Verdict {
    const CHECK: &str = "reserved stock equals the open orders' reservations";
    let mut problems = Vec::new();
    let mut open_reserved: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (id, story) in stories {
        if story.held.is_empty() {
            continue;
        }
        if story.is_open() {
            for (sku, quantity) in &story.held {
                *open_reserved
                    .entry((story.store_id.clone(), sku.clone()))
                    .or_default() += quantity;
            }
        } else {
            problems.push(format!(
                "LEAK: order {id} is {} and still holds {:?}",
                story.status, story.held
            ));
        }
    }
    let levels = match stock_levels(tokens, command_api).await {
        Ok(levels) => levels,
        Err(error) => {
            problems.push(format!("cannot read the stock levels: {error:#}"));
            return Verdict::new(CHECK, &problems, String::new());
        }
    };
    let mut total = 0;
    for ((store, sku), level) in &levels {
        let expected = open_reserved
            .get(&(store.clone(), sku.clone()))
            .copied()
            .unwrap_or(0);
        total += level.reserved;
        if i64::from(level.reserved) != expected {
            problems.push(format!(
                "{store} {sku}: reserved {} but open orders hold {expected}",
                level.reserved
            ));
        }
        if i64::from(level.on_hand) > i64::from(STOCK_ON_HAND) {
            problems.push(format!(
                "{store} {sku}: on hand {} above what was stocked",
                level.on_hand
            ));
        }
    }
    Verdict::new(CHECK, &problems, format!("{total} units reserved in all"))
}

/// `reserved` and `on_hand` per (store, SKU), from the API.
async fn stock_levels(
    tokens: &TokenIssuer,
    command_api: &Endpoint,
) -> anyhow::Result<BTreeMap<(String, String), pb::StockLevel>> {
    let channel = command_api
        .clone()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let token = tokens.mint(
        "fault-run-checks",
        Role::Service,
        None,
        Duration::from_secs(600),
    )?;
    let bearer = Bearer::new(&token)?;
    let mut levels = BTreeMap::new();
    for store in STORES {
        let mut inventory =
            InventoryServiceClient::with_interceptor(channel.clone(), bearer.clone());
        let answer = inventory
            .get_inventory(pb::GetInventoryRequest {
                store_id: store.into(),
            })
            .await?
            .into_inner();
        for level in answer.levels {
            levels.insert((store.to_owned(), level.sku.clone()), level);
        }
    }
    Ok(levels)
}

fn captured_payments_are_completed_or_refunded(stories: &HashMap<String, OrderStory>) -> Verdict {
    let (mut completed, mut refunded, mut open) = (0, 0, 0);
    let mut problems = Vec::new();
    for (id, story) in stories {
        if story.count("PaymentCaptured") == 0 {
            continue;
        }
        if story.count("PaymentRefunded") > 0 {
            refunded += 1;
        } else if story.status == "Completed" {
            completed += 1;
        } else if story.is_open() {
            open += 1;
        } else {
            problems.push(format!(
                "order {id} was charged and ended {} without a refund",
                story.status
            ));
        }
    }
    Verdict::new(
        "every captured payment is on a completed order or refunded",
        &problems,
        format!(
            "{completed} on completed orders, {refunded} refunded, {open} on orders still open"
        ),
    )
}

fn completed_orders_got_everything_once(stories: &HashMap<String, OrderStory>) -> Verdict {
    let mut completed = 0;
    let mut problems = Vec::new();
    for (id, story) in stories.iter().filter(|(_, s)| s.status == "Completed") {
        completed += 1;
        for event_type in [
            "PaymentCaptured",
            "StockReserved",
            "ReservationCommitted",
            "PointsEarned",
        ] {
            if story.count(event_type) != 1 {
                problems.push(format!(
                    "completed order {id}: {} {event_type}",
                    story.count(event_type)
                ));
            }
        }
    }
    Verdict::new(
        "every completed order was charged, reserved, committed and credited once",
        &problems,
        format!("{completed} completed orders"),
    )
}

/// The notifications read off the queue so far (reading hides them for a while, so later
/// rounds of the checks keep what earlier ones saw).
struct NotificationsSeen {
    sqs: aws_sdk_sqs::Client,
    queue_url: Option<String>,
    seen: HashSet<String>,
    messages: usize,
}

impl NotificationsSeen {
    fn new(aws: &aws_config::SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(aws),
            queue_url: std::env::var("ORDERPIPE_SQS__NOTIFICATIONS_QUEUE_URL").ok(),
            seen: HashSet::new(),
            messages: 0,
        }
    }

    /// Reads the queue until it is empty, remembering every notification id.
    async fn drain(&mut self) -> anyhow::Result<()> {
        let Some(queue_url) = &self.queue_url else {
            anyhow::bail!("ORDERPIPE_SQS__NOTIFICATIONS_QUEUE_URL is not set");
        };
        let mut empty_in_a_row = 0;
        while empty_in_a_row < 2 {
            let received = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                // Hidden for longer than any run's settling, so each is read once.
                .visibility_timeout(3_600)
                .send()
                .await?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_in_a_row += 1;
                continue;
            }
            empty_in_a_row = 0;
            for message in messages {
                self.messages += 1;
                let id = message
                    .body
                    .as_deref()
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
                    .and_then(|body| body["notification_id"].as_str().map(str::to_owned));
                if let Some(id) = id {
                    self.seen.insert(id);
                }
            }
        }
        Ok(())
    }

    async fn none_lost(&mut self, pool: &PgPool) -> anyhow::Result<Verdict> {
        const CHECK: &str = "no notification lost (ready, rejected, tier upgraded)";
        if let Err(error) = self.drain().await {
            return Ok(Verdict::new(
                CHECK,
                &[format!("cannot read the notifications queue: {error:#}")],
                String::new(),
            ));
        }
        let worthy: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, sequence FROM events \
             WHERE event_type IN ('OrderMarkedReady', 'OrderRejected', 'TierUpgraded')",
        )
        .fetch_all(pool)
        .await?;
        let problems: Vec<String> = worthy
            .iter()
            .map(|(kind, id, sequence)| format!("{kind}/{id}/{sequence}"))
            .filter(|id| !self.seen.contains(id))
            .map(|id| format!("LOST: notification {id}"))
            .collect();
        Ok(Verdict::new(
            CHECK,
            &problems,
            format!(
                "{} notification-worthy events, {} messages on the queue ({} distinct)",
                worthy.len(),
                self.messages,
                self.seen.len()
            ),
        ))
    }
}

/// Nothing is parked (for any consumer group: views and flows share the parked table), so a
/// redrive would find nothing to apply; the dead-letter queues' depths are reported beside.
async fn nothing_left_parked(aws: &aws_config::SdkConfig) -> Verdict {
    const CHECK: &str = "nothing left parked that a redrive would apply";
    let Ok(table) = std::env::var("ORDERPIPE_DYNAMODB__PARKED_TABLE") else {
        return Verdict::new(
            CHECK,
            &["ORDERPIPE_DYNAMODB__PARKED_TABLE is not set".to_owned()],
            String::new(),
        );
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let mut parked: BTreeMap<String, usize> = BTreeMap::new();
    let mut start = None;
    loop {
        let page = match dynamodb
            .scan()
            .table_name(&table)
            .set_exclusive_start_key(start)
            .send()
            .await
        {
            Ok(page) => page,
            Err(error) => {
                return Verdict::new(
                    CHECK,
                    &[format!(
                        "cannot scan {table}: {}",
                        aws_support_chain(&error)
                    )],
                    String::new(),
                )
            }
        };
        for item in page.items.unwrap_or_default() {
            let key = item
                .get("parked_key")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            *parked.entry(key).or_default() += 1;
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let problems: Vec<String> = parked
        .iter()
        .map(|(key, count)| format!("PARKED: {key}: {count} commit(s)"))
        .collect();
    let depths = dead_letter_depths(aws).await;
    Verdict::new(
        CHECK,
        &problems,
        format!("dead-letter queue depths: {depths}"),
    )
}

/// "payments 0, notifications 0, ..." for every dead-letter queue the stack has.
async fn dead_letter_depths(aws: &aws_config::SdkConfig) -> String {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let mut depths = Vec::new();
    for name in ["PROJECTOR", "PAYMENTS", "NOTIFICATIONS", "INTAKE"] {
        let Ok(url) = std::env::var(format!("ORDERPIPE_SQS__{name}_DLQ_URL")) else {
            continue;
        };
        let depth = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()
            .and_then(|out| {
                out.attributes?
                    .get(&QueueAttributeName::ApproximateNumberOfMessages)
                    .cloned()
            })
            .unwrap_or_else(|| "?".into());
        depths.push(format!("{} {depth}", name.to_lowercase()));
    }
    depths.join(", ")
}

fn aws_support_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
