//! ListOrders and ListLoyaltyTransactions: answered from the history view (built here by the
//! same projection the projectors run, through replay's rebuild), newest first, filtered,
//! paginated with opaque tokens, scoped to the caller, each page with the view's freshness.

use std::collections::HashSet;

use command_api::auth::Role;
use proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{new_order_id, place_order, spawn_app, transition, TestApp, STORE};

const ALICE: &str = "alice";
const BOB: &str = "bob";

fn by_customer(customer: &str, page_size: u32, page_token: &str) -> pb::ListOrdersRequest {
    pb::ListOrdersRequest {
        owner: Some(pb::list_orders_request::Owner::CustomerId(customer.into())),
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    }
}

fn by_store(store: &str) -> pb::ListOrdersRequest {
    pb::ListOrdersRequest {
        owner: Some(pb::list_orders_request::Owner::StoreId(store.into())),
        ..Default::default()
    }
}

/// Places `count` orders for `customer` at `store`, one after the other; their ids in placing
/// order.
async fn place(app: &TestApp, customer: &str, store: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let id = new_order_id();
        let mut request = place_order(&id, &id, customer, &[("LATTE-12", 1), ("CROISSANT", 2)]);
        request.store_id = store.into();
        app.orders(Role::Customer, customer)
            .place_order(request)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Every page of `request` as `role`/`subject`, following next_page_token to the end.
async fn all_pages(
    app: &TestApp,
    role: Role,
    subject: &str,
    mut request: pb::ListOrdersRequest,
) -> (Vec<Vec<String>>, Vec<pb::OrderSummary>) {
    let mut pages = Vec::new();
    let mut orders = Vec::new();
    loop {
        let page = app
            .history(role, subject)
            .list_orders(request.clone())
            .await
            .unwrap()
            .into_inner();
        pages.push(page.orders.iter().map(|o| o.order_id.clone()).collect());
        orders.extend(page.orders);
        if page.next_page_token.is_empty() {
            return (pages, orders);
        }
        request.page_token = page.next_page_token;
    }
}

fn field_violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_customers_orders_come_newest_first_in_pages_with_no_duplicate_or_miss() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    let alices = place(&app, ALICE, STORE, 7).await;
    place(&app, BOB, STORE, 2).await;
    app.project_history().await;

    let request = by_customer(ALICE, 3, "");
    let (pages, orders) = all_pages(&app, Role::Customer, ALICE, request).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1], "7 orders in pages of 3: {pages:?}");
    let listed: Vec<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    let newest_first: Vec<String> = alices.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first, "every order once, newest first");
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 7);
    let placed: Vec<_> = orders.iter().map(|o| o.placed_at.unwrap()).collect();
    assert!(
        placed
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)),
        "placed_at descending: {placed:?}"
    );
    let first = &orders[0];
    assert_eq!(
        (first.customer_id.as_str(), first.store_id.as_str()),
        (ALICE, STORE)
    );
    assert_eq!(first.status, pb::OrderStatus::Placed as i32);
    assert_eq!(first.total.as_ref().unwrap().cents, 450 + 2 * 325);
    let skus: Vec<_> = first.lines.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["LATTE-12", "CROISSANT"]);
    assert_eq!(first.lines[0].customisations, ["oat milk"]);

    // Larger than the bound: served, at most 100 per page.
    let page = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 1_000_000, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.orders.len(), 7);
    assert!(page.next_page_token.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn status_and_time_filters_select_the_matching_orders_across_pages() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    let ids = place(&app, ALICE, STORE, 6).await;
    let mut barista = app.orders(Role::Barista, "barista-1");
    for id in &ids[..2] {
        barista
            .accept_order(transition(&format!("accept-{id}"), id))
            .await
            .unwrap();
    }
    app.orders(Role::Customer, ALICE)
        .cancel_order(pb::CancelOrderRequest {
            idempotency_key: format!("cancel-{}", ids[5]),
            order_id: ids[5].clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    app.project_history().await;

    let with_statuses = |statuses: &[pb::OrderStatus]| pb::ListOrdersRequest {
        statuses: statuses.iter().map(|s| *s as i32).collect(),
        ..by_customer(ALICE, 1, "")
    };
    let (_, accepted) = all_pages(
        &app,
        Role::Customer,
        ALICE,
        with_statuses(&[pb::OrderStatus::Accepted]),
    )
    .await;
    let accepted: Vec<_> = accepted.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(accepted, [ids[1].clone(), ids[0].clone()]);
    let (_, open_or_cancelled) = all_pages(
        &app,
        Role::Customer,
        ALICE,
        with_statuses(&[pb::OrderStatus::Placed, pb::OrderStatus::Cancelled]),
    )
    .await;
    let open_or_cancelled: Vec<_> = open_or_cancelled
        .iter()
        .map(|o| o.order_id.clone())
        .collect();
    assert_eq!(
        open_or_cancelled,
        [&ids[5], &ids[4], &ids[3], &ids[2]].map(String::clone)
    );
    let (_, cancelled) = all_pages(
        &app,
        Role::Customer,
        ALICE,
        with_statuses(&[pb::OrderStatus::Cancelled]),
    )
    .await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].end_reason, "changed my mind");
    assert!(cancelled[0].ended_at.is_some());

    // [placed_at of the 2nd, placed_at of the 5th): the 2nd, 3rd and 4th orders.
    let (_, everything) = all_pages(&app, Role::Customer, ALICE, by_customer(ALICE, 0, "")).await;
    let placed_at = |id: &String| {
        everything
            .iter()
            .find(|o| &o.order_id == id)
            .unwrap()
            .placed_at
    };
    let request = pb::ListOrdersRequest {
        placed_from: placed_at(&ids[1]),
        placed_before: placed_at(&ids[4]),
        ..by_customer(ALICE, 2, "")
    };
    let (pages, in_range) = all_pages(&app, Role::Customer, ALICE, request).await;
    let in_range: Vec<_> = in_range.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(
        in_range,
        [&ids[3], &ids[2], &ids[1]].map(String::clone),
        "pages: {pages:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn customers_see_only_their_own_orders_and_staff_only_their_stores() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    let alices = place(&app, ALICE, STORE, 2).await;
    let bobs = place(&app, BOB, STORE, 1).await;
    let elsewhere = place(&app, BOB, "s2", 1).await;
    app.project_history().await;

    for (role, subject, request, what) in [
        (
            Role::Customer,
            BOB,
            by_customer(ALICE, 0, ""),
            "bob lists alice's orders",
        ),
        (
            Role::Customer,
            ALICE,
            by_store(STORE),
            "a customer lists a store",
        ),
        (
            Role::Barista,
            "b-1",
            by_store("s2"),
            "a barista of s1 lists s2",
        ),
        (
            Role::StoreManager,
            "m-1",
            by_store("s2"),
            "a manager of s1 lists s2",
        ),
        (
            Role::Barista,
            "b-1",
            by_customer(ALICE, 0, ""),
            "staff list a customer across stores",
        ),
    ] {
        let status = app
            .history(role, subject)
            .list_orders(request)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    }

    let ids = |orders: Vec<pb::OrderSummary>| -> HashSet<String> {
        orders.into_iter().map(|o| o.order_id).collect()
    };
    let (_, store_orders) = all_pages(&app, Role::Barista, "b-1", by_store(STORE)).await;
    let expected: HashSet<String> = alices.iter().chain(&bobs).cloned().collect();
    assert_eq!(ids(store_orders), expected, "s1's orders, not s2's");
    let (_, bob_everywhere) =
        all_pages(&app, Role::Service, "support", by_customer(BOB, 0, "")).await;
    let expected: HashSet<String> = bobs.iter().chain(&elsewhere).cloned().collect();
    assert_eq!(
        ids(bob_everywhere),
        expected,
        "a service sees a customer's orders in every store"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_page_tokens_time_ranges_and_filters_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    place(&app, ALICE, STORE, 3).await;

    // Before the view exists (a fresh deployment, a dropped schema): retryable, not an error
    // of the caller's.
    let status = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    app.project_history().await;
    let events_before = app.event_count().await;
    let page = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 1, ""))
        .await
        .unwrap()
        .into_inner();
    let token = page.next_page_token;
    assert!(!token.is_empty());
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();

    let hour = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let cases: Vec<(pb::ListOrdersRequest, &str, &str)> = vec![
        (
            by_customer(ALICE, 1, "garbage!"),
            "page_token",
            "a made-up token",
        ),
        (
            by_customer(ALICE, 1, &altered),
            "page_token",
            "a token with one character changed",
        ),
        (
            by_customer(ALICE, 1, &"ab".repeat(200)),
            "page_token",
            "a token too long to be ours",
        ),
        (
            pb::ListOrdersRequest {
                statuses: vec![pb::OrderStatus::Placed as i32],
                ..by_customer(ALICE, 1, &token)
            },
            "page_token",
            "a token of the same list with another filter",
        ),
        (
            pb::ListOrdersRequest {
                placed_from: hour(1_800_000_000),
                placed_before: hour(1_700_000_000),
                ..by_customer(ALICE, 1, "")
            },
            "placed_before",
            "a range that ends before it starts",
        ),
        (
            pb::ListOrdersRequest {
                placed_from: hour(1_700_000_000),
                placed_before: hour(1_700_000_000),
                ..by_customer(ALICE, 1, "")
            },
            "placed_before",
            "an empty range",
        ),
        (
            pb::ListOrdersRequest {
                placed_from: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..by_customer(ALICE, 1, "")
            },
            "placed_from",
            "a timestamp with negative nanos",
        ),
        (
            pb::ListOrdersRequest {
                statuses: vec![0],
                ..by_customer(ALICE, 1, "")
            },
            "statuses[0]",
            "an unspecified status",
        ),
        (
            pb::ListOrdersRequest {
                statuses: vec![pb::OrderStatus::Ready as i32, 42],
                ..by_customer(ALICE, 1, "")
            },
            "statuses[1]",
            "an unknown status",
        ),
        (
            pb::ListOrdersRequest::default(),
            "owner",
            "neither customer nor store",
        ),
        (
            by_customer("not a customer id!", 1, ""),
            "customer_id",
            "a malformed customer id",
        ),
    ];
    for (request, field, what) in cases {
        let status = app
            .history(Role::Service, "support")
            .list_orders(request)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(field_violations(&status), [field], "{what}: {status:?}");
    }
    // A loyalty token is not an orders token, and the other way round.
    let status = app
        .history(Role::Customer, ALICE)
        .list_loyalty_transactions(pb::ListLoyaltyTransactionsRequest {
            customer_id: ALICE.into(),
            page_size: 1,
            page_token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(field_violations(&status), ["page_token"]);

    // The good token still works, and nothing was written anywhere.
    let next = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 1, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.orders.len(), 1);
    assert_ne!(next.orders[0].order_id, page.orders[0].order_id);
    assert_eq!(app.event_count().await, events_before);
    app.stop().await;
}

#[tokio::test]
async fn every_page_says_how_far_behind_the_log_the_view_is() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    place(&app, ALICE, STORE, 1).await;
    app.project_history().await;
    let newest_tracked: i64 = sqlx::query_scalar(
        "SELECT max(global_position) FROM events \
         WHERE aggregate_type IN ('order', 'inventory', 'loyalty')",
    )
    .fetch_one(&app.database.pool)
    .await
    .unwrap();
    let freshness = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 0, ""))
        .await
        .unwrap()
        .into_inner()
        .freshness
        .expect("freshness on every page");
    assert_eq!(freshness.last_applied_position, newest_tracked as u64);
    let committed = freshness.last_applied_committed_at.unwrap();
    let read = freshness.read_at.unwrap();
    let lag_ms = (read.seconds - committed.seconds) * 1000
        + i64::from(read.nanos - committed.nanos) / 1_000_000;
    assert!(
        (lag_ms - freshness.lag_ms as i64).abs() <= 1,
        "lag_ms is read_at - committed_at: {freshness:?}"
    );

    // Commands the view has not applied yet: the same freshness, and the order not listed.
    place(&app, ALICE, STORE, 1).await;
    let page = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.orders.len(), 1, "the view trails the store");
    let stale = page.freshness.unwrap();
    assert_eq!(stale.last_applied_position, newest_tracked as u64);
    app.project_history().await;
    let caught_up = app
        .history(Role::Customer, ALICE)
        .list_orders(by_customer(ALICE, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caught_up.orders.len(), 2);
    assert!(caught_up.freshness.unwrap().last_applied_position > newest_tracked as u64);
    app.stop().await;
}

#[tokio::test]
async fn a_customers_loyalty_ledger_lists_earned_redeemed_and_tier_changes_newest_first() {
    let app = spawn_app().await;
    let mut loyalty = app.loyalty(Role::Service, "saga");
    let earn = |key: &str, cents: i64| pb::EarnPointsRequest {
        idempotency_key: key.into(),
        customer_id: ALICE.into(),
        order_id: new_order_id(),
        amount: Some(pb::Money { cents }),
    };
    // $100 at Bronze: 1,000 points, which reaches Silver.
    loyalty.earn_points(earn("earn-1", 10_000)).await.unwrap();
    app.loyalty(Role::Customer, ALICE)
        .redeem_points(pb::RedeemPointsRequest {
            idempotency_key: "redeem-1".into(),
            customer_id: ALICE.into(),
            points: 50,
            reference: "free-cookie".into(),
        })
        .await
        .unwrap();
    // $10 at Silver (1.25x): 125 points.
    loyalty.earn_points(earn("earn-2", 1_000)).await.unwrap();
    app.project_history().await;

    let mut transactions = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = app
            .history(Role::Customer, ALICE)
            .list_loyalty_transactions(pb::ListLoyaltyTransactionsRequest {
                customer_id: ALICE.into(),
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.freshness.unwrap().last_applied_position > 0);
        pages += 1;
        transactions.extend(page.transactions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 2, "4 entries in pages of 3");
    use pb::LoyaltyTier::{Bronze, Silver};
    use pb::LoyaltyTransactionKind::{Earned, Redeemed, TierChanged};
    let seen: Vec<(u64, i32, i64, i32)> = transactions
        .iter()
        .map(|t| (t.sequence, t.kind, t.points, t.tier))
        .collect();
    assert_eq!(
        seen,
        [
            (4, Earned as i32, 125, Silver as i32),
            (3, Redeemed as i32, -50, 0),
            (2, TierChanged as i32, 0, Silver as i32),
            (1, Earned as i32, 1_000, Bronze as i32),
        ]
    );
    assert_eq!(transactions[1].reference, "free-cookie");
    assert_eq!(transactions[3].amount.as_ref().unwrap().cents, 10_000);
    assert!(!transactions[3].order_id.is_empty());

    for (role, subject) in [(Role::Customer, BOB), (Role::Barista, "b-1")] {
        let status = app
            .history(role, subject)
            .list_loyalty_transactions(pb::ListLoyaltyTransactionsRequest {
                customer_id: ALICE.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}: {status:?}");
    }
    app.stop().await;
}
