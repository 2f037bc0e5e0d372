//! orderpipe's asynchronous flows (BRIEF §2): what happens to an order besides its status.
//!
//! Two kinds of workers, run by one `flows run` process:
//! - on the **log** (Kinesis, through the projector runtime's leases and checkpoints): the
//!   [`saga`] (the order process manager: reserve stock, accept or reject, request the payment,
//!   release or commit stock, earn loyalty points, refund), [`notifications`] (order ready,
//!   order rejected, tier upgraded, onto the notifications queue) and [`purchase_orders`]
//!   (every reorder a store opens, onto the supplier's purchase-orders queue);
//! - on **SQS** (one shared [`queue`] consumer loop): the [`payments`] processor (payments FIFO
//!   queue -> a [`payments::PaymentGateway`] -> results back as commands) and the delivery-platform
//!   [`intake`] (validated, deduplicated orders placed through the API).
//!
//! Every effect goes through the gRPC command API ([`command_client`]) with the `service` role and
//! an idempotency key derived from what caused it, so redelivered events and messages never apply
//! twice. [`dead_letters`] is the operator's view of the dead-letter queues (list, show, redrive).
//! Every SQS call goes through [`sqs`]'s thin per-operation wrappers.

pub mod app;
pub mod command_client;
pub mod dead_letters;
mod flow_trace;
pub mod intake;
pub mod notifications;
pub mod payments;
pub mod purchase_orders;
pub mod queue;
pub mod queues;
pub mod saga;
pub mod settings;
pub mod sqs;
