//! The saga never leaks a stock reservation: whatever ends an order without committing its stock
//! (a cancellation, a rejection by hand, a declined payment) releases what the saga reserved,
//! even when the saga was interrupted between reserving and accepting.

use std::sync::Arc;
use std::time::Duration;

use flows::payments::TestCard;
use proto::v1 as pb;
use tonic::Code;

use crate::flows::{events_about, order, stock, Rig};
use crate::support::{eventually, Pipeline, STORE};
use crate::workload::{open_the_store, Clients};

/// Makes the event store's database refuse every `OrderAccepted` write with a transient error
/// (SQLSTATE 57P03, "cannot connect now"), as a database failing over would: the command API
/// answers UNAVAILABLE, so the saga's step stops after its reservation and is retried later.
/// Each refusal advances the sequence `refused_accepts` (sequences are not rolled back), so the
/// test can see that the saga was interrupted there.
async fn refuse_acceptances(pipeline: &Pipeline) {
    for statement in [
        "CREATE SEQUENCE refused_accepts",
        "CREATE FUNCTION refuse_accepts() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF NEW.event_type = 'OrderAccepted' THEN \
             PERFORM nextval('refused_accepts'); \
             RAISE EXCEPTION 'the test refuses acceptances' USING ERRCODE = '57P03'; \
           END IF; \
           RETURN NEW; \
         END $$",
        "CREATE TRIGGER refuse_accepts BEFORE INSERT ON events \
         FOR EACH ROW EXECUTE FUNCTION refuse_accepts()",
    ] {
        sqlx::query(statement)
            .execute(&pipeline.events_db.pool)
            .await
            .unwrap();
    }
}

async fn accept_again(pipeline: &Pipeline) {
    sqlx::query("DROP TRIGGER refuse_accepts ON events")
        .execute(&pipeline.events_db.pool)
        .await
        .unwrap();
}

async fn refused_acceptances(pipeline: &Pipeline) -> i64 {
    sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refused_accepts")
        .fetch_one(&pipeline.events_db.pool)
        .await
        .unwrap()
}

/// How the order ends while the saga is stuck between reserving and accepting.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The customer (here the barista) cancels it.
    Cancelled,
    /// A service rejects it by hand.
    Rejected,
}

/// Whether the saga's worker dies while its step is stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    /// Killed there; a successor resumes from the checkpoint.
    Killed,
    /// Keeps retrying: the order's end races its acceptance.
    Racing,
}

/// Places an order, lets the saga reserve its stock and fail to accept it, kills the worker
/// there (or not, as `worker` says), ends the order as `ending` says, lets the database accept
/// again, starts another worker if the first was killed, and checks that the reservation is
/// released once: `reserved` back to 0.
async fn an_interrupted_reservation_is_released_when_the_order_ends(
    ending: Ending,
    worker: Worker,
) {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    refuse_acceptances(&pipeline).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let order_id = uuid::Uuid::new_v4().to_string();
    clients
        .saga
        .place_order(pb::PlaceOrderRequest {
            idempotency_key: format!("place-{order_id}"),
            order_id: order_id.clone(),
            store_id: STORE.into(),
            customer_id: "c-leak".into(),
            lines: vec![pb::OrderLine {
                sku: "LATTE-12".into(),
                quantity: 2,
                customisations: vec![],
            }],
            note: String::new(),
            payment_token: TestCard::Approve.token().into(),
        })
        .await
        .unwrap();
    eventually("the stock reserved and the acceptance refused", || async {
        events_about(&pipeline, "StockReserved", &order_id).await == 1
            && refused_acceptances(&pipeline).await >= 1
    })
    .await;
    assert_eq!(
        stock(&mut clients).await,
        [("CROISSANT".into(), 20, 0), ("LATTE-12".into(), 20, 2)]
    );
    let racing = match worker {
        // The worker dies while its step is stuck between the reservation and the acceptance.
        Worker::Killed => {
            flows.abort();
            let _ = flows.await;
            None
        }
        Worker::Racing => Some(flows),
    };

    // The order ends while it is still Placed: its event says no stock was reserved for it,
    // because the order never got as far as Accepted.
    loop {
        let ended = match ending {
            Ending::Cancelled => {
                clients
                    .barista
                    .cancel_order(pb::CancelOrderRequest {
                        idempotency_key: format!("cancel-{order_id}"),
                        order_id: order_id.clone(),
                        reason: "the customer left".into(),
                    })
                    .await
            }
            Ending::Rejected => {
                clients
                    .saga
                    .reject_order(pb::RejectOrderRequest {
                        idempotency_key: format!("reject-{order_id}"),
                        order_id: order_id.clone(),
                        reason: pb::RejectionReason::Other as i32,
                        detail: "the espresso machine broke".into(),
                    })
                    .await
            }
        };
        match ended {
            Ok(_) => break,
            // A group commit shared with a refused acceptance would fail as a whole; the same
            // key is safe to send again.
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => panic!("the order could not be ended: {status:?}"),
        }
    }
    accept_again(&pipeline).await;
    let flows = match racing {
        // Its next try finds the order ended: the acceptance is refused, or the step sees the
        // order ended before it gets there; either way it releases.
        Some(flows) => flows,
        // Its successor takes the lease over and resumes from the checkpoint: the order's
        // placement first, then its end.
        None => rig.spawn("flows-2", Arc::new(rig.sandbox.clone())).await,
    };

    eventually("the reservation released", || {
        let mut clients = Clients::new(&pipeline);
        async move {
            stock(&mut clients).await == [("CROISSANT".into(), 20, 0), ("LATTE-12".into(), 20, 0)]
        }
    })
    .await;
    let expected = match ending {
        Ending::Cancelled => pb::OrderStatus::Cancelled,
        Ending::Rejected => pb::OrderStatus::Rejected,
    };
    assert_eq!(
        order(&mut clients, &order_id).await.unwrap().status(),
        expected
    );
    // Every commit handled (the order's end too, whose release finds nothing left): released
    // once, never accepted, nothing charged.
    pipeline.wait_published().await;
    pipeline
        .wait_groups_caught_up(
            &rig.settings.dynamodb.leases_table,
            flows::app::LOG_GROUPS.len(),
        )
        .await;
    assert_eq!(
        events_about(&pipeline, "ReservationReleased", &order_id).await,
        1
    );
    assert_eq!(events_about(&pipeline, "OrderAccepted", &order_id).await, 0);
    assert!(rig.sandbox.ledger().is_empty(), "nothing charged");
    assert_eq!(
        stock(&mut clients).await,
        [("CROISSANT".into(), 20, 0), ("LATTE-12".into(), 20, 0)]
    );
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn a_reservation_interrupted_before_acceptance_is_released_when_the_order_is_cancelled() {
    an_interrupted_reservation_is_released_when_the_order_ends(Ending::Cancelled, Worker::Killed)
        .await;
}

#[tokio::test]
async fn a_reservation_interrupted_before_acceptance_is_released_when_the_order_is_rejected() {
    an_interrupted_reservation_is_released_when_the_order_ends(Ending::Rejected, Worker::Killed)
        .await;
}

#[tokio::test]
async fn a_cancellation_racing_the_acceptance_releases_the_reservation_once() {
    an_interrupted_reservation_is_released_when_the_order_ends(Ending::Cancelled, Worker::Racing)
        .await;
}
