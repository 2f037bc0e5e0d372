//! What the saga does, decided without I/O: from an order event and the order as the saga
//! knows it ([`decide`]), and from the answer to each command it sent ([`after`]), the steps
//! to take. The executor in [`super`] loads the order, asks, and carries the steps out.

use domain::{ErrorReason, OrderEvent};
use proto::v1 as pb;

/// The order as the saga knows it: what `GetOrder` answered when the event was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownOrder {
    /// Its status now (possibly moved on since the event).
    pub status: pb::OrderStatus,
    /// The store making it.
    pub store_id: String,
    /// Who it is for.
    pub customer_id: String,
    /// Its total, in cents.
    pub total_cents: i64,
    /// The card token given with the order; `None`: the store takes the payment itself.
    pub payment_token: Option<String>,
    /// Whether its payment was captured.
    pub payment_captured: bool,
}

/// One thing to do: a command through the API or a request on the payments queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A command; its answer may lead to more steps ([`after`]).
    Command(Command),
    /// Charge the order total (the payments FIFO queue).
    RequestCharge {
        /// The store.
        store_id: String,
        /// The customer.
        customer_id: String,
        /// The order total, in cents.
        amount_cents: i64,
        /// The card token.
        payment_token: String,
    },
    /// Give a captured payment back (the payments FIFO queue).
    RequestRefund {
        /// What was captured, in cents.
        amount_cents: i64,
        /// Why (the order's end).
        reason: String,
    },
}

/// A command the saga sends about the order it handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ReserveStock` of the order's lines.
    ReserveStock {
        /// The store.
        store_id: String,
        /// What to hold.
        lines: Vec<pb::StockLine>,
    },
    /// `AcceptOrder`.
    AcceptOrder,
    /// `RejectOrder(OUT_OF_STOCK)`.
    RejectOutOfStock,
    /// `ReleaseReservation`: compensation, sent on every path to a terminal status.
    ReleaseReservation {
        /// The store.
        store_id: String,
        /// Why.
        reason: String,
    },
    /// `CommitReservation`: the stock leaves with the completed order.
    CommitReservation {
        /// The store.
        store_id: String,
    },
    /// `EarnPoints` on the order total.
    EarnPoints {
        /// The customer.
        customer_id: String,
        /// The order total, in cents.
        amount_cents: i64,
    },
}

impl Command {
    /// The command's name in its idempotency key (`saga/<order>/<sequence>/<name>`). These
    /// names are stored with every outcome: changing one would make a redelivered event run its
    /// command again, so they never change.
    pub fn key_name(&self) -> &'static str {
        match self {
            Command::ReserveStock { .. } => "reserve-stock",
            Command::AcceptOrder => "accept",
            Command::RejectOutOfStock => "reject",
            Command::ReleaseReservation { .. } => "release-stock",
            Command::CommitReservation { .. } => "commit-stock",
            Command::EarnPoints { .. } => "earn-points",
        }
    }
}

impl Step {
    /// The step's name in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Step::Command(Command::ReserveStock { .. }) => "reserve_stock",
            Step::Command(Command::AcceptOrder) => "accept_order",
            Step::Command(Command::RejectOutOfStock) => "reject_order",
            Step::Command(Command::ReleaseReservation { .. }) => "release_reservation",
            Step::Command(Command::CommitReservation { .. }) => "commit_reservation",
            Step::Command(Command::EarnPoints { .. }) => "earn_points",
            Step::RequestCharge { .. } => "request_charge",
            Step::RequestRefund { .. } => "request_refund",
        }
    }
}

/// How a step ended, as far as the decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Done (or done before: the same key answers with the stored outcome).
    Done,
    /// The API refused the command, for the reason its code names (`None`: no code this build
    /// knows). Refusals are outcomes, never retried.
    Refused(Option<ErrorReason>),
}

/// Whether the saga acts on `event` at all; for the others it does not even read the order.
pub fn concerns(event: &OrderEvent) -> bool {
    matches!(
        event,
        OrderEvent::OrderPlaced { .. }
            | OrderEvent::OrderAccepted {}
            | OrderEvent::OrderRejected { .. }
            | OrderEvent::OrderCancelled { .. }
            | OrderEvent::OrderCompleted {}
    )
}

/// The steps `event` calls for, given the order as it is now. Nothing here is conditional on
/// what the event's flags claim was held: compensation is unconditional, and a release or a
/// refund of nothing is refused harmlessly.
pub fn decide(event: &OrderEvent, order: &KnownOrder) -> Vec<Step> {
    match event {
        OrderEvent::OrderPlaced {
            store_id, lines, ..
        } => match order.status {
            pb::OrderStatus::Placed => vec![Step::Command(Command::ReserveStock {
                store_id: store_id.to_string(),
                lines: lines
                    .iter()
                    .map(|line| pb::StockLine {
                        sku: line.sku.to_string(),
                        quantity: line.quantity.get(),
                    })
                    .collect(),
            })],
            // An earlier run of this step may have reserved and been interrupted (a crash, an
            // outage) before the acceptance while the order ended: its end event says nothing
            // was reserved, because the order never got to Accepted. Release whatever is held.
            pb::OrderStatus::Cancelled | pb::OrderStatus::Rejected => {
                vec![release(
                    store_id.as_str(),
                    "order ended before its acceptance",
                )]
            }
            // A late redelivery finds the order moved on: nothing left to decide.
            _ => Vec::new(),
        },
        OrderEvent::OrderAccepted {} => match &order.payment_token {
            Some(token) if order.status == pb::OrderStatus::Accepted && !order.payment_captured => {
                vec![Step::RequestCharge {
                    store_id: order.store_id.clone(),
                    customer_id: order.customer_id.clone(),
                    amount_cents: order.total_cents,
                    payment_token: token.clone(),
                }]
            }
            // Moved on, paid already, or no card: the store records the payment itself.
            _ => Vec::new(),
        },
        OrderEvent::OrderRejected {
            reason, refund_due, ..
        } => compensate(order, &reason.to_string(), *refund_due),
        OrderEvent::OrderCancelled {
            reason, refund_due, ..
        } => compensate(order, reason.as_str(), *refund_due),
        OrderEvent::OrderCompleted {} => vec![
            Step::Command(Command::CommitReservation {
                store_id: order.store_id.clone(),
            }),
            Step::Command(Command::EarnPoints {
                customer_id: order.customer_id.clone(),
                amount_cents: order.total_cents,
            }),
        ],
        OrderEvent::PaymentCaptured { .. }
        | OrderEvent::PaymentDeclined { .. }
        | OrderEvent::PaymentRefunded { .. }
        | OrderEvent::PreparationStarted {}
        | OrderEvent::OrderMarkedReady {} => Vec::new(),
    }
}

/// The steps that follow `step`'s `answer`: run before the rest of the event's steps.
pub fn after(step: &Step, answer: Answer, order: &KnownOrder) -> Vec<Step> {
    let Step::Command(command) = step else {
        return Vec::new();
    };
    match (command, answer) {
        // Held for this order either way: by this step, or by a client that reserved for it.
        (Command::ReserveStock { .. }, Answer::Done)
        | (Command::ReserveStock { .. }, Answer::Refused(Some(ErrorReason::AlreadyReserved))) => {
            vec![Step::Command(Command::AcceptOrder)]
        }
        // Not enough stock, an item not stocked, no inventory: nothing was reserved.
        (Command::ReserveStock { .. }, Answer::Refused(_)) => {
            vec![Step::Command(Command::RejectOutOfStock)]
        }
        // Cancelled (or rejected by hand) between the reservation and the acceptance.
        (Command::AcceptOrder, Answer::Refused(_)) => {
            vec![release(&order.store_id, "order not accepted")]
        }
        // A rejection refused: the order moved on, and its own end compensates. A release
        // refused: nothing was held (never made, released or committed). A commit or points
        // refused: nothing held to commit, points earned already. Nothing follows any of them.
        _ => Vec::new(),
    }
}

/// Undoes what an ended order (rejected or cancelled) may hold: the release whatever the
/// event's `stock_reserved` says (it only knows whether the order got to Accepted, not whether a
/// reservation step was interrupted before the acceptance), and the refund when one is due.
fn compensate(order: &KnownOrder, reason: &str, refund_due: bool) -> Vec<Step> {
    let mut steps = vec![release(&order.store_id, reason)];
    if refund_due {
        steps.push(Step::RequestRefund {
            amount_cents: order.total_cents,
            reason: reason.to_owned(),
        });
    }
    steps
}

/// The release of `store_id`'s reservation for the order. `reason` is the order's own reason
/// (a domain `Reason` or a rejection reason, both within the API's bound) or the saga's.
fn release(store_id: &str, reason: &str) -> Step {
    Step::Command(Command::ReleaseReservation {
        store_id: store_id.to_owned(),
        reason: reason.to_owned(),
    })
}
