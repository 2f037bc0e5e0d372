//! What a morning at a store sends over gRPC: the menu and stock, then orders that complete,
//! stay open or are cancelled, with reservations, payments and loyalty points.

use auth_tokens::client::AuthedChannel;
use command_api::auth::Role;
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::loyalty_service_client::LoyaltyServiceClient;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_service_client::OrderServiceClient;

use crate::support::{Pipeline, STORE};

/// How an order of the workload ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Completed,
    /// Accepted and paid, waiting for a barista.
    Paid,
    Open,
    Cancelled,
}

/// The clients the workload uses.
pub struct Clients {
    pub menu: MenuServiceClient<AuthedChannel>,
    pub inventory: InventoryServiceClient<AuthedChannel>,
    pub loyalty: LoyaltyServiceClient<AuthedChannel>,
    pub saga: OrderServiceClient<AuthedChannel>,
    pub barista: OrderServiceClient<AuthedChannel>,
}

impl Clients {
    pub fn new(pipeline: &Pipeline) -> Self {
        let service = pipeline.bearer(Role::Service, "saga");
        let channel = pipeline.channel.clone();
        Self {
            menu: MenuServiceClient::with_interceptor(channel.clone(), service.clone()),
            inventory: InventoryServiceClient::with_interceptor(channel.clone(), service.clone()),
            loyalty: LoyaltyServiceClient::with_interceptor(channel.clone(), service.clone()),
            saga: OrderServiceClient::with_interceptor(channel.clone(), service),
            barista: OrderServiceClient::with_interceptor(
                channel,
                pipeline.bearer(Role::Barista, "ana"),
            ),
        }
    }
}

fn transition(key: &str, order_id: &str) -> pb::OrderTransitionRequest {
    pb::OrderTransitionRequest {
        idempotency_key: format!("{key}-{order_id}"),
        order_id: order_id.into(),
    }
}

/// Puts two items on the menu and stocks [`STORE`]; returns the number of commits.
pub async fn open_the_store(clients: &mut Clients, stock: u32) -> usize {
    for (sku, name, cents) in [
        ("LATTE-12", "Latte 12oz", 450),
        ("CROISSANT", "Croissant", 325),
    ] {
        clients
            .menu
            .add_menu_item(pb::AddMenuItemRequest {
                idempotency_key: format!("menu-{sku}"),
                sku: sku.into(),
                name: name.into(),
                price: Some(pb::Money { cents }),
                category: pb::MenuCategory::Drink as i32,
            })
            .await
            .unwrap();
        clients
            .inventory
            .set_stock(pb::SetStockRequest {
                idempotency_key: format!("stock-{sku}"),
                store_id: STORE.into(),
                sku: sku.into(),
                on_hand: stock,
                low_stock_threshold: 5,
            })
            .await
            .unwrap();
    }
    4
}

/// Places an order of 2 lattes (oat milk) and a croissant ($12.25) for `customer` and takes it
/// to its `fate`; returns the order's id and the number of commits.
pub async fn run_order(
    pipeline: &Pipeline,
    clients: &mut Clients,
    customer: &str,
    fate: Fate,
) -> (String, usize) {
    let id = uuid::Uuid::new_v4().to_string();
    OrderServiceClient::with_interceptor(
        pipeline.channel.clone(),
        pipeline.bearer(Role::Customer, customer),
    )
    .place_order(pb::PlaceOrderRequest {
        idempotency_key: format!("place-{id}"),
        order_id: id.clone(),
        store_id: STORE.into(),
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
        payment_token: String::new(),
    })
    .await
    .unwrap();
    let mut commits = 1;
    if fate == Fate::Cancelled {
        clients
            .barista
            .cancel_order(pb::CancelOrderRequest {
                idempotency_key: format!("cancel-{id}"),
                order_id: id.clone(),
                reason: "customer left".into(),
            })
            .await
            .unwrap();
        commits += 1;
    } else {
        clients
            .inventory
            .reserve_stock(pb::ReserveStockRequest {
                idempotency_key: format!("reserve-{id}"),
                store_id: STORE.into(),
                order_id: id.clone(),
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
            })
            .await
            .unwrap();
        clients
            .saga
            .accept_order(transition("accept", &id))
            .await
            .unwrap();
        commits += 2;
    }
    if matches!(fate, Fate::Completed | Fate::Paid) {
        clients
            .saga
            .record_payment_captured(pb::RecordPaymentCapturedRequest {
                idempotency_key: format!("pay-{id}"),
                order_id: id.clone(),
                payment_id: format!("pay_{}", &id[..8]),
                amount: Some(pb::Money { cents: 1225 }),
            })
            .await
            .unwrap();
        commits += 1;
    }
    if fate == Fate::Completed {
        clients
            .barista
            .start_preparing(transition("start", &id))
            .await
            .unwrap();
        clients
            .barista
            .mark_ready(transition("ready", &id))
            .await
            .unwrap();
        clients
            .barista
            .complete_order(transition("complete", &id))
            .await
            .unwrap();
        clients
            .inventory
            .commit_reservation(pb::CommitReservationRequest {
                idempotency_key: format!("commit-{id}"),
                store_id: STORE.into(),
                order_id: id.clone(),
            })
            .await
            .unwrap();
        clients
            .loyalty
            .earn_points(pb::EarnPointsRequest {
                idempotency_key: format!("earn-{id}"),
                customer_id: customer.into(),
                order_id: id.clone(),
                amount: Some(pb::Money { cents: 1225 }),
            })
            .await
            .unwrap();
        commits += 5;
    }
    (id, commits)
}
