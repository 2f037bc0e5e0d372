//! SubscribeCommits: the store's log from a position, then live, resumable from any position
//! it sent, filtered by aggregate type; a subscriber that falls behind is told so.

use std::time::Duration;

use auth_tokens::client::AuthedChannel;
use command_api::auth::Role;
use command_api::commit_feed::FEED_CAPACITY;
use futures::StreamExt;
use proto::v1 as pb;
use proto::v1::subscribe_commits_response::Item;
use proto::v1::subscription_service_client::SubscriptionServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::helpers::{new_order_id, place_order, spawn_app, TestApp};

const NEXT_MESSAGE: Duration = Duration::from_secs(10);

fn subscriptions(app: &TestApp, role: Role) -> SubscriptionServiceClient<AuthedChannel> {
    SubscriptionServiceClient::with_interceptor(
        app.channel(),
        app.bearer(Some(&app.token(role, "subscriber"))),
    )
}

async fn subscribe(
    app: &TestApp,
    from_position: u64,
    aggregate_types: &[&str],
) -> Result<Streaming<pb::SubscribeCommitsResponse>, tonic::Status> {
    subscriptions(app, Role::Service)
        .subscribe_commits(pb::SubscribeCommitsRequest {
            from_position,
            aggregate_types: aggregate_types.iter().map(|t| (*t).to_owned()).collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn next(stream: &mut Streaming<pb::SubscribeCommitsResponse>) -> Item {
    tokio::time::timeout(NEXT_MESSAGE, stream.message())
        .await
        .expect("the stream sent nothing for 10 s")
        .expect("the stream goes on")
        .expect("a message")
        .item
        .expect("an item")
}

/// The events up to the `caught_up` checkpoint, and the checkpoint's position.
async fn until_caught_up(
    stream: &mut Streaming<pb::SubscribeCommitsResponse>,
) -> (Vec<pb::CommittedEvent>, u64) {
    let mut events = Vec::new();
    loop {
        match next(stream).await {
            Item::Event(event) => events.push(event),
            Item::CaughtUp(checkpoint) => return (events, checkpoint.position),
        }
    }
}

async fn next_event(stream: &mut Streaming<pb::SubscribeCommitsResponse>) -> pb::CommittedEvent {
    match next(stream).await {
        Item::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn place(app: &TestApp) -> String {
    let order_id = new_order_id();
    app.orders(Role::Customer, "c-1")
        .place_order(place_order(&order_id, &order_id, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();
    order_id
}

fn positions(events: &[pb::CommittedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.position).collect()
}

#[tokio::test]
async fn catch_up_from_the_store_then_live_then_resume_from_any_position() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    place(&app).await;
    let stored = app.event_count().await as u64;

    let mut stream = subscribe(&app, 0, &[]).await.unwrap();
    let (caught_up, checkpoint) = until_caught_up(&mut stream).await;
    assert_eq!(positions(&caught_up), (1..=stored).collect::<Vec<_>>());
    assert_eq!(checkpoint, stored);
    let placed = caught_up.last().unwrap();
    assert_eq!(
        (placed.aggregate_type.as_str(), placed.event_type.as_str()),
        ("order", "OrderPlaced")
    );
    let payload: serde_json::Value = serde_json::from_slice(&placed.payload_json).unwrap();
    assert!(payload["OrderPlaced"]["total"].is_number(), "{payload}");

    // Live: a commit after the catch-up arrives with the next position.
    let live_order = place(&app).await;
    let live = next_event(&mut stream).await;
    assert_eq!(
        (live.position, live.aggregate_id.as_str(), live.sequence),
        (stored + 1, live_order.as_str(), 1)
    );
    drop(stream);

    // Resume from a position in the middle: exactly the events after it, then caught up.
    let mut stream = subscribe(&app, 3, &[]).await.unwrap();
    let (resumed, checkpoint) = until_caught_up(&mut stream).await;
    assert_eq!(positions(&resumed), (4..=stored + 1).collect::<Vec<_>>());
    assert_eq!(checkpoint, stored + 1);
    let mut all = caught_up;
    all.push(live);
    assert_eq!(resumed, all[3..], "the same events, byte for byte");
    app.stop().await;
}

#[tokio::test]
async fn the_aggregate_type_filter_sends_only_those_types() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut stream = subscribe(&app, 0, &["order"]).await.unwrap();
    let (events, checkpoint) = until_caught_up(&mut stream).await;
    assert!(events.is_empty(), "no order yet: {events:?}");
    assert_eq!(
        checkpoint,
        app.event_count().await as u64,
        "but every position was read"
    );

    let order_id = place(&app).await;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.aggregate_type.as_str(), event.aggregate_id.as_str()),
        ("order", order_id.as_str())
    );

    let mut stream = subscribe(&app, 0, &["menu", "inventory"]).await.unwrap();
    let (events, _) = until_caught_up(&mut stream).await;
    let types: std::collections::BTreeSet<_> = events
        .iter()
        .map(|event| event.aggregate_type.as_str())
        .collect();
    assert_eq!(types, ["inventory", "menu"].into_iter().collect());
    app.stop().await;
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    let refused = subscribe(&app, 0, &["order", "orders"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("aggregate_types[1]"),
        "{refused:?}"
    );
    let refused = subscribe(&app, u64::MAX, &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("from_position"), "{refused:?}");
    for role in [Role::Customer, Role::Barista, Role::StoreManager] {
        let refused = subscriptions(&app, role)
            .subscribe_commits(pb::SubscribeCommitsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_where_to_resume_and_writers_go_on() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    // A client that buffers little (HTTP/2's initial 64 KiB window instead of the 2 MiB hyper
    // gives a stream), so not reading soon leaves events unsent at the server.
    let small_window = Channel::from_shared(format!("http://{}", app.grpc_address))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_lazy();
    let mut stream = SubscriptionServiceClient::with_interceptor(
        small_window,
        app.bearer(Some(&app.token(Role::Service, "slow"))),
    )
    .subscribe_commits(pb::SubscribeCommitsRequest::default())
    .await
    .unwrap()
    .into_inner();
    let (_, start) = until_caught_up(&mut stream).await;

    // The subscriber stops reading while more commits than the feed keeps land.
    let commands = FEED_CAPACITY + 500;
    let placed = futures::stream::iter(0..commands)
        .map(|_| place(&app))
        .buffer_unordered(16)
        .count()
        .await;
    assert_eq!(placed, commands, "every writer was answered");

    // It reads again: what was sent arrives in order, then RESOURCE_EXHAUSTED with a position.
    let mut last = start;
    let told = loop {
        match tokio::time::timeout(NEXT_MESSAGE, stream.message())
            .await
            .unwrap()
        {
            Ok(Some(message)) => match message.item.unwrap() {
                Item::Event(event) => {
                    assert_eq!(event.position, last + 1, "no gap, no repeat");
                    last = event.position;
                }
                other => panic!("unexpected {other:?}"),
            },
            Ok(None) => panic!("the stream ended OK after position {last}"),
            Err(status) => break status,
        }
    };
    assert_eq!(told.code(), Code::ResourceExhausted, "{told:?}");
    let resume = format!("from_position={last}");
    assert!(
        told.message().contains(&resume),
        "{told:?} (last received {last})"
    );
    assert!(last < start + commands as u64, "it was told before the end");

    // Resuming there reads the rest from the store.
    let mut stream = subscribe(&app, last, &[]).await.unwrap();
    let (rest, checkpoint) = until_caught_up(&mut stream).await;
    assert_eq!(rest.first().map(|e| e.position), Some(last + 1));
    assert_eq!(checkpoint, app.event_count().await as u64);
    app.stop().await;
}
