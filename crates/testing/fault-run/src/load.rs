//! The load: clients taking orders through their lifecycle over gRPC while the faults happen.
//!
//! A client places an order with a sandbox test card and lets the flows do the rest, as a real
//! shop's front end does: the saga reserves stock and accepts the order, the payment processor
//! charges the card and records the capture or the decline. The client then plays the barista
//! (start preparing, mark ready, complete) or cancels; the saga commits or releases the stock,
//! earns the points and has a refund sent.
//!
//! Every command carries an idempotency key; on UNAVAILABLE, a deadline, a dropped connection or
//! ABORTED the client sends the same request with the same key again, to the other command-api
//! (as a load balancer would), until the API answers. Every acknowledged command and what it
//! appended goes in the [`Ledger`], which the checks hold the store and the log against; so does
//! every answer that told the client its command failed.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_tokens::client::Bearer;
use auth_tokens::{Role, TokenIssuer};
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use serde::Serialize;
use service_kit::cli::GrpcClientTls;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The stores the clients order from.
pub const STORES: [&str; 2] = ["store-1", "store-2"];
/// What the menu holds: SKU, name, price in cents.
const MENU: [(&str, &str, i64); 2] = [
    ("LATTE-12", "Latte 12oz", 450),
    ("CROISSANT", "Croissant", 325),
];
/// What every store is stocked with per SKU: far more than a run sells, so no order is refused
/// for stock.
pub const STOCK_ON_HAND: u32 = 10_000_000;
/// Each request's deadline as the client asks the server for it (`grpc-timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for an answer before it gives up on the attempt and retries with
/// the same key: the requested deadline plus a second for the answer to travel. A paused
/// server never answers; without this the client would wait for as long as the pause.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(6);
/// How long a client waits for the saga and the payment processor to accept and charge an
/// order before it leaves the order to them (the end checks judge what they did with it).
const PAYMENT_PATIENCE: Duration = Duration::from_secs(45);
/// Between two looks at an order that is waiting for its payment.
const PAYMENT_POLL: Duration = Duration::from_millis(300);

/// The sandbox gateway's test cards (`flows test-cards`) and how often the clients use each,
/// in percent: mostly approvals, some declines, a few slow approvals and a few that never
/// answer (those orders are settled by the payment deadline).
const CARDS: [(&str, Card, u8); 5] = [
    ("4242424242424242", Card::Approves, 78),
    ("4000000000000077", Card::Approves, 7),
    ("4000000000000002", Card::Declines, 7),
    ("4000000000009995", Card::Declines, 5),
    ("4000000000000119", Card::NeverAnswers, 3),
];

/// What a test card does, as far as the client needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    Approves,
    Declines,
    NeverAnswers,
}

/// One acknowledged command and what the API said it appended.
#[derive(Debug, Clone, Serialize)]
pub struct Ack {
    /// The RPC.
    pub rpc: &'static str,
    /// The caller's idempotency key.
    pub key: String,
    /// The aggregate the command acted on.
    pub aggregate_id: String,
    /// The first sequence it appended (0: nothing).
    pub first_sequence: u64,
    /// The last sequence it appended (0: nothing).
    pub last_sequence: u64,
    /// The event types appended, in order.
    pub event_types: Vec<String>,
    /// How many times the client sent it.
    pub attempts: u32,
}

/// A command whose client was told it failed (an answer that is not retried).
#[derive(Debug, Clone, Serialize)]
pub struct ToldFailed {
    /// The RPC.
    pub rpc: &'static str,
    /// The caller's idempotency key.
    pub key: String,
    /// What the API answered.
    pub answer: String,
}

/// Everything the clients saw.
#[derive(Debug, Default, Serialize)]
pub struct Ledger {
    /// Every acknowledged command.
    pub acks: Vec<Ack>,
    /// Commands the API refused where no refusal was expected (the pipeline broke a rule).
    pub refused: Vec<String>,
    /// Every command the client was told failed, expected or not: nothing of it may be stored.
    pub told_failed: Vec<ToldFailed>,
    /// Commands the API never answered before the run gave up on them.
    pub unanswered: Vec<String>,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Of those, failures with INTERNAL (counted apart: they should not happen).
    pub internal_errors: u64,
    /// Answers with CANCELLED from the server, which no client retries (the contract: a command
    /// that ran out of time answers DEADLINE_EXCEEDED or UNAVAILABLE); retried here so the other
    /// checks still see every command settled, and failed as a check of its own. tonic's own
    /// CANCELLED (the client-side deadline, a dropped connection) counts as a client deadline.
    pub cancelled_answers: Vec<String>,
    /// Attempts the client gave up waiting for: the deadline it asked for passed (tonic enforces
    /// it on the client's side) or [`CLIENT_DEADLINE`] did, or the connection dropped mid-call:
    /// a paused, cut-off or killed server.
    pub client_deadlines: u64,
    /// Orders placed, by how they ended for the client.
    pub orders: OrderCounts,
}

/// Orders by how they ended for the client.
#[derive(Debug, Default, Serialize)]
pub struct OrderCounts {
    /// Paid, prepared and completed.
    pub completed: u64,
    /// Accepted and paid, left open.
    pub open: u64,
    /// Cancelled by the client.
    pub cancelled: u64,
    /// Rejected by the flows (declined card, no payment by the deadline).
    pub rejected: u64,
    /// Not accepted and paid within the client's patience, left to the flows (the end checks
    /// hold them to the payment deadline).
    pub left_unpaid: u64,
}

/// What every client shares: the channels, the token issuer and the ledger.
#[derive(Clone)]
pub struct Load {
    channels: Vec<Channel>,
    tokens: TokenIssuer,
    ledger: Arc<Mutex<Ledger>>,
    /// Commands still unanswered at this moment are given up.
    give_up_at: Instant,
}

/// How the client means an order to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Completed,
    Open,
    Cancelled,
}

/// How a command ended for the client.
enum Outcome {
    Acknowledged,
    /// Told it failed (a refusal).
    Failed,
    GaveUp,
}

/// Where an order stands once the flows had their say.
enum Settled {
    Paid,
    Ended,
    NotYet,
}

impl Load {
    /// Clients of the command-apis at `addresses` (a retry goes to the next one); commands
    /// unanswered at `give_up_at` are given up.
    pub fn new(
        addresses: &[String],
        tls: &GrpcClientTls,
        tokens: TokenIssuer,
        give_up_at: Instant,
    ) -> anyhow::Result<Self> {
        let channels = addresses
            .iter()
            .map(|address| {
                Ok(tls
                    .endpoint("fault-run", address)?
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!channels.is_empty(), "no command-api to send the load to");
        Ok(Self {
            channels,
            tokens,
            ledger: Arc::default(),
            give_up_at,
        })
    }

    /// The ledger, once every client is done.
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        self.ledger.clone()
    }

    /// A token for `subject` in `role`.
    pub fn bearer(&self, role: Role, subject: &str, store: Option<&str>) -> anyhow::Result<Bearer> {
        // Valid for longer than any run: an expired token would be a refusal, not a fault.
        let token = self
            .tokens
            .mint(subject, role, store, Duration::from_secs(24 * 3600))?;
        Ok(Bearer::new(&token)?)
    }

    /// Puts the menu in place and stocks every store (and the write probe's) with
    /// [`STOCK_ON_HAND`].
    pub async fn open_stores(&self) -> anyhow::Result<()> {
        let service = self.service_bearer()?;
        for (sku, name, cents) in MENU {
            let key = format!("menu-{sku}");
            self.submit("AddMenuItem", &key, |channel| {
                let mut menu = MenuServiceClient::with_interceptor(channel, service.clone());
                let request = pb::AddMenuItemRequest {
                    idempotency_key: key.clone(),
                    sku: sku.into(),
                    name: name.into(),
                    price: Some(pb::Money { cents }),
                    category: pb::MenuCategory::Drink as i32,
                };
                async move {
                    menu.add_menu_item(timed(request))
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
            for store in STORES.into_iter().chain([crate::probe::PROBE_STORE]) {
                let key = format!("stock-{store}-{sku}");
                self.submit("SetStock", &key, |channel| {
                    let mut inventory =
                        InventoryServiceClient::with_interceptor(channel, service.clone());
                    let request = pb::SetStockRequest {
                        idempotency_key: key.clone(),
                        store_id: store.into(),
                        sku: sku.into(),
                        on_hand: STOCK_ON_HAND,
                        low_stock_threshold: 5,
                    };
                    async move {
                        inventory
                            .set_stock(timed(request))
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await;
            }
        }
        Ok(())
    }

    /// One client: takes orders through their lifecycle until `until`, finishing the order in
    /// hand. `client` names its customers; `seed` decides the orders' cards and fates.
    pub async fn run_client(self, client: usize, seed: u64, until: Instant) -> anyhow::Result<()> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut n = 0usize;
        while Instant::now() < until {
            let store = STORES[rng.usize(..STORES.len())];
            let customer = format!("cust-{client}-{}", n % 3);
            let fate = match rng.u8(..10) {
                0..=5 => Fate::Completed,
                6..=7 => Fate::Open,
                _ => Fate::Cancelled,
            };
            let card = pick_card(&mut rng);
            let barista = self.bearer(Role::Barista, &format!("barista-{store}"), Some(store))?;
            let customer_token = self.bearer(Role::Customer, &customer, None)?;
            let cancel_at_once = rng.bool();
            self.run_order(
                store,
                &customer,
                card,
                fate,
                cancel_at_once,
                &customer_token,
                &barista,
            )
            .await;
            n += 1;
        }
        Ok(())
    }

    /// Places an order and takes it to `fate`; stops at the first step that is not
    /// acknowledged.
    #[allow(clippy::too_many_arguments)]
    async fn run_order(
        &self,
        store: &str,
        customer: &str,
        (token, card): (&str, Card),
        fate: Fate,
        cancel_at_once: bool,
        customer_token: &Bearer,
        barista: &Bearer,
    ) {
        let id = uuid::Uuid::new_v4().to_string();
        let key = format!("place-{id}");
        let placed = self
            .submit("PlaceOrder", &key, |channel| {
                let mut orders =
                    OrderServiceClient::with_interceptor(channel, customer_token.clone());
                let request = pb::PlaceOrderRequest {
                    idempotency_key: key.clone(),
                    order_id: id.clone(),
                    store_id: store.into(),
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
                    payment_token: token.into(),
                };
                async move {
                    let response = orders.place_order(timed(request)).await?.into_inner();
                    response
                        .commit
                        .ok_or_else(|| Status::internal("PlaceOrder answered without a commit"))
                }
            })
            .await;
        if !matches!(placed, Outcome::Acknowledged) {
            return;
        }
        if fate == Fate::Cancelled && cancel_at_once {
            // Races the saga: it may reserve and accept (then releases), or find the order
            // cancelled already.
            self.cancel(&id, barista).await;
            return;
        }
        if card == Card::NeverAnswers {
            // Nothing to wait for: the payment deadline settles this order.
            self.lock().orders.left_unpaid += 1;
            return;
        }
        match self.wait_until_settled(&id, barista).await {
            Settled::Ended => {
                self.lock().orders.rejected += 1;
                return;
            }
            Settled::NotYet => {
                self.lock().orders.left_unpaid += 1;
                return;
            }
            Settled::Paid => {}
        }
        match fate {
            Fate::Cancelled => self.cancel(&id, barista).await,
            Fate::Open => self.lock().orders.open += 1,
            Fate::Completed => {
                let done = self
                    .transition("StartPreparing", "start", &id, barista)
                    .await
                    && self.transition("MarkReady", "ready", &id, barista).await
                    && self
                        .transition("CompleteOrder", "complete", &id, barista)
                        .await;
                if done {
                    self.lock().orders.completed += 1;
                }
            }
        }
    }

    /// Cancels the order; a refusal because it ended meanwhile (rejected by the flows) is the
    /// race a real client loses too, not a fault.
    async fn cancel(&self, id: &str, barista: &Bearer) {
        let key = format!("cancel-{id}");
        let outcome = self
            .submit_expecting_refusal("CancelOrder", &key, |channel| {
                let mut orders = OrderServiceClient::with_interceptor(channel, barista.clone());
                let request = pb::CancelOrderRequest {
                    idempotency_key: key.clone(),
                    order_id: id.into(),
                    reason: "customer left".into(),
                };
                async move {
                    orders
                        .cancel_order(timed(request))
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
        match outcome {
            Outcome::Acknowledged => self.lock().orders.cancelled += 1,
            Outcome::Failed => self.lock().orders.rejected += 1,
            Outcome::GaveUp => {}
        }
    }

    /// Looks at the order until the flows accepted and charged it, or ended it (rejected,
    /// declined), or [`PAYMENT_PATIENCE`] runs out.
    async fn wait_until_settled(&self, id: &str, barista: &Bearer) -> Settled {
        let until = Instant::now() + PAYMENT_PATIENCE;
        let mut attempt = 0usize;
        while Instant::now() < until {
            attempt += 1;
            let mut orders =
                OrderServiceClient::with_interceptor(self.channel(attempt), barista.clone());
            let looked = tokio::time::timeout(
                CLIENT_DEADLINE,
                orders.get_order(timed(pb::GetOrderRequest {
                    order_id: id.into(),
                })),
            )
            .await;
            if looked.is_err() {
                self.lock().client_deadlines += 1;
            }
            if let Ok(Ok(order)) = looked {
                let order = order.into_inner();
                match order.status() {
                    pb::OrderStatus::Rejected | pb::OrderStatus::Cancelled => {
                        return Settled::Ended
                    }
                    pb::OrderStatus::Accepted if order.payment_captured => return Settled::Paid,
                    _ => {}
                }
            }
            tokio::time::sleep(PAYMENT_POLL).await;
        }
        Settled::NotYet
    }

    /// A transition that needs only the order id (start, ready, complete).
    async fn transition(&self, rpc: &'static str, step: &str, id: &str, caller: &Bearer) -> bool {
        let key = format!("{step}-{id}");
        let outcome = self
            .submit(rpc, &key, |channel| {
                let mut orders = OrderServiceClient::with_interceptor(channel, caller.clone());
                let request = timed(pb::OrderTransitionRequest {
                    idempotency_key: key.clone(),
                    order_id: id.into(),
                });
                async move {
                    let response = match rpc {
                        "StartPreparing" => orders.start_preparing(request).await,
                        "MarkReady" => orders.mark_ready(request).await,
                        _ => orders.complete_order(request).await,
                    };
                    response.map(|r| r.into_inner())
                }
            })
            .await;
        matches!(outcome, Outcome::Acknowledged)
    }

    /// The channel of the `attempt`-th try: consecutive tries go to different command-apis.
    fn channel(&self, attempt: usize) -> Channel {
        self.channels[attempt % self.channels.len()].clone()
    }

    /// [`Load::submit`] where a refusal is a possible outcome (not counted as a failure of the
    /// pipeline, but still one the client was told).
    async fn submit_expecting_refusal<F, Fut>(
        &self,
        rpc: &'static str,
        key: &str,
        call: F,
    ) -> Outcome
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<pb::CommitResult, Status>>,
    {
        self.send(rpc, key, call, true, None).await
    }

    /// Sends a command until the API acknowledges or refuses it (or the run gives up), and
    /// records the outcome. `call` sends the same request (same idempotency key) each time, on
    /// the channel it is given.
    async fn submit<F, Fut>(&self, rpc: &'static str, key: &str, call: F) -> Outcome
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<pb::CommitResult, Status>>,
    {
        self.send(rpc, key, call, false, None).await
    }

    /// [`Load::submit`] to the command-api `api` only (its index in the addresses); whether it
    /// was acknowledged.
    pub(crate) async fn submit_to<F, Fut>(
        &self,
        api: usize,
        rpc: &'static str,
        key: &str,
        call: F,
    ) -> bool
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<pb::CommitResult, Status>>,
    {
        matches!(
            self.send(rpc, key, call, false, Some(api)).await,
            Outcome::Acknowledged
        )
    }

    /// A token for the run's own service calls (setup, the write probe).
    pub(crate) fn service_bearer(&self) -> anyhow::Result<Bearer> {
        self.bearer(Role::Service, "fault-run-setup", None)
    }

    async fn send<F, Fut>(
        &self,
        rpc: &'static str,
        key: &str,
        mut call: F,
        refusal_expected: bool,
        only_api: Option<usize>,
    ) -> Outcome
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<pb::CommitResult, Status>>,
    {
        let mut attempts = 0u32;
        let mut pause = Duration::from_millis(100);
        let first_channel = fastrand::usize(..self.channels.len());
        loop {
            attempts += 1;
            let channel = match only_api {
                Some(api) => self.channels[api % self.channels.len()].clone(),
                None => self.channel(first_channel + attempts as usize),
            };
            let answer = match tokio::time::timeout(CLIENT_DEADLINE, call(channel)).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.lock().client_deadlines += 1;
                    Err(Status::deadline_exceeded(
                        "no answer within the client's deadline",
                    ))
                }
            };
            match answer {
                Ok(result) => {
                    self.lock().acks.push(Ack {
                        rpc,
                        key: key.to_owned(),
                        aggregate_id: result.aggregate_id,
                        first_sequence: result.first_sequence,
                        last_sequence: result.last_sequence,
                        event_types: result.event_types,
                        attempts,
                    });
                    return Outcome::Acknowledged;
                }
                Err(status) if retryable(status.code()) => {
                    {
                        let mut ledger = self.lock();
                        ledger.retries += 1;
                        match status.code() {
                            Code::Internal => ledger.internal_errors += 1,
                            Code::Cancelled if answered_by_server(&status) => ledger
                                .cancelled_answers
                                .push(format!("{rpc} {key}: {}", status.message())),
                            // tonic's own: the requested deadline passed on the client's side
                            // ("Timeout expired") or the connection went away mid-call.
                            Code::Cancelled => ledger.client_deadlines += 1,
                            _ => {}
                        }
                    }
                    if Instant::now() >= self.give_up_at {
                        self.lock().unanswered.push(format!(
                            "{rpc} {key}: still failing after {attempts} attempts: {status}"
                        ));
                        return Outcome::GaveUp;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(status) => {
                    let mut ledger = self.lock();
                    let answer = format!("{:?} {}", status.code(), status.message());
                    if !(refusal_expected && status.code() == Code::FailedPrecondition) {
                        ledger.refused.push(format!("{rpc} {key}: {answer}"));
                    }
                    ledger.told_failed.push(ToldFailed {
                        rpc,
                        key: key.to_owned(),
                        answer,
                    });
                    return Outcome::Failed;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A client that panicked while holding the lock leaves a consistent ledger: every
        // update is a single push or increment.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a failure came from the server (its headers and trailers are in the metadata), not
/// from the client's own transport: tonic answers CANCELLED itself when the deadline it sent
/// passes without an answer ("Timeout expired") or the connection drops mid-call, with no
/// metadata at all.
fn answered_by_server(status: &Status) -> bool {
    !status.metadata().is_empty()
}

/// A test card by the weights of [`CARDS`].
fn pick_card(rng: &mut fastrand::Rng) -> (&'static str, Card) {
    let mut roll = rng.u8(..100);
    for (token, card, weight) in CARDS {
        if roll < weight {
            return (token, card);
        }
        roll -= weight;
    }
    (CARDS[0].0, CARDS[0].1)
}

/// What a client retries with the same key: the server (or the path to it) was away, the
/// request timed out, or a concurrent command kept winning. INTERNAL and CANCELLED are retried
/// too (so the run still settles every command) but counted apart: the contract says neither
/// should reach a client.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
            | Code::ResourceExhausted
    )
}

pub(crate) fn timed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(REQUEST_TIMEOUT);
    request
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tonic_s_own_cancellations_are_not_the_server_s_answer() {
        // What tonic's client makes of its own deadline: no headers from anyone.
        assert!(!answered_by_server(&Status::cancelled("Timeout expired")));
        let mut from_server = Status::cancelled("Timeout expired");
        from_server.metadata_mut().insert(
            "content-type",
            "application/grpc"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(answered_by_server(&from_server));
    }

    #[test]
    fn card_weights_add_up_to_a_hundred() {
        assert_eq!(
            CARDS.iter().map(|(_, _, w)| u32::from(*w)).sum::<u32>(),
            100
        );
    }
}
