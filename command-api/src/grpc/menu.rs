//! `orderpipe.v1.MenuService`: the one menu orders are priced from. Only services change it.

use domain::menu::{Category, MenuCommand};
use domain::{ItemName, Menu, Sku};
use proto::v1 as pb;
use proto::v1::menu_service_server::MenuService;
use tonic::{Request, Response, Status};

use super::{execute, money, parse_field, pb_money, SharedApi, Violations, ANYONE, SERVICES};
use crate::call::Call;
use crate::error::ApiError;

/// The menu service.
pub struct MenuGrpc {
    api: SharedApi,
}

impl MenuGrpc {
    /// The service over the shared API.
    pub fn new(api: SharedApi) -> Self {
        Self { api }
    }

    async fn execute(
        &self,
        call: Call,
        command: MenuCommand,
    ) -> Result<Response<pb::CommitResult>, Status> {
        execute(&self.api.menu, &call, Menu::ID, command).await
    }
}

#[tonic::async_trait]
impl MenuService for MenuGrpc {
    async fn add_menu_item(
        &self,
        request: Request<pb::AddMenuItemRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call =
            self.api
                .command_call("AddMenuItem", &request, &body.idempotency_key, SERVICES)?;
        let mut fields = Violations::default();
        let sku = fields.check("sku", Sku::parse(&body.sku));
        let name = fields.check("name", ItemName::parse(&body.name));
        let price = fields.check("price", money(body.price.as_ref()));
        let category = match pb::MenuCategory::try_from(body.category) {
            Ok(pb::MenuCategory::Drink) => Some(Category::Drink),
            Ok(pb::MenuCategory::Food) => Some(Category::Food),
            _ => {
                fields.add("category", "must be DRINK or FOOD");
                None
            }
        };
        let command = fields.finish(|| {
            Some(MenuCommand::AddMenuItem {
                sku: sku?,
                name: name?,
                price: price?,
                category: category?,
            })
        })?;
        self.execute(call, command).await
    }

    async fn change_price(
        &self,
        request: Request<pb::ChangePriceRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call =
            self.api
                .command_call("ChangePrice", &request, &body.idempotency_key, SERVICES)?;
        let mut fields = Violations::default();
        let sku = fields.check("sku", Sku::parse(&body.sku));
        let price = fields.check("price", money(body.price.as_ref()));
        let command = fields.finish(|| {
            Some(MenuCommand::ChangePrice {
                sku: sku?,
                price: price?,
            })
        })?;
        self.execute(call, command).await
    }

    async fn set_availability(
        &self,
        request: Request<pb::SetAvailabilityRequest>,
    ) -> Result<Response<pb::CommitResult>, Status> {
        let body = request.get_ref();
        let call =
            self.api
                .command_call("SetAvailability", &request, &body.idempotency_key, SERVICES)?;
        let command = MenuCommand::SetAvailability {
            sku: parse_field("sku", Sku::parse(&body.sku))?,
            available: body.available,
        };
        self.execute(call, command).await
    }

    async fn get_menu(
        &self,
        request: Request<pb::GetMenuRequest>,
    ) -> Result<Response<pb::Menu>, Status> {
        self.api.caller(&request, ANYONE, "GetMenu")?;
        let loaded = self.api.menu.load(Menu::ID).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::Menu {
            items: loaded
                .state()
                .items()
                .map(|item| pb::MenuItem {
                    sku: item.sku.to_string(),
                    name: item.name.to_string(),
                    price: pb_money(item.price),
                    category: match item.category {
                        Category::Drink => pb::MenuCategory::Drink,
                        Category::Food => pb::MenuCategory::Food,
                    } as i32,
                    available: item.available,
                })
                .collect(),
            version: loaded.version(),
        }))
    }
}
