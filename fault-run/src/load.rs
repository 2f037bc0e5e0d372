//! The load: clients taking orders through their lifecycle over gRPC while the faults happen.
//! Every command carries an idempotency key; on UNAVAILABLE, a timeout, a dropped connection or
//! ABORTED the client sends the same request with the same key again, as a real client does,
//! until the API answers. Every acknowledged command and what it appended goes in the
//! [`Ledger`], which the checks hold the store and the log against.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use command_api::auth::{Role, TokenAuthority};
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::loyalty_service_client::LoyaltyServiceClient;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use serde::Serialize;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The stores the clients order from.
pub const STORES: [&str; 2] = ["store-1", "store-2"];
/// What the menu holds: SKU, name, price in cents.
const MENU: [(&str, &str, i64); 2] = [
    ("LATTE-12", "Latte 12oz", 450),
    ("CROISSANT", "Croissant", 325),
];
/// Two lattes and a croissant.
const ORDER_TOTAL_CENTS: i64 = 2 * 450 + 325;
/// Each request's deadline: a call that hangs on a dead server is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Everything the clients saw.
#[derive(Debug, Default, Serialize)]
pub struct Ledger {
    /// Every acknowledged command.
    pub acks: Vec<Ack>,
    /// Commands the API refused (a refusal here means the pipeline broke a business rule).
    pub refused: Vec<String>,
    /// Commands the API never answered before the run gave up on them.
    pub unanswered: Vec<String>,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Of those, failures with INTERNAL (counted apart: they should not happen).
    pub internal_errors: u64,
    /// Orders placed, by how they were meant to end.
    pub orders: OrderCounts,
}

/// Orders by the end the client took them to.
#[derive(Debug, Default, Serialize)]
pub struct OrderCounts {
    /// Taken through payment to completion, stock committed, points earned.
    pub completed: u64,
    /// Accepted with stock reserved, left open.
    pub open: u64,
    /// Cancelled before preparation.
    pub cancelled: u64,
}

/// Adds a bearer token to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// What every client shares: the channel, the token issuer and the ledger.
#[derive(Clone)]
pub struct Load {
    channel: Channel,
    tokens: TokenAuthority,
    ledger: Arc<Mutex<Ledger>>,
    /// Commands still unanswered at this moment are given up.
    give_up_at: Instant,
}

/// How an order ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Completed,
    Open,
    Cancelled,
}

impl Load {
    /// Clients of the API at `address`; commands unanswered at `give_up_at` are given up.
    pub fn new(address: &str, tokens: TokenAuthority, give_up_at: Instant) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Ok(Self {
            channel,
            tokens,
            ledger: Arc::default(),
            give_up_at,
        })
    }

    /// The ledger, once every client is done.
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        self.ledger.clone()
    }

    fn bearer(&self, role: Role, subject: &str, store: Option<&str>) -> anyhow::Result<Bearer> {
        // Valid for longer than any run: an expired token would be a refusal, not a fault.
        let token = self
            .tokens
            .mint(subject, role, store, Duration::from_secs(24 * 3600))?;
        Ok(Bearer(format!("Bearer {token}").parse()?))
    }

    fn orders(&self, bearer: &Bearer) -> OrderServiceClient<Authed> {
        OrderServiceClient::with_interceptor(self.channel.clone(), bearer.clone())
    }

    fn inventory(&self, bearer: &Bearer) -> InventoryServiceClient<Authed> {
        InventoryServiceClient::with_interceptor(self.channel.clone(), bearer.clone())
    }

    /// Puts the menu in place and stocks every store (far more than a run sells, so no order
    /// is refused for stock).
    pub async fn open_stores(&self) -> anyhow::Result<()> {
        let service = self.bearer(Role::Service, "fault-run-setup", None)?;
        let menu = MenuServiceClient::with_interceptor(self.channel.clone(), service.clone());
        for (sku, name, cents) in MENU {
            let key = format!("menu-{sku}");
            self.submit("AddMenuItem", &key, || {
                let mut menu = menu.clone();
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
            for store in STORES {
                let key = format!("stock-{store}-{sku}");
                let inventory = self.inventory(&service);
                self.submit("SetStock", &key, || {
                    let mut inventory = inventory.clone();
                    let request = pb::SetStockRequest {
                        idempotency_key: key.clone(),
                        store_id: store.into(),
                        sku: sku.into(),
                        on_hand: 10_000_000,
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
    /// hand. `client` names its customers; `seed` decides the orders' fates.
    pub async fn run_client(self, client: usize, seed: u64, until: Instant) -> anyhow::Result<()> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let service = self.bearer(Role::Service, "saga", None)?;
        let mut n = 0usize;
        while Instant::now() < until {
            let store = STORES[rng.usize(..STORES.len())];
            let customer = format!("cust-{client}-{}", n % 3);
            let fate = match rng.u8(..10) {
                0..=5 => Fate::Completed,
                6..=7 => Fate::Open,
                _ => Fate::Cancelled,
            };
            let barista = self.bearer(Role::Barista, &format!("barista-{store}"), Some(store))?;
            let customer_token = self.bearer(Role::Customer, &customer, None)?;
            self.run_order(store, &customer, fate, &customer_token, &barista, &service)
                .await;
            n += 1;
        }
        Ok(())
    }

    /// Places an order and takes it to `fate`; stops at the first step that is not acknowledged.
    async fn run_order(
        &self,
        store: &str,
        customer: &str,
        fate: Fate,
        customer_token: &Bearer,
        barista: &Bearer,
        service: &Bearer,
    ) {
        let id = uuid::Uuid::new_v4().to_string();
        let key = format!("place-{id}");
        let placed = self
            .submit("PlaceOrder", &key, || {
                let mut orders = self.orders(customer_token);
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
                    // These clients play the saga's part themselves (reserve, accept, pay):
                    // no card for the payment processor.
                    payment_token: String::new(),
                };
                async move {
                    let response = orders.place_order(timed(request)).await?.into_inner();
                    response
                        .commit
                        .ok_or_else(|| Status::internal("PlaceOrder answered without a commit"))
                }
            })
            .await;
        if !placed {
            return;
        }
        let done = match fate {
            Fate::Cancelled => self.cancel(&id, barista).await,
            Fate::Open => self.accept(store, &id, service).await,
            Fate::Completed => {
                self.accept(store, &id, service).await
                    && self.complete(store, customer, &id, barista, service).await
            }
        };
        if done {
            let mut ledger = self.lock();
            match fate {
                Fate::Completed => ledger.orders.completed += 1,
                Fate::Open => ledger.orders.open += 1,
                Fate::Cancelled => ledger.orders.cancelled += 1,
            }
        }
    }

    async fn cancel(&self, id: &str, barista: &Bearer) -> bool {
        let key = format!("cancel-{id}");
        self.submit("CancelOrder", &key, || {
            let mut orders = self.orders(barista);
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
        .await
    }

    async fn accept(&self, store: &str, id: &str, service: &Bearer) -> bool {
        let key = format!("reserve-{id}");
        let reserved = self
            .submit("ReserveStock", &key, || {
                let mut inventory = self.inventory(service);
                let request = pb::ReserveStockRequest {
                    idempotency_key: key.clone(),
                    store_id: store.into(),
                    order_id: id.into(),
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
                };
                async move {
                    inventory
                        .reserve_stock(timed(request))
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
        reserved && self.transition("AcceptOrder", "accept", id, service).await
    }

    async fn complete(
        &self,
        store: &str,
        customer: &str,
        id: &str,
        barista: &Bearer,
        service: &Bearer,
    ) -> bool {
        let key = format!("pay-{id}");
        let paid = self
            .submit("RecordPaymentCaptured", &key, || {
                let mut orders = self.orders(service);
                let request = pb::RecordPaymentCapturedRequest {
                    idempotency_key: key.clone(),
                    order_id: id.into(),
                    payment_id: format!("pay_{}", &id[..8]),
                    amount: Some(pb::Money {
                        cents: ORDER_TOTAL_CENTS,
                    }),
                };
                async move {
                    orders
                        .record_payment_captured(timed(request))
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
        if !(paid
            && self
                .transition("StartPreparing", "start", id, barista)
                .await
            && self.transition("MarkReady", "ready", id, barista).await
            && self
                .transition("CompleteOrder", "complete", id, barista)
                .await)
        {
            return false;
        }
        let key = format!("commit-{id}");
        let committed = self
            .submit("CommitReservation", &key, || {
                let mut inventory = self.inventory(service);
                let request = pb::CommitReservationRequest {
                    idempotency_key: key.clone(),
                    store_id: store.into(),
                    order_id: id.into(),
                };
                async move {
                    inventory
                        .commit_reservation(timed(request))
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
        let key = format!("earn-{id}");
        committed
            && self
                .submit("EarnPoints", &key, || {
                    let mut loyalty = LoyaltyServiceClient::with_interceptor(
                        self.channel.clone(),
                        service.clone(),
                    );
                    let request = pb::EarnPointsRequest {
                        idempotency_key: key.clone(),
                        customer_id: customer.into(),
                        order_id: id.into(),
                        amount: Some(pb::Money {
                            cents: ORDER_TOTAL_CENTS,
                        }),
                    };
                    async move {
                        loyalty
                            .earn_points(timed(request))
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
    }

    /// A transition that needs only the order id (accept, start, ready, complete).
    async fn transition(&self, rpc: &'static str, step: &str, id: &str, caller: &Bearer) -> bool {
        let key = format!("{step}-{id}");
        self.submit(rpc, &key, || {
            let mut orders = self.orders(caller);
            let request = timed(pb::OrderTransitionRequest {
                idempotency_key: key.clone(),
                order_id: id.into(),
            });
            async move {
                let response = match rpc {
                    "AcceptOrder" => orders.accept_order(request).await,
                    "StartPreparing" => orders.start_preparing(request).await,
                    "MarkReady" => orders.mark_ready(request).await,
                    _ => orders.complete_order(request).await,
                };
                response.map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Sends a command until the API acknowledges or refuses it (or the run gives up), and
    /// records the outcome; `true` when acknowledged. `call` sends the same request (same
    /// idempotency key) each time.
    async fn submit<F, Fut>(&self, rpc: &'static str, key: &str, mut call: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<pb::CommitResult, Status>>,
    {
        let mut attempts = 0u32;
        let mut pause = Duration::from_millis(100);
        loop {
            attempts += 1;
            match call().await {
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
                    return true;
                }
                Err(status) if retryable(status.code()) => {
                    {
                        let mut ledger = self.lock();
                        ledger.retries += 1;
                        if status.code() == Code::Internal {
                            ledger.internal_errors += 1;
                        }
                    }
                    if Instant::now() >= self.give_up_at {
                        self.lock().unanswered.push(format!(
                            "{rpc} {key}: still failing after {attempts} attempts: {status}"
                        ));
                        return false;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(status) => {
                    self.lock().refused.push(format!(
                        "{rpc} {key}: {:?} {}",
                        status.code(),
                        status.message()
                    ));
                    return false;
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

/// What a client retries with the same key: the server (or the path to it) was away, the
/// request timed out, or a concurrent command kept winning. INTERNAL is retried too (a real
/// client would) but counted apart.
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

fn timed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(REQUEST_TIMEOUT);
    request
}
