//! The order lifecycle over the real gRPC API, timing every call: what the load generator and the
//! comparison's gRPC path send. Every call uses a `service` token (a service may call every RPC,
//! so one token serves every store) and an idempotency key unique to the order and the RPC.

use std::future::Future;
use std::time::{Duration, Instant};

use auth_tokens::client::{AuthedChannel, Bearer};
use auth_tokens::{Role, TokenIssuer};
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::loyalty_service_client::LoyaltyServiceClient;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::order_flow::{ORDER_LINES, ORDER_TOTAL_CENTS};

/// Clients sharing one gRPC connection (HTTP/2 multiplexes them). One connection for every
/// client would make the connection's single framing task on each side the bottleneck, which no
/// deployment has: callers are many services, each with its own connections.
pub const CLIENTS_PER_CONNECTION: usize = 8;

/// One lazily connected channel per [`CLIENTS_PER_CONNECTION`] of `clients`.
pub fn channels(endpoint: &tonic::transport::Endpoint, clients: usize) -> Vec<Channel> {
    (0..clients.div_ceil(CLIENTS_PER_CONNECTION).max(1))
        .map(|_| endpoint.clone().connect_lazy())
        .collect()
}

/// Sees every call: its RPC, how long it took and how it ended.
pub trait CallObserver: Send + Sync {
    /// One call ended after `elapsed`, `Ok` or with the status code it failed with.
    fn observe(&self, rpc: &'static str, elapsed: Duration, outcome: Result<(), Code>);
}

/// How an order of the workload ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Place, reserve stock, accept, capture the payment, prepare, ready, complete, consume the
    /// reservation, earn loyalty points: 9 commands.
    Completed,
    /// Place, then cancel: 2 commands.
    Cancelled,
    /// Place, reserve stock, accept: 3 commands; the order stays on the barista board.
    Open,
    /// The order aggregate alone, as the baseline runs it: place, accept, capture the payment,
    /// prepare, ready, complete: 6 commands, no inventory or loyalty.
    OrderOnly,
}

/// One client's stubs, sharing a channel.
#[derive(Clone)]
pub struct ApiClients {
    orders: OrderServiceClient<AuthedChannel>,
    inventory: InventoryServiceClient<AuthedChannel>,
    loyalty: LoyaltyServiceClient<AuthedChannel>,
    menu: MenuServiceClient<AuthedChannel>,
}

impl ApiClients {
    /// Stubs on `channel` carrying a service token minted by `issuer` (whose public key the
    /// command API's JWKS holds).
    pub fn new(channel: Channel, issuer: &TokenIssuer) -> Result<Self, TokenError> {
        let token = issuer
            .mint(
                "loadgen",
                Role::Service,
                None,
                Duration::from_secs(24 * 3600),
            )
            .map_err(|e| TokenError(e.to_string()))?;
        let bearer = Bearer::new(&token).map_err(|e| TokenError(e.to_string()))?;
        Ok(Self {
            orders: OrderServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            inventory: InventoryServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            loyalty: LoyaltyServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            menu: MenuServiceClient::with_interceptor(channel, bearer),
        })
    }

    /// The order service stub (its service token may watch any order).
    pub fn orders(&self) -> OrderServiceClient<AuthedChannel> {
        self.orders.clone()
    }

    /// Puts the benchmark's items on the menu at the sample menu's prices and stocks every store
    /// with `on_hand` of each (fixed idempotency keys: running it twice changes nothing).
    pub async fn open_stores(&mut self, stores: &[String], on_hand: u32) -> Result<(), Status> {
        for (sku, name, cents) in [
            ("LATTE-12", "Latte 12oz", 450),
            ("CROISSANT", "Butter croissant", 375),
        ] {
            self.menu
                .add_menu_item(pb::AddMenuItemRequest {
                    idempotency_key: format!("bench-menu-{sku}"),
                    sku: sku.into(),
                    name: name.into(),
                    price: Some(pb::Money { cents }),
                    category: pb::MenuCategory::Drink as i32,
                })
                .await?;
            for store in stores {
                self.inventory
                    .set_stock(pb::SetStockRequest {
                        idempotency_key: format!("bench-stock-{store}-{sku}"),
                        store_id: store.clone(),
                        sku: sku.into(),
                        on_hand,
                        low_stock_threshold: 5,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Runs one order of `fate` at `store` for `customer`; `on_placed` is called the moment
    /// PlaceOrder is acknowledged. Stops at the first failed call and returns its status.
    pub async fn run_order(
        &mut self,
        fate: Fate,
        store: &str,
        customer: &str,
        observer: &dyn CallObserver,
        on_placed: impl FnOnce(&str, Instant),
    ) -> Result<usize, Status> {
        let id = uuid::Uuid::new_v4().to_string();
        let key = |rpc: &str| format!("{rpc}-{id}");
        let transition = |rpc: &str| pb::OrderTransitionRequest {
            idempotency_key: key(rpc),
            order_id: id.clone(),
        };
        let stock_lines = || {
            ORDER_LINES
                .iter()
                .map(|&(sku, quantity)| pb::StockLine {
                    sku: sku.into(),
                    quantity,
                })
                .collect::<Vec<_>>()
        };
        let lines = ORDER_LINES
            .iter()
            .map(|&(sku, quantity)| pb::OrderLine {
                sku: sku.into(),
                quantity,
                customisations: if sku == "LATTE-12" {
                    vec!["oat milk".into()]
                } else {
                    vec![]
                },
            })
            .collect();
        let with_stock = fate != Fate::OrderOnly;

        timed(
            observer,
            "PlaceOrder",
            self.orders.place_order(pb::PlaceOrderRequest {
                idempotency_key: key("place"),
                order_id: id.clone(),
                store_id: store.into(),
                customer_id: customer.into(),
                lines,
                note: "no sugar".into(),
                // The bench plays the saga itself: no card for the payment processor.
                payment_token: String::new(),
            }),
        )
        .await?;
        on_placed(&id, Instant::now());
        if fate == Fate::Cancelled {
            timed(
                observer,
                "CancelOrder",
                self.orders.cancel_order(pb::CancelOrderRequest {
                    idempotency_key: key("cancel"),
                    order_id: id.clone(),
                    reason: "customer left".into(),
                }),
            )
            .await?;
            return Ok(2);
        }
        if with_stock {
            timed(
                observer,
                "ReserveStock",
                self.inventory.reserve_stock(pb::ReserveStockRequest {
                    idempotency_key: key("reserve"),
                    store_id: store.into(),
                    order_id: id.clone(),
                    lines: stock_lines(),
                }),
            )
            .await?;
        }
        timed(
            observer,
            "AcceptOrder",
            self.orders.accept_order(transition("accept")),
        )
        .await?;
        if fate == Fate::Open {
            return Ok(3);
        }
        timed(
            observer,
            "RecordPaymentCaptured",
            self.orders
                .record_payment_captured(pb::RecordPaymentCapturedRequest {
                    idempotency_key: key("pay"),
                    order_id: id.clone(),
                    payment_id: format!("pay_{}", &id[..8]),
                    amount: Some(pb::Money {
                        cents: ORDER_TOTAL_CENTS,
                    }),
                }),
        )
        .await?;
        timed(
            observer,
            "StartPreparing",
            self.orders.start_preparing(transition("start")),
        )
        .await?;
        timed(
            observer,
            "MarkReady",
            self.orders.mark_ready(transition("ready")),
        )
        .await?;
        timed(
            observer,
            "CompleteOrder",
            self.orders.complete_order(transition("complete")),
        )
        .await?;
        if !with_stock {
            return Ok(6);
        }
        timed(
            observer,
            "CommitReservation",
            self.inventory
                .commit_reservation(pb::CommitReservationRequest {
                    idempotency_key: key("commit"),
                    store_id: store.into(),
                    order_id: id.clone(),
                }),
        )
        .await?;
        timed(
            observer,
            "EarnPoints",
            self.loyalty.earn_points(pb::EarnPointsRequest {
                idempotency_key: key("earn"),
                customer_id: customer.into(),
                order_id: id.clone(),
                amount: Some(pb::Money {
                    cents: ORDER_TOTAL_CENTS,
                }),
            }),
        )
        .await?;
        Ok(9)
    }
}

/// Awaits one call and reports it to `observer`.
async fn timed<T>(
    observer: &dyn CallObserver,
    rpc: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    observer.observe(
        rpc,
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Status::code),
    );
    result.map(tonic::Response::into_inner)
}

/// The benchmark's service token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the benchmark's service token: {0}")]
pub struct TokenError(String);
