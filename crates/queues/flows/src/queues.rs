//! The SQS work queues of the flows, declared once: their names, kinds and the settings keys
//! that carry their URLs. The local stack (`scripts/resources.py`), the deployment (infra/cdk)
//! and the tests that need fresh queues all create them from these declarations (through the
//! generated manifest `infra/cdk/resources.json` for the first two).
//!
//! A new queue is one more const here, listed in [`QUEUES`], with its URL keys in
//! [`crate::settings::SqsSettings`]; then regenerate the manifest (`ORDERPIPE_WRITE_RESOURCES=1
//! cargo test -p pipeline-tests --test resources_manifest`).

use aws_support::resources::{QueueKind, QueueResource, QueueShape, Resources};

use crate::settings::{INTAKE, NOTIFICATIONS, PAYMENTS};

/// Receives of a message before SQS moves it to its dead-letter queue. The consumers read the
/// limit back from the queue's redrive policy (a message's last try is handled differently).
pub const MAX_RECEIVE_COUNT: u32 = 5;

/// Orders from the external delivery platforms.
pub const INTAKE_QUEUE: QueueResource = QueueResource {
    name: INTAKE,
    shape: QueueShape {
        fifo: false,
        kind: QueueKind::WithDeadLetters {
            max_receive_count: MAX_RECEIVE_COUNT,
        },
    },
    queue_url_key: Some("sqs.intake_queue_url"),
    dead_letter_url_key: "sqs.intake_dlq_url",
};

/// Payment requests: FIFO, one message group per order, so an order's charge and its
/// cancellation or refund are handled in order.
pub const PAYMENTS_QUEUE: QueueResource = QueueResource {
    name: PAYMENTS,
    shape: QueueShape {
        fifo: true,
        kind: QueueKind::WithDeadLetters {
            max_receive_count: MAX_RECEIVE_COUNT,
        },
    },
    queue_url_key: Some("sqs.payments_queue_url"),
    dead_letter_url_key: "sqs.payments_dlq_url",
};

/// Customer notifications (written by the flows, read by the notification sender).
pub const NOTIFICATIONS_QUEUE: QueueResource = QueueResource {
    name: NOTIFICATIONS,
    shape: QueueShape {
        fifo: false,
        kind: QueueKind::WithDeadLetters {
            max_receive_count: MAX_RECEIVE_COUNT,
        },
    },
    queue_url_key: Some("sqs.notifications_queue_url"),
    dead_letter_url_key: "sqs.notifications_dlq_url",
};

/// Purchase orders for the supplier integration (written by the `purchase_orders` worker, read
/// by the supplier): FIFO, one message group per store, deduplicated by purchase order id.
pub const PURCHASE_ORDERS_QUEUE: QueueResource = QueueResource {
    name: "purchase-orders",
    shape: QueueShape {
        fifo: true,
        kind: QueueKind::WithDeadLetters {
            max_receive_count: MAX_RECEIVE_COUNT,
        },
    },
    queue_url_key: Some("sqs.purchase_orders_queue_url"),
    dead_letter_url_key: "sqs.purchase_orders_dlq_url",
};

/// Every work queue of the flows.
pub const QUEUES: [QueueResource; 4] = [
    INTAKE_QUEUE,
    PAYMENTS_QUEUE,
    NOTIFICATIONS_QUEUE,
    PURCHASE_ORDERS_QUEUE,
];

/// The resources the flows use: their queues, and those of the log consumer runtime they run
/// on (the stream, the lease and parked tables, the dead-letter queue of poison records).
pub fn resources() -> Resources {
    kinesis_consumer::resources().and(Resources {
        queues: QUEUES.to_vec(),
        ..Resources::default()
    })
}
