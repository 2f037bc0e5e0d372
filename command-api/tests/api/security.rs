//! Abuse of the API: every role against every RPC, forged and misdirected tokens, secrets in
//! logs, and input that looks like SQL or markup.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_tokens::{SigningKey, TokenIssuer};
use command_api::auth::{Claims, Role};
use jsonwebtoken::{EncodingKey, Header};
use prost::Message;
use prost_types::FileDescriptorSet;
use proto::v1 as pb;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use proto::v1::subscription_service_client::SubscriptionServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::helpers::{new_order_id, place_order, spawn_app, transition, TestApp, STORE};

const ROLES: [Role; 4] = [
    Role::Customer,
    Role::Barista,
    Role::StoreManager,
    Role::Service,
];

/// Who may call what, as docs/architecture.md "Roles and RPCs" states it (own order, own store,
/// own account: the requests below stay inside the caller's scope).
const MATRIX: &[(&str, &[Role])] = {
    use Role::{Barista as B, Customer as C, Service as S, StoreManager as M};
    &[
        ("PlaceOrder", &[C, B, M, S]),
        ("AcceptOrder", &[B, M, S]),
        ("RejectOrder", &[B, M, S]),
        ("StartPreparing", &[B, M, S]),
        ("MarkReady", &[B, M, S]),
        ("CompleteOrder", &[B, M, S]),
        ("RecordPaymentCaptured", &[M, S]),
        ("RecordPaymentDeclined", &[M, S]),
        ("RecordPaymentRefunded", &[M, S]),
        ("CancelOrder", &[C, B, M, S]),
        ("GetOrder", &[C, B, M, S]),
        ("SetStock", &[M, S]),
        ("Restock", &[M, S]),
        ("AdjustStock", &[M, S]),
        ("ReserveStock", &[M, S]),
        ("ReleaseReservation", &[M, S]),
        ("CommitReservation", &[M, S]),
        ("GetInventory", &[B, M, S]),
        ("EarnPoints", &[S]),
        ("RedeemPoints", &[C, S]),
        ("GetLoyaltyAccount", &[C, S]),
        ("AddMenuItem", &[S]),
        ("ChangePrice", &[S]),
        ("SetAvailability", &[S]),
        ("GetMenu", &[C, B, M, S]),
        // History queries: customers their own, staff their own store's, services any.
        ("ListOrders", &[C, B, M, S]),
        ("ListLoyaltyTransactions", &[C, S]),
        // Streams (issue 20): an order's watchers, the whole log's subscribers.
        ("WatchOrder", &[C, B, M, S]),
        ("SubscribeCommits", &[S]),
        // Reorders: a store's manager receives goods; a service stands for the supplier's
        // integration. Baristas do not: a delivery settles what the store ordered.
        ("ReceiveDelivery", &[M, S]),
    ]
};

const CUSTOMER: &str = "c-1";

/// Calls `rpc` as `role` on `order` (placed by [`CUSTOMER`] at [`STORE`]); only the status
/// matters.
async fn call(app: &TestApp, rpc: &str, role: Role, order: &str) -> Result<(), Status> {
    let subject = match role {
        Role::Customer => CUSTOMER,
        _ => "staff-or-service",
    };
    let key = format!("{rpc}-{role}-{}", new_order_id());
    let order = order.to_owned();
    let mut orders = app.orders(role, subject);
    let mut inventory = app.inventory(role, subject);
    let mut loyalty = app.loyalty(role, subject);
    let mut menu = app.menu(role, subject);
    let lines = || {
        vec![pb::StockLine {
            sku: "LATTE-12".into(),
            quantity: 1,
        }]
    };
    match rpc {
        "PlaceOrder" => orders
            .place_order(place_order(
                &key,
                &new_order_id(),
                CUSTOMER,
                &[("LATTE-12", 1)],
            ))
            .await
            .map(drop),
        "AcceptOrder" => orders
            .accept_order(transition(&key, &order))
            .await
            .map(drop),
        "RejectOrder" => orders
            .reject_order(pb::RejectOrderRequest {
                idempotency_key: key,
                order_id: order,
                reason: pb::RejectionReason::OutOfStock as i32,
                detail: String::new(),
            })
            .await
            .map(drop),
        "StartPreparing" => orders
            .start_preparing(transition(&key, &order))
            .await
            .map(drop),
        "MarkReady" => orders.mark_ready(transition(&key, &order)).await.map(drop),
        "CompleteOrder" => orders
            .complete_order(transition(&key, &order))
            .await
            .map(drop),
        "RecordPaymentCaptured" => orders
            .record_payment_captured(pb::RecordPaymentCapturedRequest {
                idempotency_key: key,
                order_id: order,
                payment_id: "pay_1".into(),
                amount: Some(pb::Money { cents: 450 }),
            })
            .await
            .map(drop),
        "RecordPaymentDeclined" => orders
            .record_payment_declined(pb::RecordPaymentDeclinedRequest {
                idempotency_key: key,
                order_id: order,
                reason: "card declined".into(),
            })
            .await
            .map(drop),
        "RecordPaymentRefunded" => orders
            .record_payment_refunded(pb::RecordPaymentRefundedRequest {
                idempotency_key: key,
                order_id: order,
                refund_id: "refund_1".into(),
                amount: Some(pb::Money { cents: 450 }),
            })
            .await
            .map(drop),
        "CancelOrder" => orders
            .cancel_order(pb::CancelOrderRequest {
                idempotency_key: key,
                order_id: order,
                reason: "changed my mind".into(),
            })
            .await
            .map(drop),
        "GetOrder" => orders
            .get_order(pb::GetOrderRequest { order_id: order })
            .await
            .map(drop),
        "SetStock" => inventory
            .set_stock(pb::SetStockRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                sku: "LATTE-12".into(),
                on_hand: 50,
                low_stock_threshold: 5,
            })
            .await
            .map(drop),
        "Restock" => inventory
            .restock(pb::RestockRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                sku: "LATTE-12".into(),
                quantity: 5,
            })
            .await
            .map(drop),
        "AdjustStock" => inventory
            .adjust_stock(pb::AdjustStockRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                sku: "LATTE-12".into(),
                delta: -1,
                reason: "spilled".into(),
            })
            .await
            .map(drop),
        "ReserveStock" => inventory
            .reserve_stock(pb::ReserveStockRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                order_id: order,
                lines: lines(),
            })
            .await
            .map(drop),
        "ReleaseReservation" => inventory
            .release_reservation(pb::ReleaseReservationRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                order_id: order,
                reason: "cancelled".into(),
            })
            .await
            .map(drop),
        "CommitReservation" => inventory
            .commit_reservation(pb::CommitReservationRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                order_id: order,
            })
            .await
            .map(drop),
        "GetInventory" => inventory
            .get_inventory(pb::GetInventoryRequest {
                store_id: STORE.into(),
            })
            .await
            .map(drop),
        "EarnPoints" => loyalty
            .earn_points(pb::EarnPointsRequest {
                idempotency_key: key,
                customer_id: CUSTOMER.into(),
                order_id: order,
                amount: Some(pb::Money { cents: 450 }),
            })
            .await
            .map(drop),
        "RedeemPoints" => loyalty
            .redeem_points(pb::RedeemPointsRequest {
                idempotency_key: key,
                customer_id: CUSTOMER.into(),
                points: 1,
                reference: "coffee".into(),
            })
            .await
            .map(drop),
        "GetLoyaltyAccount" => loyalty
            .get_loyalty_account(pb::GetLoyaltyAccountRequest {
                customer_id: CUSTOMER.into(),
            })
            .await
            .map(drop),
        "AddMenuItem" => menu
            .add_menu_item(pb::AddMenuItemRequest {
                idempotency_key: key,
                sku: format!("NEW-{}", &new_order_id()[..6]).to_uppercase(),
                name: "New".into(),
                price: Some(pb::Money { cents: 100 }),
                category: pb::MenuCategory::Food as i32,
            })
            .await
            .map(drop),
        "ChangePrice" => menu
            .change_price(pb::ChangePriceRequest {
                idempotency_key: key,
                sku: "MOCHA-16".into(),
                price: Some(pb::Money { cents: 550 }),
            })
            .await
            .map(drop),
        "SetAvailability" => menu
            .set_availability(pb::SetAvailabilityRequest {
                idempotency_key: key,
                sku: "MOCHA-16".into(),
                available: true,
            })
            .await
            .map(drop),
        "GetMenu" => menu.get_menu(pb::GetMenuRequest {}).await.map(drop),
        "ListOrders" => {
            use pb::list_orders_request::Owner;
            let owner = match role {
                Role::Barista | Role::StoreManager => Owner::StoreId(STORE.into()),
                Role::Customer | Role::Service => Owner::CustomerId(CUSTOMER.into()),
            };
            app.history(role, subject)
                .list_orders(pb::ListOrdersRequest {
                    owner: Some(owner),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        "ListLoyaltyTransactions" => app
            .history(role, subject)
            .list_loyalty_transactions(pb::ListLoyaltyTransactionsRequest {
                customer_id: CUSTOMER.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        // Streams: the role check answers before the first message.
        "WatchOrder" => orders
            .watch_order(pb::WatchOrderRequest {
                order_id: order,
                after_version: 0,
            })
            .await
            .map(drop),
        "SubscribeCommits" => SubscriptionServiceClient::with_interceptor(
            app.channel(),
            app.bearer(Some(&app.token(role, subject))),
        )
        .subscribe_commits(pb::SubscribeCommitsRequest::default())
        .await
        .map(drop),
        // No reorder is open: an allowed caller is told NOT_FOUND, the others PERMISSION_DENIED.
        "ReceiveDelivery" => inventory
            .receive_delivery(pb::ReceiveDeliveryRequest {
                idempotency_key: key,
                store_id: STORE.into(),
                reorder_number: 1,
                sku: "LATTE-12".into(),
                quantity: 10,
            })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

/// Every RPC of the command services, as the descriptor set the reflection service serves
/// declares them (the services of package `orderpipe.v1`).
fn rpcs_the_services_declare() -> BTreeSet<String> {
    let descriptors = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    descriptors
        .file
        .iter()
        .filter(|file| file.package() == "orderpipe.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| &service.method)
        .map(|method| method.name().to_owned())
        .collect()
}

#[test]
fn the_matrix_has_one_row_for_every_rpc_the_services_declare() {
    let declared = rpcs_the_services_declare();
    assert!(
        declared.len() > 20,
        "the descriptor lists the RPCs: {declared:?}"
    );
    let rows: BTreeSet<String> = MATRIX.iter().map(|(rpc, _)| (*rpc).to_owned()).collect();
    assert_eq!(MATRIX.len(), rows.len(), "an RPC has two rows");
    let without_row: Vec<_> = declared.difference(&rows).collect();
    let not_declared: Vec<_> = rows.difference(&declared).collect();
    assert!(
        without_row.is_empty() && not_declared.is_empty(),
        "RPCs without a row: {without_row:?}; rows of no RPC: {not_declared:?}"
    );
}

#[tokio::test]
async fn every_role_against_every_rpc_is_allowed_or_denied_as_the_table_says() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    app.project_history().await;
    let mut mismatches = Vec::new();
    // The RPCs come from the descriptor, so one added without a row fails here.
    for rpc in rpcs_the_services_declare() {
        let Some((_, allowed)) = MATRIX.iter().find(|(row, _)| *row == rpc) else {
            mismatches.push(format!("{rpc} has no row in MATRIX"));
            continue;
        };
        for role in ROLES {
            // A fresh order per call, so an earlier call's transition never stands in the way.
            let order = new_order_id();
            app.orders(Role::Customer, CUSTOMER)
                .place_order(place_order(&order, &order, CUSTOMER, &[("LATTE-12", 1)]))
                .await
                .unwrap();
            let outcome = call(&app, &rpc, role, &order).await;
            let denied = matches!(&outcome, Err(s) if s.code() == Code::PermissionDenied);
            let unauthenticated = matches!(&outcome, Err(s) if s.code() == Code::Unauthenticated);
            let should_be_allowed = allowed.contains(&role);
            if unauthenticated || denied == should_be_allowed {
                mismatches.push(format!("{rpc} as {role}: {outcome:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    app.stop().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(audience: &str) -> Claims {
    Claims {
        sub: CUSTOMER.into(),
        role: Role::Customer,
        store_id: None,
        iss: "orderpipe".into(),
        aud: audience.into(),
        iat: now(),
        exp: now() + 3600,
    }
}

/// Every string anywhere in a JSON value.
fn strings(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => into.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, into)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, into)),
        _ => {}
    }
}

/// Rotation as an operator does it: the next key is published next to the current one, then
/// signs. The API fetches the JWKS early when a token names a key it does not hold (at most once
/// per `auth.jwks_min_refetch_secs`), so the new key's tokens pass within that interval.
#[tokio::test]
async fn a_key_published_while_the_api_runs_is_accepted_after_the_early_refetch() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let next_key = SigningKey::generate().unwrap();
    auth_tokens::publish_key(std::path::Path::new(&app.keys.jwks_url()), &next_key).unwrap();
    let token = TokenIssuer::new(&next_key, "orderpipe", "orderpipe-api")
        .mint(CUSTOMER, Role::Customer, None, Duration::from_secs(600))
        .unwrap();
    let started = std::time::Instant::now();
    let accepted = loop {
        let mut menu = MenuServiceClient::with_interceptor(app.channel(), app.bearer(Some(&token)));
        match menu.get_menu(pb::GetMenuRequest::default()).await {
            Ok(_) => break true,
            Err(status) if started.elapsed() < Duration::from_secs(10) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break false,
        }
    };
    assert!(accepted, "the new key's token was still refused after 10 s");
    assert!(
        app.menu(Role::Customer, CUSTOMER)
            .get_menu(pb::GetMenuRequest::default())
            .await
            .is_ok(),
        "the current key keeps working"
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_audience_unsigned_foreign_key_and_other_algorithm_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let issuer = app.keys.issuer();
    let wrong_audience = issuer.sign(&claims("another-api")).unwrap();
    let valid = app.token(Role::Customer, CUSTOMER);
    let payload = valid.split('.').nth(1).unwrap();
    // The header {"alg":"none","typ":"JWT"} and no signature: the classic forgery.
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    // HS256 keyed with the public key anyone can read from the JWKS, under its kid: the
    // algorithm-confusion forgery. The key decides the algorithm (ES256), not the header.
    let mut confused = Header::new(jsonwebtoken::Algorithm::HS256);
    confused.kid = Some(app.keys.key().kid().to_owned());
    let public_key_as_secret = jsonwebtoken::encode(
        &confused,
        &claims("orderpipe-api"),
        &EncodingKey::from_secret(app.keys.key().public_jwk().to_string().as_bytes()),
    )
    .unwrap();
    // A well-formed ES256 token from a key pair the JWKS does not hold.
    let foreign_key = SigningKey::generate().unwrap();
    let foreign = TokenIssuer::new(&foreign_key, "orderpipe", "orderpipe-api")
        .sign(&claims("orderpipe-api"))
        .unwrap();
    let before = app.event_count().await;
    for (token, what) in [
        (wrong_audience, "wrong audience"),
        (unsigned, "unsigned"),
        (public_key_as_secret, "HS256 keyed with the public key"),
        (foreign, "signed by a key not in the JWKS"),
        ("not-a-jwt".to_owned(), "garbage"),
    ] {
        let status = app
            .orders_as(Some(&token))
            .place_order(place_order(
                &new_order_id(),
                &new_order_id(),
                CUSTOMER,
                &[("LATTE-12", 1)],
            ))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    assert_eq!(
        app.event_count().await,
        before,
        "a refused token appended events"
    );
    app.stop().await;
}

#[tokio::test]
async fn strings_that_look_like_sql_or_markup_are_stored_and_returned_verbatim() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let hostile = [
        "'); DROP TABLE events; --",
        "<script>alert('x')</script>",
        "Robert\"); DELETE FROM outbox WHERE ('1'='1",
        "{{7*7}} ${jndi:ldap://x} %s%n \\x00 ü 🍵",
    ];
    let order = new_order_id();
    let mut request = place_order(&order, &order, CUSTOMER, &[("LATTE-12", 1)]);
    request.note = hostile.join(" | ");
    request.lines[0].customisations = hostile.iter().map(|s| (*s).to_owned()).collect();
    app.orders(Role::Customer, CUSTOMER)
        .place_order(request.clone())
        .await
        .unwrap();
    let cancel_reason = hostile[0];
    app.orders(Role::Customer, CUSTOMER)
        .cancel_order(pb::CancelOrderRequest {
            idempotency_key: format!("cancel-{order}"),
            order_id: order.clone(),
            reason: cancel_reason.into(),
        })
        .await
        .unwrap();

    let shown = app
        .orders(Role::Customer, CUSTOMER)
        .get_order(pb::GetOrderRequest {
            order_id: order.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.note, request.note);
    assert_eq!(
        shown.lines[0].customisations,
        request.lines[0].customisations
    );
    // Stored as data: the tables are intact and the payload holds the exact text.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&order)
    .fetch_all(&app.database.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 2, "placed and cancelled");
    let mut placed = Vec::new();
    strings(&serde_json::from_str(&stored[0]).unwrap(), &mut placed);
    assert!(placed.contains(&request.note), "{placed:?}");
    for text in hostile {
        assert!(
            placed.iter().any(|s| s == text),
            "{text} not stored verbatim: {placed:?}"
        );
    }
    let mut cancelled = Vec::new();
    strings(&serde_json::from_str(&stored[1]).unwrap(), &mut cancelled);
    assert!(
        cancelled.iter().any(|s| s == cancel_reason),
        "{cancelled:?}"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.database.pool)
        .await
        .unwrap();
    assert!(outbox >= 2, "the outbox table is intact");
    app.stop().await;
}

/// The real binary, JSON logs at debug level, serving on free ports; its log lines are read
/// until it stops.
#[tokio::test]
async fn no_token_appears_in_any_log_line() {
    let app = spawn_app().await; // a migrated database, and the token keys' JWKS
    let mut server = Command::new(env!("CARGO_BIN_EXE_command-api"))
        .arg("serve")
        .env("ORDERPIPE_DATABASE__URL", &app.database.url)
        .env("ORDERPIPE_AUTH__JWKS_URL", app.keys.jwks_url())
        .env("ORDERPIPE_GRPC__PORT", "0")
        .env("ORDERPIPE_ADMIN__PORT", "0")
        .env("ORDERPIPE_LOG__FORMAT", "json")
        .env("ORDERPIPE_LOG__FILTER", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let stderr = server.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
    }
    drop(lines_tx);
    let mut lines = Vec::new();
    let address = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs its address");
        lines.push(line.clone());
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(grpc) = json.pointer("/fields/grpc").and_then(|v| v.as_str()) {
                break grpc.to_owned();
            }
        }
    };
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let valid = app.token(Role::Customer, CUSTOMER);
    let service = app.token(Role::Service, "svc");
    let mut tampered = valid.clone();
    tampered.push('x');
    for token in [&valid, &service, &tampered] {
        let mut request = Request::new(place_order(
            &new_order_id(),
            &new_order_id(),
            CUSTOMER,
            &[("NOPE-1", 1)],
        ));
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        let _ = OrderServiceClient::new(channel.clone())
            .place_order(request)
            .await;
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();
    lines.extend(lines_rx.iter());

    assert!(
        lines.len() > 3,
        "the server logged its requests: {lines:#?}"
    );
    let signatures: Vec<&str> = [&valid, &service, &tampered]
        .iter()
        .map(|t| t.rsplit('.').next().unwrap())
        .collect();
    for line in &lines {
        for (token, signature) in [&valid, &service, &tampered].iter().zip(&signatures) {
            assert!(
                !line.contains(token.as_str()),
                "a token is in a log line: {line}"
            );
            assert!(
                !line.contains(signature),
                "a token signature is in a log line: {line}"
            );
        }
        assert!(
            !line.to_lowercase().contains("bearer "),
            "an authorization header is in a log line: {line}"
        );
    }
    app.stop().await;
}
