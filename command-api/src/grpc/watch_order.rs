//! `OrderService.WatchOrder`: an order's state, then every change as it commits.
//!
//! The stream's task reads the order's events from the store once, then takes its new events
//! from the order's channel on the process's [`CommitFeed`](crate::commit_feed::CommitFeed). The
//! order's version is the resume point: a change whose sequence is not the next one (the feed
//! started after it, or this stream lagged behind the feed) makes the task reread the order's
//! events after its version from the store, so nothing is missed and nothing repeated.
//!
//! Every event is decoded by the order store, as a command's load decodes it (upcasters
//! applied). One this build does not read (a newer writer during a rolling deploy) stops the
//! stream after the changes before it, UNAVAILABLE, naming the event and the version to resume
//! after (BRIEF §5: an event that is not understood stops its aggregate, it is never passed).

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
        // Not even its first event is readable here: that is the reason, not "does not exist".
        return Err(history
            .stopped
            .unwrap_or_else(|| {
                ApiError::refused(
                    domain::ErrorReason::OrderNotFound,
                    format!("order {order_id} does not exist"),
                )
            })
            .into());
    }
    if !watched.order.visible_to(&principal.actor()) {
        return Err(
            ApiError::PermissionDenied(format!("caller may not watch order {order_id}")).into(),
        );
    }
    if after_version > watched.version {
        // A version past an event this build does not read was sent by a newer server.
        return Err(history
            .stopped
            .unwrap_or_else(|| {
                ApiError::invalid(
                    "after_version",
                    format!(
                        "is past the order's version {}; resume with a version this stream sent",
                        watched.version
                    ),
                )
            })
            .into());
    }
    let first = if after_version == 0 {
        vec![watched.current()]
    } else {
        history
            .applied
            .into_iter()
            .filter(|change| change_version(change) > after_version)
            .collect()
    };
    let (stream, response) = streaming::open(RPC);
    let opening = Changes {
        applied: first,
        stopped: history.stopped,
    };
    tokio::spawn(follow(api.clone(), watched, subscription, opening, stream));
    Ok(Response::new(response))
}

/// Sends `first`, then every change the feed brings, until the order ends, the client goes or
/// an event this build does not read stops it.
async fn follow(
    api: SharedApi,
    mut watched: WatchedOrder,
    mut subscription: FeedSubscription,
    first: Changes,
    stream: StreamSender<pb::OrderChange>,
) {
    let mut closing = api.feed.closing();
    let mut changes = Ok(first);
    loop {
        match changes {
            Ok(changes) => match send(&stream, changes, &watched).await {
                Next::Follow => {}
                Next::End => return,
                Next::Fail(error) => return stream.fail(error).await,
            },
            Err(error) => return stream.fail(error).await,
        }
        changes = loop {
            let received = tokio::select! {
                () = stream.closed() => return,
                _ = closing.wait_for(|closed| *closed) => Err(RecvError::Closed),
                received = subscription.events.recv() => received,
            };
            break match received {
                Ok(event) if event.sequence as u64 <= watched.version => continue,
                Ok(event) if event.sequence as u64 == watched.version + 1 => {
                    Ok(watched.apply_all(&api, [&*event]))
                }
                // A change this stream has not seen came before this one, or the stream fell
                // behind the feed: the store has every change after our version.
                Ok(_) | Err(RecvError::Lagged(_)) => watched.read_changes(&api).await,
                Err(RecvError::Closed) => Err(ApiError::Interrupted(format!(
                    "this server is shutting down; watch again with after_version={}",
                    watched.version
                ))),
            };
        };
    }
}

/// What a stream does after its latest changes were sent.
enum Next {
    Follow,
    /// The order ended, or the client went.
    End,
    /// The changes stopped at an event this build does not read: the stream ends with why.
    Fail(ApiError),
}

/// Sends `changes`' changes, in order.
async fn send(
    stream: &StreamSender<pb::OrderChange>,
    changes: Changes,
    watched: &WatchedOrder,
) -> Next {
    for change in changes.applied {
        if let Err(ClientGone) = stream.send(change).await {
            return Next::End;
        }
    }
    match changes.stopped {
        Some(stopped) => Next::Fail(stopped),
        None if watched.order.has_ended() => Next::End,
        None => Next::Follow,
    }
}

fn change_version(change: &pb::OrderChange) -> u64 {
    change.order.as_ref().map_or(0, |order| order.version)
}

/// What a read of the order brought: the changes applied, in order, and, when an event this
/// build does not read stopped the read, why (the changes before it are still sent).
struct Changes {
    applied: Vec<pb::OrderChange>,
    stopped: Option<ApiError>,
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
    async fn read_changes(&mut self, api: &SharedApi) -> Result<Changes, ApiError> {
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
        Ok(self.apply_all(api, &events))
    }

    /// Applies stored events (the next ones in sequence) until one does not decode.
    fn apply_all<'a>(
        &mut self,
        api: &SharedApi,
        events: impl IntoIterator<Item = &'a RecordedEvent>,
    ) -> Changes {
        let mut applied = Vec::new();
        for event in events {
            match self.apply(api, event) {
                Ok(change) => applied.push(change),
                Err(stopped) => {
                    return Changes {
                        applied,
                        stopped: Some(stopped),
                    }
                }
            }
        }
        Changes {
            applied,
            stopped: None,
        }
    }

    /// Applies one stored event (the next in sequence), decoded by the order store, and
    /// describes the change.
    fn apply(
        &mut self,
        api: &SharedApi,
        event: &RecordedEvent,
    ) -> Result<pb::OrderChange, ApiError> {
        let payload = api
            .orders
            .decode(event)
            .map_err(|error| match ApiError::from(error) {
                ApiError::NotUnderstood(error) => ApiError::Interrupted(format!(
                    "{error}; this server follows order {} up to version {}: watch again with \
                     after_version={} later, or on an upgraded server",
                    self.id, self.version, self.version
                )),
                other => other,
            })?
            .payload;
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
