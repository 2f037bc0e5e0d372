//! `orderpipe.v1.SubscriptionService`: a catch-up subscription to the whole log.
//!
//! A subscriber reads the store after its position, page by page (its own pace; each page one
//! short query), then follows the process's [`CommitFeed`](crate::commit_feed::CommitFeed).
//! Positions are gap-free, so the next position it expects is always `last + 1`: a later one
//! means the feed published events before this subscriber joined it, and the store is read up
//! to it again. A subscriber that falls more than the feed's capacity behind the live log is
//! told (RESOURCE_EXHAUSTED, with the position to resume from) instead of being buffered.

use domain::inventory::StoreInventory;
use domain::loyalty::LoyaltyAccount;
use domain::{Menu, Order};
use event_store::RecordedEvent;
use proto::v1 as pb;
use proto::v1::subscription_service_server::SubscriptionService;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::streaming::{self, ClientGone, ResponseStream, StreamSender};
use super::{SharedApi, Violations, SERVICES};
use crate::commit_feed::{read_page, FeedSubscription, FEED_CAPACITY, PAGE_EVENTS};
use crate::error::ApiError;

const RPC: &str = "SubscribeCommits";

/// The aggregate types a subscriber may ask for.
const AGGREGATE_TYPES: [&str; 4] = [
    <Order as cqrs_es::Aggregate>::TYPE,
    <StoreInventory as cqrs_es::Aggregate>::TYPE,
    <LoyaltyAccount as cqrs_es::Aggregate>::TYPE,
    <Menu as cqrs_es::Aggregate>::TYPE,
];

/// The subscription service.
pub struct SubscriptionsGrpc {
    api: SharedApi,
}

impl SubscriptionsGrpc {
    /// The service over the shared API.
    pub fn new(api: SharedApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionsGrpc {
    type SubscribeCommitsStream = ResponseStream<pb::SubscribeCommitsResponse>;

    async fn subscribe_commits(
        &self,
        request: Request<pb::SubscribeCommitsRequest>,
    ) -> Result<Response<Self::SubscribeCommitsStream>, Status> {
        self.api.caller(&request, SERVICES, RPC)?;
        let request = request.into_inner();
        let mut fields = Violations::default();
        let from = i64::try_from(request.from_position).ok();
        if from.is_none() {
            fields.add("from_position", "is larger than any position");
        }
        for (index, aggregate_type) in request.aggregate_types.iter().enumerate() {
            if !AGGREGATE_TYPES.contains(&aggregate_type.as_str()) {
                fields.add(
                    format!("aggregate_types[{index}]"),
                    format!("must be one of {}", AGGREGATE_TYPES.join(", ")),
                );
            }
        }
        let from = fields.finish(|| from)?;
        let subscription = self.api.feed.subscribe().await?;
        let (stream, response) = streaming::open(RPC);
        let subscriber = Subscriber {
            api: self.api.clone(),
            types: request.aggregate_types,
            last: from,
            stream,
        };
        tokio::spawn(subscriber.run(subscription));
        Ok(Response::new(response))
    }
}

/// One subscription's task.
struct Subscriber {
    api: SharedApi,
    /// The aggregate types sent (all when empty).
    types: Vec<String>,
    /// The last position read (sent or filtered out).
    last: i64,
    stream: StreamSender<pb::SubscribeCommitsResponse>,
}

/// Why a subscription's task stops.
enum Stop {
    ClientGone,
    Failed(ApiError),
}

impl From<ClientGone> for Stop {
    fn from(_: ClientGone) -> Self {
        Stop::ClientGone
    }
}

impl Subscriber {
    async fn run(mut self, subscription: FeedSubscription) {
        let outcome = self.follow(subscription).await;
        if let Err(Stop::Failed(error)) = outcome {
            self.stream.fail(error).await;
        }
    }

    async fn follow(&mut self, mut subscription: FeedSubscription) -> Result<(), Stop> {
        self.catch_up().await?;
        // The receiver filled (and lagged) during a long catch-up: join the feed at its tail
        // instead, and read from the store what committed meanwhile.
        subscription.events = subscription.events.resubscribe();
        self.catch_up().await?;
        self.send(pb::subscribe_commits_response::Item::CaughtUp(
            pb::Checkpoint {
                position: self.last as u64,
            },
        ))
        .await?;
        let mut closing = self.api.feed.closing();
        loop {
            let received = tokio::select! {
                () = self.stream.closed() => return Ok(()),
                _ = closing.wait_for(|closed| *closed) => Err(RecvError::Closed),
                received = subscription.events.recv() => received,
            };
            match received {
                Ok(event) if event.global_position <= self.last => {}
                Ok(event) => {
                    if event.global_position > self.last + 1 {
                        self.catch_up().await?;
                    }
                    if event.global_position == self.last + 1 {
                        self.pass(&event).await?;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    return Err(Stop::Failed(ApiError::Exhausted(format!(
                        "the subscriber fell more than {FEED_CAPACITY} events behind the live \
                         log; subscribe again with from_position={}",
                        self.last
                    ))))
                }
                Err(RecvError::Closed) => {
                    return Err(Stop::Failed(ApiError::Interrupted(format!(
                        "this server is shutting down; subscribe again with from_position={}",
                        self.last
                    ))))
                }
            }
        }
    }

    /// Sends what the store holds after `last`, page by page, until a page comes back short.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let page = read_page(self.api.feed.store(), self.last)
                .await
                .map_err(|error| {
                    tracing::warn!(error = %error, "subscription cannot read the store");
                    Stop::Failed(ApiError::Interrupted(format!(
                        "the event store is unavailable; subscribe again with from_position={}",
                        self.last
                    )))
                })?;
            let full = page.len() as i64 == PAGE_EVENTS;
            for event in &page {
                self.pass(event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Sends `event` if the filter lets it through, and moves past it either way.
    async fn pass(&mut self, event: &RecordedEvent) -> Result<(), Stop> {
        if self.types.is_empty() || self.types.contains(&event.aggregate_type) {
            self.send(pb::subscribe_commits_response::Item::Event(
                committed_event(event),
            ))
            .await?;
        }
        self.last = event.global_position;
        Ok(())
    }

    async fn send(&self, item: pb::subscribe_commits_response::Item) -> Result<(), Stop> {
        Ok(self
            .stream
            .send(pb::SubscribeCommitsResponse { item: Some(item) })
            .await?)
    }
}

fn committed_event(event: &RecordedEvent) -> pb::CommittedEvent {
    pb::CommittedEvent {
        position: event.global_position as u64,
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence as u64,
        event_type: event.event_type.clone(),
        event_version: event.event_version.clone(),
        payload_json: event.payload.to_string().into_bytes(),
        metadata_json: event.metadata.to_string().into_bytes(),
        recorded_at: Some(prost_types::Timestamp {
            seconds: event.recorded_at.unix_timestamp(),
            nanos: event.recorded_at.nanosecond() as i32,
        }),
    }
}
