//! `OrderService.WatchOrder`: an order's state, then every change as it commits.
//!
//! The stream's task reads the order's events from the store once, then takes its new events
//! from the order's channel on the process's [`CommitFeed`](crate::commit_feed::CommitFeed). The
//! order's version is the resume point: a change whose sequence is not the next one (the feed
//! started after it, or this stream lagged behind the feed) makes the task reread the order's
//! events after its version from the store, so nothing is missed and nothing repeated.

use cqrs_es::Aggregate;
use domain::order::{Order, OrderEvent};
use domain::OrderId;
use event_store::RecordedEvent;
use proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::orders::order_view;
use super::streaming::{self, ClientGone, ResponseStream, StreamSender};
use super::{parse_field, SharedApi, ANYONE};
use crate::commit_feed::FeedSubscription;
use crate::error::ApiError;

const RPC: &str = "WatchOrder";

/// Opens the stream after checking the caller, the order and `after_version`.
pub(super) async fn watch_order(
    api: &SharedApi,
    request: Request<pb::WatchOrderRequest>,
) -> Result<Response<ResponseStream<pb::OrderChange>>, Status> {
    let principal = api.caller(&request, ANYONE, RPC)?;
    let order_id = parse_field("order_id", OrderId::parse(&request.get_ref().order_id))?;
    let after_version = request.get_ref().after_version;
    // Subscribed before the store is read, so a change committed in between reaches the feed.
    let subscription = api
        .feed
        .subscribe_aggregate(Order::TYPE, &order_id.to_string())
        .await?;
    let mut watched = WatchedOrder::new(order_id.to_string());
    let history = watched.read_changes(api).await?;
    if watched.order.state().is_none() {
        return Err(ApiError::refused(
            domain::ErrorReason::OrderNotFound,
            format!("order {order_id} does not exist"),
        )
        .into());
    }
    if !watched.order.visible_to(&principal.actor()) {
        return Err(
            ApiError::PermissionDenied(format!("caller may not watch order {order_id}")).into(),
        );
    }
    if after_version > watched.version {
        return Err(ApiError::invalid(
            "after_version",
            format!(
                "is past the order's version {}; resume with a version this stream sent",
                watched.version
            ),
        )
        .into());
    }
    let first = if after_version == 0 {
        vec![watched.current()]
    } else {
        history
            .into_iter()
            .filter(|change| change_version(change) > after_version)
            .collect()
    };
    let (stream, response) = streaming::open(RPC);
    tokio::spawn(follow(api.clone(), watched, subscription, first, stream));
    Ok(Response::new(response))
}

/// Sends `first`, then every change the feed brings, until the order ends or the client goes.
async fn follow(
    api: SharedApi,
    mut watched: WatchedOrder,
    mut subscription: FeedSubscription,
    first: Vec<pb::OrderChange>,
    stream: StreamSender<pb::OrderChange>,
) {
    if send_all(&stream, first).await.is_err() || watched.order.has_ended() {
        return;
    }
    let mut closing = api.feed.closing();
    loop {
        let received = tokio::select! {
            () = stream.closed() => return,
            _ = closing.wait_for(|closed| *closed) => Err(RecvError::Closed),
            received = subscription.events.recv() => received,
        };
        let changes = match received {
            Ok(event) if event.sequence as u64 <= watched.version => continue,
            Ok(event) if event.sequence as u64 == watched.version + 1 => {
                watched.apply(&event).map(|change| vec![change])
            }
            // A change this stream has not seen came before this one, or the stream fell
            // behind the feed: the store has every change after our version.
            Ok(_) | Err(RecvError::Lagged(_)) => watched.read_changes(&api).await,
            Err(RecvError::Closed) => Err(ApiError::Interrupted(format!(
                "this server is shutting down; watch again with after_version={}",
                watched.version
            ))),
        };
        match changes {
            Ok(changes) => {
                if send_all(&stream, changes).await.is_err() || watched.order.has_ended() {
                    return;
                }
            }
            Err(error) => return stream.fail(error).await,
        }
    }
}

async fn send_all(
    stream: &StreamSender<pb::OrderChange>,
    changes: Vec<pb::OrderChange>,
) -> Result<(), ClientGone> {
    for change in changes {
        stream.send(change).await?;
    }
    Ok(())
}

fn change_version(change: &pb::OrderChange) -> u64 {
    change.order.as_ref().map_or(0, |order| order.version)
}

/// The watched order as far as the stream has followed it.
struct WatchedOrder {
    id: String,
    order: Order,
    version: u64,
}

impl WatchedOrder {
    fn new(id: String) -> Self {
        Self {
            id,
            order: Order::default(),
            version: 0,
        }
    }

    /// Reads and applies the order's events after its version, one change per event.
    async fn read_changes(&mut self, api: &SharedApi) -> Result<Vec<pb::OrderChange>, ApiError> {
        let events = api
            .feed
            .store()
            .read_aggregate_after(Order::TYPE, &self.id, self.version as i64)
            .await
            .map_err(|error| match ApiError::from(error) {
                ApiError::Unavailable(_) | ApiError::DeadlineExceeded(_) => {
                    ApiError::Interrupted(format!(
                        "the event store is unavailable; watch again with after_version={}",
                        self.version
                    ))
                }
                other => other,
            })?;
        events.iter().map(|event| self.apply(event)).collect()
    }

    /// Applies one stored event (the next in sequence) and describes the change.
    fn apply(&mut self, event: &RecordedEvent) -> Result<pb::OrderChange, ApiError> {
        let payload: OrderEvent =
            serde_json::from_value(event.payload.clone()).map_err(|error| {
                ApiError::Internal(format!(
                    "order {} event {} does not decode: {error}",
                    self.id, event.sequence
                ))
            })?;
        let event_type = cqrs_es::DomainEvent::event_type(&payload);
        let reason = match &payload {
            OrderEvent::OrderRejected { reason, .. } => reason.to_string(),
            OrderEvent::OrderCancelled { reason, .. } | OrderEvent::PaymentDeclined { reason } => {
                reason.to_string()
            }
            _ => String::new(),
        };
        self.order.apply(payload);
        self.version = event.sequence as u64;
        Ok(pb::OrderChange {
            event_type,
            reason,
            ..self.current()
        })
    }

    /// The order as it is now.
    fn current(&self) -> pb::OrderChange {
        pb::OrderChange {
            order: self
                .order
                .state()
                .map(|state| order_view(state, self.version)),
            event_type: String::new(),
            reason: String::new(),
            ended: self.order.has_ended(),
        }
    }
}
