//! The gRPC services: one module per service, each turning requests into domain commands
//! (parsing every field at this boundary) and outcomes into responses.

/// A command request: it names its idempotency key and the aggregate it acts on.
trait CommandRequest: prost::Message + limits::Limited {
    fn idempotency_key(&self) -> &str;
    fn aggregate_id(&self) -> &str;
}

/// Implements [`CommandRequest`] for request types whose aggregate id is in field `$id`.
macro_rules! command_requests {
    ($id:ident: $($request:ty),+ $(,)?) => {
        $(impl $crate::grpc::CommandRequest for $request {
            fn idempotency_key(&self) -> &str {
                &self.idempotency_key
            }
            fn aggregate_id(&self) -> &str {
                &self.$id
            }
        })+
    };
}

mod history;
mod inventory;
pub mod limits;
mod loyalty;
mod menu;
mod orders;
mod streaming;
mod subscriptions;
mod watch_order;

use std::borrow::Cow;
use std::sync::Arc;

use cqrs_es::{Aggregate, DomainEvent};
use domain::inventory::StoreInventory;
use domain::loyalty::LoyaltyAccount;
use domain::{Menu, Order, Quantity, Sku, ValidationError};
use proto::v1 as pb;
use tonic::Request;

use crate::auth::{Principal, Role, TokenAuthority};
use crate::call::Call;
use crate::commit_feed::CommitFeed;
use crate::error::ApiError;
use crate::executor::{CommandExecutor, Executed};
use limits::Limited;

pub use history::OrderHistoryGrpc;
pub use inventory::InventoryGrpc;
pub use loyalty::LoyaltyGrpc;
pub use menu::MenuGrpc;
pub use orders::OrdersGrpc;
pub use subscriptions::SubscriptionsGrpc;

/// What every service shares: the command executors and the token authority.
pub struct Api {
    /// Order commands.
    pub orders: CommandExecutor<Order>,
    /// Inventory commands.
    pub inventory: CommandExecutor<StoreInventory>,
    /// Loyalty commands.
    pub loyalty: CommandExecutor<LoyaltyAccount>,
    /// Menu commands.
    pub menu: CommandExecutor<Menu>,
    /// Verifies bearer tokens.
    pub tokens: TokenAuthority,
    /// Reads the history view (ListOrders, ListLoyaltyTransactions); never writes.
    pub history: read_models::HistoryQueries,
    /// The live log the streaming RPCs follow.
    pub feed: CommitFeed,
}

impl Api {
    /// The authenticated caller, refused unless in one of `roles`.
    fn caller<T>(
        &self,
        request: &Request<T>,
        roles: &[Role],
        action: &str,
    ) -> Result<Principal, ApiError> {
        let principal = crate::auth::authenticate(&self.tokens, request)?;
        principal.require(roles, action)?;
        Ok(principal)
    }

    /// An authenticated command call in one of `roles`, within the request's limits. The limits
    /// are checked before anything else is done with the request (fingerprint, parsing).
    fn command_call<M: prost::Message + Limited>(
        &self,
        rpc: &'static str,
        request: &Request<M>,
        client_key: &str,
        roles: &[Role],
    ) -> Result<Call, ApiError> {
        let principal = self.caller(request, roles, rpc)?;
        request.get_ref().check_limits()?;
        let call = Call::new(rpc, principal, request, client_key)?;
        tracing::Span::current().record("correlation_id", call.correlation_id());
        Ok(call)
    }
}

/// Every role.
const ANYONE: &[Role] = &[
    Role::Customer,
    Role::Barista,
    Role::StoreManager,
    Role::Service,
];
/// Staff of a store and services.
const STAFF: &[Role] = &[Role::Barista, Role::StoreManager, Role::Service];
/// Store managers and services.
const MANAGERS: &[Role] = &[Role::StoreManager, Role::Service];
/// Internal services only.
const SERVICES: &[Role] = &[Role::Service];

/// Runs `command` and answers with the wire form of its outcome.
async fn execute<A>(
    executor: &CommandExecutor<A>,
    call: &Call,
    aggregate_id: &str,
    command: A::Command,
) -> Result<tonic::Response<pb::CommitResult>, tonic::Status>
where
    A: Aggregate + 'static,
    A::Command: Clone,
    A::Error: domain::DomainError,
{
    let executed = executor
        .execute(call, aggregate_id, command)
        .await
        .map_err(ApiError::from)?;
    Ok(tonic::Response::new(commit_result(&executed)))
}

/// The wire form of a command's outcome.
fn commit_result<A: Aggregate>(executed: &Executed<A>) -> pb::CommitResult {
    let sequence = |envelope: Option<&cqrs_es::EventEnvelope<A>>| {
        envelope.map_or(0, |envelope| envelope.sequence as u64)
    };
    pb::CommitResult {
        aggregate_id: executed.aggregate_id.clone(),
        first_sequence: sequence(executed.events.first()),
        last_sequence: sequence(executed.events.last()),
        event_types: executed
            .events
            .iter()
            .map(|envelope| envelope.payload.event_type())
            .collect(),
        replayed: executed.replayed,
    }
}

/// Collects every malformed field of a request before refusing it, so a client sees all its
/// mistakes at once.
#[derive(Default)]
struct Violations(Vec<ValidationError>);

impl Violations {
    /// Keeps the parsed value, or records the error at `field`.
    fn check<T>(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        parsed: Result<T, ValidationError>,
    ) -> Option<T> {
        parsed.map_err(|error| self.0.push(error.at(field))).ok()
    }

    /// The SKU and quantity of request line `index`, or their violations at `lines[index]`.
    fn sku_and_quantity(
        &mut self,
        index: usize,
        sku: &str,
        quantity: u32,
    ) -> Option<(Sku, Quantity)> {
        let sku = self.check(format!("lines[{index}].sku"), Sku::parse(sku));
        let quantity = self.check(format!("lines[{index}].quantity"), Quantity::new(quantity));
        Some((sku?, quantity?))
    }

    /// Records a violation that no parser reported.
    fn add(&mut self, field: impl Into<Cow<'static, str>>, message: impl Into<String>) {
        self.0.push(ValidationError::new(field, message));
    }

    /// The request built from the checked fields, or every violation. `build` sees each
    /// checked field as an `Option` and can use `?`: it only runs when all of them are `Some`.
    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        if !self.0.is_empty() {
            return Err(ApiError::Invalid(self.0));
        }
        build().ok_or_else(|| ApiError::Internal("a checked field was missing".into()))
    }
}

/// One field parsed on its own.
fn parse_field<T>(field: &'static str, parsed: Result<T, ValidationError>) -> Result<T, ApiError> {
    parsed.map_err(|error| ApiError::Invalid(vec![error.at(field)]))
}

/// Money from the wire; absent money is a violation, not zero.
fn money(value: Option<&pb::Money>) -> Result<domain::Money, ValidationError> {
    value
        .map(|money| domain::Money::from_cents(money.cents))
        .ok_or_else(|| ValidationError::new("money", "is required"))
}

fn pb_money(value: domain::Money) -> Option<pb::Money> {
    Some(pb::Money {
        cents: value.cents(),
    })
}

/// Shared handles for the services.
pub type SharedApi = Arc<Api>;
