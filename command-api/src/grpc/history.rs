//! `orderpipe.v1.OrderHistoryService`: ListOrders and ListLoyaltyTransactions, answered from
//! the history view (read only, through its own pool), never from the event store.
//!
//! Scope: a customer lists only their own orders and ledger; staff list only their own store's
//! orders (not a customer's, which would show other stores' orders); services list anything.

use domain::order::OrderStatus;
use domain::{CustomerId, StoreId, ValidationError};
use proto::v1 as pb;
use proto::v1::list_orders_request::Owner;
use proto::v1::order_history_service_server::OrderHistoryService;
use read_models::{
    Freshness, LoyaltyEntryKind, LoyaltyEntryRow, LoyaltyQuery, OrderOwner, OrderQuery, OrderRow,
    PageSize, QueryError,
};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::orders::pb_status;
use super::{pb_money, SharedApi, Violations, ANYONE};
use crate::auth::Role;
use crate::error::ApiError;

const CUSTOMERS_AND_SERVICES: &[Role] = &[Role::Customer, Role::Service];

/// The history query service.
pub struct OrderHistoryGrpc {
    api: SharedApi,
}

impl OrderHistoryGrpc {
    /// The service over the shared API.
    pub fn new(api: SharedApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl OrderHistoryService for OrderHistoryGrpc {
    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let principal = self.api.caller(&request, ANYONE, "ListOrders")?;
        let query = list_orders_query(request.get_ref())?;
        match &query.owner {
            OrderOwner::Customer(customer) => {
                principal.require_customer(&CustomerId::parse(customer).map_err(invalid)?)
            }
            OrderOwner::Store(store) => {
                principal.require_store(&StoreId::parse(store).map_err(invalid)?)
            }
        }
        .map_err(ApiError::from)?;
        let page = self
            .api
            .history
            .list_orders(&query)
            .await
            .map_err(query_error)?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: page.rows.iter().map(order_summary).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            freshness: Some(view_freshness(&page.freshness)),
        }))
    }

    async fn list_loyalty_transactions(
        &self,
        request: Request<pb::ListLoyaltyTransactionsRequest>,
    ) -> Result<Response<pb::ListLoyaltyTransactionsResponse>, Status> {
        let principal =
            self.api
                .caller(&request, CUSTOMERS_AND_SERVICES, "ListLoyaltyTransactions")?;
        let body = request.get_ref();
        let mut fields = Violations::default();
        let customer_id = fields.check("customer_id", CustomerId::parse(&body.customer_id));
        let page_token = page_token(&mut fields, &body.page_token);
        let customer_id = fields.finish(|| customer_id)?;
        principal
            .require_customer(&customer_id)
            .map_err(ApiError::from)?;
        let page = self
            .api
            .history
            .list_loyalty(&LoyaltyQuery {
                customer_id: customer_id.to_string(),
                page_size: PageSize::new(body.page_size),
                page_token,
            })
            .await
            .map_err(query_error)?;
        Ok(Response::new(pb::ListLoyaltyTransactionsResponse {
            transactions: page.rows.iter().map(loyalty_transaction).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            freshness: Some(view_freshness(&page.freshness)),
        }))
    }
}

fn invalid(error: ValidationError) -> ApiError {
    ApiError::Invalid(vec![error])
}

/// Every field of a ListOrders request checked, all violations reported at once.
fn list_orders_query(body: &pb::ListOrdersRequest) -> Result<OrderQuery, ApiError> {
    let mut fields = Violations::default();
    let owner = match &body.owner {
        Some(Owner::CustomerId(id)) => fields
            .check("customer_id", CustomerId::parse(id))
            .map(|id| OrderOwner::Customer(id.to_string())),
        Some(Owner::StoreId(id)) => fields
            .check("store_id", StoreId::parse(id))
            .map(|id| OrderOwner::Store(id.to_string())),
        None => {
            fields.add("owner", "give customer_id or store_id");
            None
        }
    };
    let statuses: Vec<Option<OrderStatus>> = body
        .statuses
        .iter()
        .enumerate()
        .map(|(index, value)| fields.check(format!("statuses[{index}]"), order_status(*value)))
        .collect();
    let placed_from = fields.check("placed_from", timestamp(body.placed_from.as_ref()));
    let placed_before = fields.check("placed_before", timestamp(body.placed_before.as_ref()));
    if let (Some(Some(from)), Some(Some(before))) = (placed_from, placed_before) {
        if from >= before {
            fields.add(
                "placed_before",
                "must be after placed_from (the range is [placed_from, placed_before))",
            );
        }
    }
    let page_token = page_token(&mut fields, &body.page_token);
    fields.finish(|| {
        Some(OrderQuery {
            owner: owner?,
            statuses: statuses.into_iter().collect::<Option<_>>()?,
            placed_from: placed_from?,
            placed_before: placed_before?,
            page_size: PageSize::new(body.page_size),
            page_token,
        })
    })
}

/// The page token as given (empty: the first page); one longer than any token we write is a
/// violation before it reaches the query.
fn page_token(fields: &mut Violations, token: &str) -> Option<String> {
    if token.len() > read_models::MAX_PAGE_TOKEN_CHARS {
        fields.add("page_token", "is not a page token of this list (too long)");
    }
    (!token.is_empty()).then(|| token.to_owned())
}

fn order_status(value: i32) -> Result<OrderStatus, ValidationError> {
    let invalid = || ValidationError::new("statuses", format!("{value} is not an order status"));
    Ok(
        match pb::OrderStatus::try_from(value).map_err(|_| invalid())? {
            pb::OrderStatus::Unspecified => return Err(invalid()),
            pb::OrderStatus::Placed => OrderStatus::Placed,
            pb::OrderStatus::Accepted => OrderStatus::Accepted,
            pb::OrderStatus::Preparing => OrderStatus::Preparing,
            pb::OrderStatus::Ready => OrderStatus::Ready,
            pb::OrderStatus::Completed => OrderStatus::Completed,
            pb::OrderStatus::Rejected => OrderStatus::Rejected,
            pb::OrderStatus::Cancelled => OrderStatus::Cancelled,
        },
    )
}

/// An optional wire timestamp as a time; one outside what a time can hold is a violation.
fn timestamp(
    value: Option<&prost_types::Timestamp>,
) -> Result<Option<OffsetDateTime>, ValidationError> {
    value
        .map(|ts| {
            u32::try_from(ts.nanos)
                .ok()
                .filter(|nanos| *nanos < 1_000_000_000)
                .and_then(|nanos| {
                    OffsetDateTime::from_unix_timestamp(ts.seconds)
                        .ok()?
                        .replace_nanosecond(nanos)
                        .ok()
                })
                .ok_or_else(|| {
                    ValidationError::new(
                        "timestamp",
                        "is not a valid time (seconds within years 1-9999, nanos 0-999999999)",
                    )
                })
        })
        .transpose()
}

fn pb_timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// The one mapping of query failures to API errors.
fn query_error(error: QueryError) -> ApiError {
    match error {
        QueryError::PageToken(reason) => ApiError::invalid("page_token", reason.to_string()),
        QueryError::EmptyTimeRange => {
            ApiError::invalid("placed_before", QueryError::EmptyTimeRange.to_string())
        }
        QueryError::Database(_) => ApiError::ViewUnavailable(error),
        QueryError::Unreadable(detail) => ApiError::Internal(detail),
    }
}

fn order_summary(row: &OrderRow) -> pb::OrderSummary {
    pb::OrderSummary {
        order_id: row.order_id.clone(),
        store_id: row.store_id.clone(),
        customer_id: row.customer_id.clone(),
        status: pb_status(row.status) as i32,
        lines: row
            .lines
            .iter()
            .map(|line| pb::PricedLine {
                sku: line.sku.clone(),
                name: line.name.clone(),
                quantity: line.quantity,
                customisations: line.customisations.clone(),
                unit_price: pb_money(domain::Money::from_cents(line.unit_price_cents)),
                line_total: pb_money(domain::Money::from_cents(line.line_total_cents)),
            })
            .collect(),
        note: row.note.clone(),
        total: pb_money(domain::Money::from_cents(row.total_cents)),
        placed_at: Some(pb_timestamp(row.placed_at)),
        ended_at: row.ended_at.map(pb_timestamp),
        end_reason: row.end_reason.clone().unwrap_or_default(),
    }
}

fn loyalty_transaction(row: &LoyaltyEntryRow) -> pb::LoyaltyTransaction {
    let kind = match row.kind {
        LoyaltyEntryKind::Earned => pb::LoyaltyTransactionKind::Earned,
        LoyaltyEntryKind::Redeemed => pb::LoyaltyTransactionKind::Redeemed,
        LoyaltyEntryKind::TierUpgraded => pb::LoyaltyTransactionKind::TierChanged,
    };
    let tier = match row.tier.as_deref() {
        Some("bronze") => pb::LoyaltyTier::Bronze,
        Some("silver") => pb::LoyaltyTier::Silver,
        Some("gold") => pb::LoyaltyTier::Gold,
        Some("platinum") => pb::LoyaltyTier::Platinum,
        _ => pb::LoyaltyTier::Unspecified,
    };
    pb::LoyaltyTransaction {
        sequence: row.sequence,
        kind: kind as i32,
        points: row.points,
        order_id: row.order_id.clone().unwrap_or_default(),
        amount: row
            .amount_cents
            .and_then(|cents| pb_money(domain::Money::from_cents(cents))),
        tier: tier as i32,
        reference: row.reference.clone().unwrap_or_default(),
        recorded_at: Some(pb_timestamp(row.recorded_at)),
    }
}

fn view_freshness(freshness: &Freshness) -> pb::ViewFreshness {
    pb::ViewFreshness {
        last_applied_position: freshness.last_position.unwrap_or_default(),
        last_applied_committed_at: freshness.last_committed_at.map(pb_timestamp),
        read_at: Some(pb_timestamp(freshness.read_at)),
        lag_ms: freshness
            .lag()
            .map_or(0, |lag| lag.whole_milliseconds().max(0) as u64),
    }
}
