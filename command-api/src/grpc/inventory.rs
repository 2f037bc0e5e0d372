//! `orderpipe.v1.InventoryService`. The aggregate id is the store id; staff act only on their
//! own store's stock.

use domain::inventory::{InventoryCommand, StockLine};
use domain::{OrderId, Reason, Sku, StoreId};
use proto::v1 as pb;
use proto::v1::inventory_service_server::InventoryService;
use tonic::{Request, Response, Status};

use super::{execute, parse_field, CommandRequest, SharedApi, Violations, MANAGERS, STAFF};
use crate::auth::Role;
use crate::error::ApiError;

/// The inventory service.
pub struct InventoryGrpc {
    api: SharedApi,
}

impl InventoryGrpc {
    /// The service over the shared API.
    pub fn new(api: SharedApi) -> Self {
        Self { api }
    }

    /// Runs a command on a store's inventory, for callers in `roles` who work at that store.
    async fn execute<M: CommandRequest>(
        &self,
        rpc: &'static str,
        request: Request<M>,
        roles: &[Role],
        command: impl FnOnce(&M, StoreId) -> Result<InventoryCommand, ApiError>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call = self
            .api
            .command_call(rpc, &request, body.idempotency_key(), roles)?;
        let store_id = parse_field("store_id", StoreId::parse(body.aggregate_id()))?;
        call.principal()
            .require_store(&store_id)
            .map_err(ApiError::from)?;
        let command = command(body, store_id.clone())?;
        execute(&self.api.inventory, &call, store_id.as_str(), command).await
    }
}

command_requests!(
    store_id: pb::SetStockRequest,
    pb::RestockRequest,
    pb::AdjustStockRequest,
    pb::ReserveStockRequest,
    pb::ReleaseReservationRequest,
    pb::CommitReservationRequest,
    pb::ReceiveDeliveryRequest
);

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("SetStock", request, MANAGERS, |r, store_id| {
            Ok(InventoryCommand::SetStock {
                store_id,
                sku: parse_field("sku", Sku::parse(&r.sku))?,
                on_hand: r.on_hand,
                low_stock_threshold: r.low_stock_threshold,
            })
        })
        .await
    }

    async fn restock(
        &self,
        request: Request<pb::RestockRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("Restock", request, MANAGERS, |r, _| {
            Ok(InventoryCommand::Restock {
                sku: parse_field("sku", Sku::parse(&r.sku))?,
                quantity: r.quantity,
            })
        })
        .await
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("AdjustStock", request, MANAGERS, |r, _| {
            let mut fields = Violations::default();
            let sku = fields.check("sku", Sku::parse(&r.sku));
            let reason = fields.check("reason", Reason::parse(&r.reason));
            fields.finish(|| {
                Some(InventoryCommand::AdjustStock {
                    sku: sku?,
                    delta: r.delta,
                    reason: reason?,
                })
            })
        })
        .await
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("ReserveStock", request, MANAGERS, |r, _| {
            let mut fields = Violations::default();
            let order_id = fields.check("order_id", OrderId::parse(&r.order_id));
            if r.lines.is_empty() {
                fields.add("lines", "a reservation needs at least one line");
            }
            let lines: Vec<Option<StockLine>> = r
                .lines
                .iter()
                .enumerate()
                .map(|(index, line)| {
                    let (sku, quantity) =
                        fields.sku_and_quantity(index, &line.sku, line.quantity)?;
                    Some(StockLine { sku, quantity })
                })
                .collect();
            fields.finish(|| {
                Some(InventoryCommand::ReserveStock {
                    order_id: order_id?,
                    lines: lines.into_iter().collect::<Option<_>>()?,
                })
            })
        })
        .await
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("ReleaseReservation", request, MANAGERS, |r, _| {
            let mut fields = Violations::default();
            let order_id = fields.check("order_id", OrderId::parse(&r.order_id));
            let reason = fields.check("reason", Reason::parse(&r.reason));
            fields.finish(|| {
                Some(InventoryCommand::ReleaseReservation {
                    order_id: order_id?,
                    reason: reason?,
                })
            })
        })
        .await
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("CommitReservation", request, MANAGERS, |r, _| {
            Ok(InventoryCommand::CommitReservation {
                order_id: parse_field("order_id", OrderId::parse(&r.order_id))?,
            })
        })
        .await
    }

    /// Managers receive goods at their store; services stand for the supplier integration.
    /// Baristas do not: a delivery changes what the store owes its supplier.
    async fn receive_delivery(
        &self,
        request: Request<pb::ReceiveDeliveryRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.execute("ReceiveDelivery", request, MANAGERS, |r, _| {
            let mut fields = Violations::default();
            let sku = fields.check("sku", Sku::parse(&r.sku));
            if r.reorder_number == 0 {
                fields.add("reorder_number", "must name a reorder (numbers start at 1)");
            }
            if r.quantity == 0 {
                fields.add("quantity", "must be above zero");
            }
            fields.finish(|| {
                Some(InventoryCommand::ReceiveDelivery {
                    reorder_number: r.reorder_number,
                    sku: sku?,
                    quantity: r.quantity,
                })
            })
        })
        .await
    }

    async fn get_inventory(
        &self,
        request: Request<pb::GetInventoryRequest>,
    ) -> Result<Response<pb::Inventory>, Status> {
        let principal = self.api.caller(&request, STAFF, "GetInventory")?;
        let store_id = parse_field("store_id", StoreId::parse(&request.get_ref().store_id))?;
        principal.require_store(&store_id).map_err(ApiError::from)?;
        let loaded = self
            .api
            .inventory
            .load(store_id.as_str())
            .await
            .map_err(ApiError::from)?;
        if loaded.state().store_id().is_none() {
            return Err(ApiError::refused(
                domain::ErrorReason::InventoryNotFound,
                format!("store {store_id} has no inventory"),
            )
            .into());
        }
        Ok(Response::new(pb::Inventory {
            store_id: store_id.to_string(),
            levels: loaded
                .state()
                .levels()
                .map(|(sku, level)| (sku, level, loaded.state().open_reorder(sku)))
                .map(|(sku, level, open_reorder)| pb::StockLevel {
                    sku: sku.to_string(),
                    on_hand: level.on_hand,
                    reserved: level.reserved,
                    available: level.available(),
                    low_stock_threshold: level.low_stock_threshold,
                    low_stock: level.warning_active,
                    open_reorder_number: open_reorder.map_or(0, |r| r.reorder_number),
                    open_reorder_quantity: open_reorder.map_or(0, |r| r.suggested_quantity),
                })
                .collect(),
            version: loaded.version(),
        }))
    }
}
