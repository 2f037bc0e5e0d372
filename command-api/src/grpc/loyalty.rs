//! `orderpipe.v1.LoyaltyService`. The aggregate id is the customer id; customers act only on
//! their own account, earning is for services (the saga) only.

use domain::loyalty::{LoyaltyCommand, Tier};
use domain::{CustomerId, ExternalRef, OrderId, Points};
use proto::v1 as pb;
use proto::v1::loyalty_service_server::LoyaltyService;
use tonic::{Request, Response, Status};

use super::{execute, money, parse_field, SharedApi, Violations, SERVICES};
use crate::auth::Role;
use crate::error::ApiError;

const CUSTOMERS_AND_SERVICES: &[Role] = &[Role::Customer, Role::Service];

/// The loyalty service.
pub struct LoyaltyGrpc {
    api: SharedApi,
}

impl LoyaltyGrpc {
    /// The service over the shared API.
    pub fn new(api: SharedApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl LoyaltyService for LoyaltyGrpc {
    async fn earn_points(
        &self,
        request: Request<pb::EarnPointsRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call =
            self.api
                .command_call("EarnPoints", &request, &body.idempotency_key, SERVICES)?;
        let mut fields = Violations::default();
        let customer_id = fields.check("customer_id", CustomerId::parse(&body.customer_id));
        let order_id = fields.check("order_id", OrderId::parse(&body.order_id));
        let amount = fields.check("amount", money(body.amount.as_ref()));
        let (customer_id, command) = fields.finish(|| {
            let customer_id = customer_id?;
            Some((
                customer_id.clone(),
                LoyaltyCommand::EarnPoints {
                    customer_id,
                    order_id: order_id?,
                    amount: amount?,
                },
            ))
        })?;
        execute(&self.api.loyalty, &call, customer_id.as_str(), command).await
    }

    async fn redeem_points(
        &self,
        request: Request<pb::RedeemPointsRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call = self.api.command_call(
            "RedeemPoints",
            &request,
            &body.idempotency_key,
            CUSTOMERS_AND_SERVICES,
        )?;
        let mut fields = Violations::default();
        let customer_id = fields.check("customer_id", CustomerId::parse(&body.customer_id));
        let reference = fields.check("reference", ExternalRef::parse(&body.reference));
        let (customer_id, command) = fields.finish(|| {
            Some((
                customer_id?,
                LoyaltyCommand::RedeemPoints {
                    points: Points(body.points),
                    reference: reference?,
                },
            ))
        })?;
        call.principal()
            .require_customer(&customer_id)
            .map_err(ApiError::from)?;
        execute(&self.api.loyalty, &call, customer_id.as_str(), command).await
    }

    async fn get_loyalty_account(
        &self,
        request: Request<pb::GetLoyaltyAccountRequest>,
    ) -> Result<Response<pb::LoyaltyAccount>, Status> {
        let principal = self
            .api
            .caller(&request, CUSTOMERS_AND_SERVICES, "GetLoyaltyAccount")?;
        let customer_id = parse_field(
            "customer_id",
            CustomerId::parse(&request.get_ref().customer_id),
        )?;
        principal
            .require_customer(&customer_id)
            .map_err(ApiError::from)?;
        let loaded = self
            .api
            .loyalty
            .load(customer_id.as_str())
            .await
            .map_err(ApiError::from)?;
        let account = loaded.state();
        if account.customer_id().is_none() {
            return Err(ApiError::refused(
                domain::ErrorReason::LoyaltyAccountNotFound,
                format!("customer {customer_id} has no loyalty account yet"),
            )
            .into());
        }
        Ok(Response::new(pb::LoyaltyAccount {
            customer_id: customer_id.to_string(),
            balance: account.balance().0,
            lifetime_points: account.lifetime_earned().0,
            tier: match account.tier() {
                Tier::Bronze => pb::LoyaltyTier::Bronze,
                Tier::Silver => pb::LoyaltyTier::Silver,
                Tier::Gold => pb::LoyaltyTier::Gold,
                Tier::Platinum => pb::LoyaltyTier::Platinum,
            } as i32,
            version: loaded.version(),
        }))
    }
}
