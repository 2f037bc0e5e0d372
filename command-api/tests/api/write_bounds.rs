//! One caller's bad input or one stalled process never fails or stalls anyone else's command:
//! the group commit's bounds as a client sees them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_api::auth::Role;
use proto::v1::order_service_client::OrderServiceClient;
use sqlx::{Connection, PgConnection};
use test_support::{fresh_database, TestDatabase};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::helpers::{http_get, new_order_id, place_order, spawn_app_with, Options};

/// A connection of the test's own holding the position counter: another writer stalled in the
/// middle of its batch.
async fn hold_position_counter(database: &TestDatabase) -> PgConnection {
    let mut holder = PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT last_position FROM event_position FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

#[tokio::test]
async fn a_nul_in_a_note_fails_only_its_own_commit() {
    let app = spawn_app_with(Options::default()).await;
    app.seed_menu_and_stock(10).await;
    let before = app.event_count().await;

    // Twenty orders at once, so they share group commits; one has a NUL in its note, which
    // PostgreSQL's jsonb cannot store.
    let mut calls = Vec::new();
    for n in 0..20 {
        let mut customer = app.orders(Role::Customer, "c-1");
        let mut request = place_order(
            &format!("nul-{n}"),
            &new_order_id(),
            "c-1",
            &[("LATTE-12", 1)],
        );
        if n == 7 {
            request.note = "extra hot\u{0}".into();
        }
        calls.push(tokio::spawn(async move {
            (n, customer.place_order(request).await)
        }));
    }
    for call in calls {
        let (n, outcome) = call.await.unwrap();
        if n == 7 {
            let status = outcome.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            let fields: Vec<String> = status
                .get_details_bad_request()
                .unwrap()
                .field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect();
            assert_eq!(fields, ["note"]);
        } else {
            assert!(outcome.is_ok(), "order {n}: {outcome:?}");
        }
    }
    assert_eq!(app.event_count().await, before + 19);
    app.stop().await;
}

#[tokio::test]
async fn a_command_that_runs_out_of_its_client_deadline_answers_deadline_exceeded_and_commits_nothing_later(
) {
    let app = spawn_app_with(Options::default()).await;
    app.seed_menu_and_stock(10).await;
    let before = app.event_count().await;
    let mut customer = app.orders(Role::Customer, "c-1");
    let order = place_order("late", &new_order_id(), "c-1", &[("LATTE-12", 1)]);

    // The writer cannot get the counter; the client's own deadline (grpc-timeout) runs out.
    let holder = hold_position_counter(&app.database).await;
    let mut request = Request::new(order.clone());
    request.set_timeout(Duration::from_millis(400));
    let status = customer.place_order(request).await.unwrap_err();
    // The server answers DEADLINE_EXCEEDED at the deadline; tonic's client enforces the same
    // deadline itself and usually gets there first with its own CANCELLED "Timeout expired"
    // (the server's answer is checked without a client deadline in the next test).
    let client_gave_up = status.code() == Code::Cancelled && status.message() == "Timeout expired";
    assert!(
        status.code() == Code::DeadlineExceeded || client_gave_up,
        "{status:?}"
    );

    // Once the counter is free, the command the client was told ran out of time stays unwritten.
    holder.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.event_count().await, before, "nothing committed late");

    // The retry with the same key runs it, once.
    let placed = customer
        .place_order(order.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!placed.commit.unwrap().replayed);
    let replayed = customer.place_order(order).await.unwrap().into_inner();
    assert!(replayed.commit.unwrap().replayed);
    app.stop().await;
}

#[tokio::test]
async fn a_command_that_runs_out_of_the_server_limit_answers_deadline_exceeded_not_cancelled() {
    let app = spawn_app_with(Options {
        request_timeout_ms: Some(1_000),
        ..Options::default()
    })
    .await;
    app.seed_menu_and_stock(10).await;
    let before = app.event_count().await;
    let mut customer = app.orders(Role::Customer, "c-1");
    let order = place_order("server-limit", &new_order_id(), "c-1", &[("LATTE-12", 1)]);

    let holder = hold_position_counter(&app.database).await;
    let status = customer.place_order(order.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    holder.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.event_count().await, before, "nothing committed late");

    customer.place_order(order).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_writer_blocked_on_the_position_counter_answers_unavailable_and_health_says_so() {
    let app = spawn_app_with(Options::default()).await;
    app.seed_menu_and_stock(10).await;
    let before = app.event_count().await;
    let mut customer = app.orders(Role::Customer, "c-1");
    let order = place_order("blocked", &new_order_id(), "c-1", &[("LATTE-12", 1)]);

    let holder = hold_position_counter(&app.database).await;
    let blocked = {
        let mut customer = customer.clone();
        let order = order.clone();
        tokio::spawn(async move { customer.place_order(order).await })
    };
    // While the batch waits for the counter (lock_timeout 2 s), /health turns 503 after
    // stuck_after (1 s): `SELECT 1` alone would still answer.
    let mut health_while_blocked = 200;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = http_get(app.admin_address, "/health").await;
        if status == 503 {
            assert!(body.contains("writer"), "{body}");
            health_while_blocked = status;
            break;
        }
    }
    assert_eq!(
        health_while_blocked, 503,
        "/health reports the stuck writer"
    );

    let status = blocked.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");
    assert_eq!(
        app.event_count().await,
        before,
        "UNAVAILABLE: nothing committed"
    );
    let (status, _) = http_get(app.admin_address, "/health").await;
    assert_eq!(
        status, 503,
        "the failed batch is reported until one succeeds"
    );

    holder.close().await.unwrap();
    customer.place_order(order).await.unwrap();
    let (status, _) = http_get(app.admin_address, "/health").await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// A real `command-api serve` process on `database` (verifying tokens with the JWKS at
/// `jwks_url`), its `pg_stat_activity` name, gRPC address.
struct Spawned {
    child: Child,
    application_name: String,
    grpc_address: SocketAddr,
}

impl Spawned {
    fn start(database: &TestDatabase, jwks_url: &str) -> Self {
        let application_name = format!("paused-{}", uuid::Uuid::new_v4().simple());
        let mut child = Command::new(env!("CARGO_BIN_EXE_command-api"))
            .arg("serve")
            .env_remove("ORDERPIPE_CONFIG")
            .env("ORDERPIPE_DATABASE__URL", &database.url)
            .env(
                "ORDERPIPE_DATABASE__SESSION__APPLICATION_NAME",
                &application_name,
            )
            .env("ORDERPIPE_AUTH__JWKS_URL", jwks_url)
            .env("ORDERPIPE_GRPC__PORT", "0")
            .env("ORDERPIPE_ADMIN__PORT", "0")
            .env("ORDERPIPE_LOG__FORMAT", "json")
            .env("ORDERPIPE_LOG__FILTER", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("command-api starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        // Reads the bound address from the start-up line, then keeps draining the log so the
        // process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(grpc) = entry["fields"]["grpc"].as_str() {
                    let _ = address_tx.send(grpc.to_owned());
                }
            }
        });
        let grpc_address = address_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("command-api logs its address")
            .parse()
            .unwrap();
        Self {
            child,
            application_name,
            grpc_address,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_paused_instance_holding_the_counter_delays_the_other_by_a_bounded_time_and_never_commits_late(
) {
    let database = fresh_database().await;
    let app = spawn_app_with(Options {
        database: Some(database.clone()),
        ..Options::default()
    })
    .await;
    app.seed_menu_and_stock(10).await;
    let paused = Spawned::start(&database, &app.keys.jwks_url());
    let token = app.token(Role::Customer, "c-1");
    let channel = Channel::from_shared(format!("http://{}", paused.grpc_address))
        .unwrap()
        .connect_lazy();
    let client_of_paused = OrderServiceClient::with_interceptor(channel, app.bearer(Some(&token)));

    // Steady load on the instance to be paused, so it is inside a batch most of the time.
    let stop_load = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..6 {
        let mut client: OrderServiceClient<_> = client_of_paused.clone();
        let stop_load = stop_load.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop_load.load(Ordering::Relaxed) {
                let mut request = Request::new(place_order(
                    &format!("pausedb-{task}-{n}"),
                    &new_order_id(),
                    "c-1",
                    &[("LATTE-12", 1)],
                ));
                request.set_timeout(Duration::from_secs(1));
                let _ = client.place_order(request).await;
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGSTOP it at a moment it holds the counter: one of its sessions is idle in a transaction
    // that has locked the counter's table (every transaction it opens is a batch; between its
    // `BEGIN` and its `append_commits` call a batch is idle in a transaction without the lock).
    let holds_counter = || async {
        let idle_in_transaction: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity a
             WHERE a.application_name = $1 AND a.state = 'idle in transaction'
               AND EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.pid = a.pid AND l.granted
                             AND l.relation = 'event_position'::regclass)",
        )
        .bind(&paused.application_name)
        .fetch_one(&database.pool)
        .await
        .unwrap();
        idle_in_transaction > 0
    };
    let mut holding = false;
    for _ in 0..100 {
        paused.signal("STOP");
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if holds_counter().await {
                holding = true;
                break;
            }
        }
        if holding {
            break;
        }
        paused.signal("CONT");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(holding, "never caught the instance holding the counter");
    let paused_at = Instant::now();
    stop_load.store(true, Ordering::Relaxed);

    // The other instance commits: PostgreSQL ends the paused session after its
    // idle_in_transaction_timeout (1 s), then the waiting batch gets the counter. The client's
    // deadline is that bound plus a lock wait's worth of slack for a loaded test machine.
    let mut customer = app.orders(Role::Customer, "c-2");
    let order = place_order("other-instance", &new_order_id(), "c-2", &[("LATTE-12", 1)]);
    let mut request = Request::new(order);
    request.set_timeout(Duration::from_secs(3));
    let placed = customer.place_order(request).await;
    let waited = paused_at.elapsed();
    assert!(placed.is_ok(), "after {waited:?}: {placed:?}");
    eprintln!("the other instance committed {waited:?} after the pause");

    // Stay paused past every deadline the paused instance's callers had (1 s), then resume.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(paused_at.elapsed())).await;
    let resumed_at: time::OffsetDateTime = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    paused.signal("CONT");
    for task in load {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Nothing its callers had given up on was committed after it resumed.
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM command_idempotency
         WHERE idempotency_key LIKE '%pausedb-%' AND committed_at > $1",
    )
    .bind(resumed_at)
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(late, 0, "commits written after the paused instance resumed");

    // And the resumed instance works again (its ended session was not reused).
    let mut client = client_of_paused.clone();
    let mut request = Request::new(place_order(
        "after-resume",
        &new_order_id(),
        "c-1",
        &[("LATTE-12", 1)],
    ));
    request.set_timeout(Duration::from_secs(5));
    client.place_order(request).await.unwrap();
    app.stop().await;
}
