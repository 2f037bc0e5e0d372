//! `orderpipe.v1.OrderService`.

use domain::order::{OrderLineRequest, OrderState, OrderStatus, PaymentStatus, RejectionReason};
use domain::{
    CustomerId, Customisation, ExternalRef, Note, OrderCommand, OrderEvent, OrderId, PaymentToken,
    Reason, StoreId,
};
use proto::v1 as pb;
use proto::v1::order_service_server::OrderService;
use tonic::{Request, Response, Status};

use super::{
    commit_result, execute, money, parse_field, pb_money, CommandRequest, SharedApi, Violations,
    ANYONE, MANAGERS, STAFF,
};
use crate::error::ApiError;

/// The order service.
pub struct OrdersGrpc {
    api: SharedApi,
}

impl OrdersGrpc {
    /// The service over the shared API.
    pub fn new(api: SharedApi) -> Self {
        Self { api }
    }

    /// Runs a command on an existing order and answers with its commit.
    async fn transition<M: CommandRequest>(
        &self,
        rpc: &'static str,
        request: Request<M>,
        roles: &[crate::auth::Role],
        command: impl FnOnce(&M, domain::Actor) -> Result<OrderCommand, ApiError>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call = self
            .api
            .command_call(rpc, &request, body.idempotency_key(), roles)?;
        let order_id = parse_field("order_id", OrderId::parse(body.aggregate_id()))?;
        let command = command(body, call.principal().actor())?;
        execute(&self.api.orders, &call, &order_id.to_string(), command).await
    }
}

command_requests!(
    order_id: pb::OrderTransitionRequest,
    pb::RejectOrderRequest,
    pb::RecordPaymentCapturedRequest,
    pb::RecordPaymentDeclinedRequest,
    pb::RecordPaymentRefundedRequest,
    pb::CancelOrderRequest
);

#[tonic::async_trait]
impl OrderService for OrdersGrpc {
    type WatchOrderStream = super::streaming::ResponseStream<pb::OrderChange>;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        super::watch_order::watch_order(&self.api, request).await
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let call = self.api.command_call(
            "PlaceOrder",
            &request,
            &request.get_ref().idempotency_key,
            ANYONE,
        )?;
        let (order_id, command) = place_order_command(request.get_ref(), call.principal().actor())?;
        let executed = self
            .api
            .orders
            .execute(&call, &order_id.to_string(), command)
            .await
            .map_err(ApiError::from)?;
        let total = executed
            .events
            .iter()
            .find_map(|envelope| match &envelope.payload {
                OrderEvent::OrderPlaced { total, .. } => Some(*total),
                _ => None,
            });
        Ok(Response::new(pb::PlaceOrderResponse {
            commit: Some(commit_result(&executed)),
            total: total.and_then(pb_money),
        }))
    }

    async fn accept_order(
        &self,
        request: Request<pb::OrderTransitionRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("AcceptOrder", request, STAFF, |_, actor| {
            Ok(OrderCommand::AcceptOrder { actor })
        })
        .await
    }

    async fn reject_order(
        &self,
        request: Request<pb::RejectOrderRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("RejectOrder", request, STAFF, |r, actor| {
            let reason = match pb::RejectionReason::try_from(r.reason) {
                Ok(pb::RejectionReason::OutOfStock) => RejectionReason::OutOfStock,
                Ok(pb::RejectionReason::PaymentDeclined) => RejectionReason::PaymentDeclined,
                Ok(pb::RejectionReason::Other) => {
                    RejectionReason::Other(parse_field("detail", Reason::parse(&r.detail))?)
                }
                Ok(pb::RejectionReason::Unspecified) | Err(_) => {
                    return Err(ApiError::invalid(
                        "reason",
                        "must be OUT_OF_STOCK, PAYMENT_DECLINED or OTHER",
                    ))
                }
            };
            Ok(OrderCommand::RejectOrder { reason, actor })
        })
        .await
    }

    async fn record_payment_captured(
        &self,
        request: Request<pb::RecordPaymentCapturedRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("RecordPaymentCaptured", request, MANAGERS, |r, actor| {
            let mut fields = Violations::default();
            let payment_id = fields.check("payment_id", ExternalRef::parse(&r.payment_id));
            let amount = fields.check("amount", money(r.amount.as_ref()));
            fields.finish(|| {
                Some(OrderCommand::RecordPaymentCaptured {
                    payment_id: payment_id?,
                    amount: amount?,
                    actor,
                })
            })
        })
        .await
    }

    async fn record_payment_declined(
        &self,
        request: Request<pb::RecordPaymentDeclinedRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("RecordPaymentDeclined", request, MANAGERS, |r, actor| {
            Ok(OrderCommand::RecordPaymentDeclined {
                reason: parse_field("reason", Reason::parse(&r.reason))?,
                actor,
            })
        })
        .await
    }

    async fn record_payment_refunded(
        &self,
        request: Request<pb::RecordPaymentRefundedRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("RecordPaymentRefunded", request, MANAGERS, |r, actor| {
            let mut fields = Violations::default();
            let refund_id = fields.check("refund_id", ExternalRef::parse(&r.refund_id));
            let amount = fields.check("amount", money(r.amount.as_ref()));
            fields.finish(|| {
                Some(OrderCommand::RecordPaymentRefunded {
                    refund_id: refund_id?,
                    amount: amount?,
                    actor,
                })
            })
        })
        .await
    }

    async fn start_preparing(
        &self,
        request: Request<pb::OrderTransitionRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("StartPreparing", request, STAFF, |_, actor| {
            Ok(OrderCommand::StartPreparing { actor })
        })
        .await
    }

    async fn mark_ready(
        &self,
        request: Request<pb::OrderTransitionRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("MarkReady", request, STAFF, |_, actor| {
            Ok(OrderCommand::MarkReady { actor })
        })
        .await
    }

    async fn complete_order(
        &self,
        request: Request<pb::OrderTransitionRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("CompleteOrder", request, STAFF, |_, actor| {
            Ok(OrderCommand::CompleteOrder { actor })
        })
        .await
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        self.transition("CancelOrder", request, ANYONE, |r, actor| {
            Ok(OrderCommand::CancelOrder {
                reason: parse_field("reason", Reason::parse(&r.reason))?,
                actor,
            })
        })
        .await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let principal = self.api.caller(&request, ANYONE, "GetOrder")?;
        let order_id = parse_field("order_id", OrderId::parse(&request.get_ref().order_id))?;
        let loaded = self
            .api
            .orders
            .load(&order_id.to_string())
            .await
            .map_err(ApiError::from)?;
        let order = loaded.state();
        let state = order.state().ok_or_else(|| {
            ApiError::refused(
                domain::ErrorReason::OrderNotFound,
                format!("order {order_id} does not exist"),
            )
        })?;
        if !order.visible_to(&principal.actor()) {
            return Err(
                ApiError::PermissionDenied(format!("caller may not see order {order_id}")).into(),
            );
        }
        Ok(Response::new(order_view(state, loaded.version())))
    }
}

/// Parses a whole `PlaceOrderRequest`, reporting every bad field (lines by index).
fn place_order_command(
    request: &pb::PlaceOrderRequest,
    actor: domain::Actor,
) -> Result<(OrderId, OrderCommand), ApiError> {
    let mut fields = Violations::default();
    let order_id = fields.check("order_id", OrderId::parse(&request.order_id));
    let store_id = fields.check("store_id", StoreId::parse(&request.store_id));
    let customer_id = fields.check("customer_id", CustomerId::parse(&request.customer_id));
    let note = fields.check("note", Note::parse(&request.note));
    let payment_token = if request.payment_token.is_empty() {
        Some(None)
    } else {
        fields
            .check("payment_token", PaymentToken::parse(&request.payment_token))
            .map(Some)
    };
    if request.lines.is_empty() {
        fields.add("lines", "an order needs at least one line");
    }
    let lines: Vec<Option<OrderLineRequest>> = request
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let sku_and_quantity = fields.sku_and_quantity(index, &line.sku, line.quantity);
            let customisations: Vec<Option<Customisation>> = line
                .customisations
                .iter()
                .enumerate()
                .map(|(c, text)| {
                    fields.check(
                        format!("lines[{index}].customisations[{c}]"),
                        Customisation::parse(text),
                    )
                })
                .collect();
            let (sku, quantity) = sku_and_quantity?;
            Some(OrderLineRequest {
                sku,
                quantity,
                customisations: customisations.into_iter().collect::<Option<_>>()?,
            })
        })
        .collect();
    fields.finish(|| {
        let order_id = order_id?;
        Some((
            order_id,
            OrderCommand::PlaceOrder {
                order_id,
                store_id: store_id?,
                customer_id: customer_id?,
                lines: lines.into_iter().collect::<Option<_>>()?,
                note: note?,
                payment_token: payment_token?,
                actor,
            },
        ))
    })
}

pub(super) fn order_view(state: &OrderState, version: u64) -> pb::Order {
    pb::Order {
        order_id: state.id.to_string(),
        store_id: state.store_id.to_string(),
        customer_id: state.customer_id.to_string(),
        status: pb_status(state.status) as i32,
        lines: state
            .lines
            .iter()
            .map(|line| pb::PricedLine {
                sku: line.sku.to_string(),
                name: line.name.to_string(),
                quantity: line.quantity.get(),
                customisations: line
                    .customisations
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                unit_price: pb_money(line.unit_price),
                line_total: pb_money(line.line_total),
            })
            .collect(),
        note: state.note.to_string(),
        total: pb_money(state.total),
        payment_captured: matches!(
            state.payment,
            PaymentStatus::Captured { .. } | PaymentStatus::Refunded { .. }
        ),
        payment_refunded: matches!(state.payment, PaymentStatus::Refunded { .. }),
        version,
        payment_token: state
            .payment_token
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

pub(super) fn pb_status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Placed => pb::OrderStatus::Placed,
        OrderStatus::Accepted => pb::OrderStatus::Accepted,
        OrderStatus::Preparing => pb::OrderStatus::Preparing,
        OrderStatus::Ready => pb::OrderStatus::Ready,
        OrderStatus::Completed => pb::OrderStatus::Completed,
        OrderStatus::Rejected => pb::OrderStatus::Rejected,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}
