//! Customer notifications: order ready, order rejected and tier upgraded, as JSON messages on
//! the notifications queue (`docs/flows/notification.schema.json`), for whatever sends the push,
//! e-mail or SMS.
//!
//! A consumer group of the projector runtime, like the saga. Delivery is at least once: a commit
//! delivered again sends its notification again with the same `notification_id`
//! (`<aggregate type>/<aggregate id>/<sequence>`), by which the sender deduplicates.

use std::sync::Arc;

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::{LoyaltyEvent, OrderEvent, Tier};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;

use crate::command_client::{Cause, CommandClient, CommandError};
use crate::flow_trace;
use crate::sqs::{Outgoing, SqsQueue};

/// The projection's name in the lease table, metrics and dead letters.
pub const NOTIFICATIONS_NAME: &str = "notifications";

/// The schema version this build writes.
pub const NOTIFICATION_VERSION: u32 = 1;

/// One notification message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// [`NOTIFICATION_VERSION`].
    pub schema_version: u32,
    /// Stable per event: `<aggregate type>/<aggregate id>/<sequence>`.
    pub notification_id: String,
    /// Whom to tell.
    pub customer_id: String,
    /// When it happened (RFC 3339, UTC).
    pub occurred_at: String,
    /// What to tell.
    #[serde(flatten)]
    pub message: NotificationKind,
}

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotificationKind {
    /// The order can be picked up.
    OrderReady {
        /// The order.
        order_id: String,
        /// Where.
        store_id: String,
    },
    /// The order was rejected.
    OrderRejected {
        /// The order.
        order_id: String,
        /// Where.
        store_id: String,
        /// Why, for the customer ("out of stock", "payment declined", ...).
        reason: String,
    },
    /// The customer reached a higher loyalty tier.
    TierUpgraded {
        /// The previous tier.
        from: Tier,
        /// The new tier.
        to: Tier,
    },
}

/// Turns log events into notification messages.
pub struct Notifications {
    commands: Arc<CommandClient>,
    queue: SqsQueue,
}

impl Notifications {
    /// Sends to `queue_url`; reads orders (for their customer and store) through `commands`.
    pub fn new(commands: Arc<CommandClient>, sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self {
            commands,
            queue: SqsQueue::new(sqs, queue_url),
        }
    }

    async fn notification(
        &self,
        commit: &LoggedCommit,
        logged: &LoggedEvent,
    ) -> Result<Option<Notification>, ProjectionError> {
        let id = &commit.aggregate_id;
        let order = |reason: Option<String>| async move {
            let order = self
                .commands
                .get_order(
                    id,
                    &Cause {
                        correlation_id: id.clone(),
                        causation_id: String::new(),
                    },
                )
                .await?;
            let order_id = id.clone();
            let store_id = order.store_id.clone();
            Ok::<_, CommandError>((
                order.customer_id,
                match reason {
                    None => NotificationKind::OrderReady { order_id, store_id },
                    Some(reason) => NotificationKind::OrderRejected {
                        order_id,
                        store_id,
                        reason,
                    },
                },
            ))
        };
        let (customer_id, message) = match &logged.event {
            DomainEvent::Order(OrderEvent::OrderMarkedReady {}) => order(None).await,
            DomainEvent::Order(OrderEvent::OrderRejected { reason, .. }) => {
                order(Some(reason.to_string())).await
            }
            DomainEvent::Loyalty(LoyaltyEvent::TierUpgraded { from, to }) => Ok((
                id.clone(),
                NotificationKind::TierUpgraded {
                    from: *from,
                    to: *to,
                },
            )),
            _ => return Ok(None),
        }
        .map_err(|error| {
            if error.is_transient() {
                ProjectionError::Transient(Box::new(error))
            } else {
                ProjectionError::Poison {
                    index: 0,
                    reason: error.to_string(),
                }
            }
        })?;
        Ok(Some(Notification {
            schema_version: NOTIFICATION_VERSION,
            notification_id: format!("{}/{id}/{}", commit.aggregate_type, logged.sequence),
            customer_id,
            occurred_at: logged.recorded_at.format(&Rfc3339).unwrap_or_default(),
            message,
        }))
    }

    /// Sends one notification of `commits[index]` (failures classified by
    /// [`crate::sqs::projection_error`]).
    async fn send(&self, index: usize, notification: &Notification) -> Result<(), ProjectionError> {
        let body = serde_json::to_string(notification).map_err(|e| ProjectionError::Poison {
            index,
            reason: format!("the notification does not serialize: {e}"),
        })?;
        self.queue
            .send(Outgoing::new(&body))
            .await
            .map_err(|error| crate::sqs::projection_error(index, error, "notification"))?;
        metrics::counter!("orderpipe_flows_notifications_total").increment(1);
        Ok(())
    }
}

#[async_trait]
impl Projection for Notifications {
    fn name(&self) -> &'static str {
        NOTIFICATIONS_NAME
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        for (index, commit) in commits.iter().enumerate() {
            let step = flow_trace::commit_step("notifications.notify", commit);
            for event in &commit.events {
                let notification = match self
                    .notification(commit, event)
                    .instrument(step.clone())
                    .await
                {
                    Ok(notification) => notification,
                    Err(ProjectionError::Poison { reason, .. }) => {
                        return Err(ProjectionError::Poison { index, reason })
                    }
                    Err(other) => return Err(other),
                };
                if let Some(notification) = notification {
                    self.send(index, &notification)
                        .instrument(step.clone())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notifications_serialize_flat_with_their_kind() {
        let notification = Notification {
            schema_version: 1,
            notification_id: "loyalty/c-1/4".into(),
            customer_id: "c-1".into(),
            occurred_at: "2026-11-22T08:00:00Z".into(),
            message: NotificationKind::TierUpgraded {
                from: Tier::Bronze,
                to: Tier::Silver,
            },
        };
        let json = serde_json::to_value(&notification).unwrap();
        assert_eq!(json["kind"], "tier_upgraded");
        assert_eq!(json["from"], "Bronze");
        assert_eq!(json["to"], "Silver");
        assert_eq!(
            serde_json::from_value::<Notification>(json).unwrap(),
            notification
        );
    }
}
