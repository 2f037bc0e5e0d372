//! Creating an SQS queue and its dead-letter queue from their [`QueueShape`]: what the tests
//! and benchmarks that need fresh queues of their own call, so their queues are shaped like the
//! ones the local stack and the deployment create from the same declaration.

use std::error::Error;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

use crate::resources::{QueueKind, QueueShape};

/// The URLs of a queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    /// The work queue; `None` for a dead-letter-only queue.
    pub queue_url: Option<String>,
    /// The dead-letter queue.
    pub dead_letter_url: String,
}

/// A queue that could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the SQS queue {queue}: {source}")]
pub struct CreateQueueError {
    /// The queue's name.
    pub queue: String,
    /// The SDK's error, or what was missing from its answer.
    pub source: Box<dyn Error + Send + Sync>,
}

impl QueueShape {
    /// Creates the queues of base name `base` (the dead-letter queue `<base>-dlq`, then, unless
    /// dead letters are all there is, `<base>` redriving to it; `.fifo` on both for a FIFO
    /// queue). SQS answers a CreateQueue of an existing queue with the same attributes with its
    /// URL, so running this again is harmless.
    pub async fn create(&self, client: &Client, base: &str) -> Result<QueueUrls, CreateQueueError> {
        let dead_letter_name = self.dead_letter_name(base);
        let dead_letter_url = self.create_one(client, &dead_letter_name, None).await?;
        let queue_url = match (self.kind, self.queue_name(base)) {
            (QueueKind::WithDeadLetters { max_receive_count }, Some(name)) => {
                let arn = queue_arn(client, &dead_letter_url)
                    .await
                    .map_err(|source| CreateQueueError {
                        queue: dead_letter_name.clone(),
                        source,
                    })?;
                // SQS takes the policy as JSON text; an ARN holds no character JSON escapes.
                let policy = format!(
                    r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}"#
                );
                Some(self.create_one(client, &name, Some(policy)).await?)
            }
            _ => None,
        };
        Ok(QueueUrls {
            queue_url,
            dead_letter_url,
        })
    }

    async fn create_one(
        &self,
        client: &Client,
        name: &str,
        redrive_policy: Option<String>,
    ) -> Result<String, CreateQueueError> {
        let failed = |source: Box<dyn Error + Send + Sync>| CreateQueueError {
            queue: name.to_owned(),
            source,
        };
        let mut request = client.create_queue().queue_name(name);
        if self.fifo {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(policy) = redrive_policy {
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
        }
        let created = request.send().await.map_err(|e| failed(e.into()))?;
        created
            .queue_url
            .ok_or_else(|| failed("CreateQueue answered without a queue URL".into()))
    }
}

async fn queue_arn(client: &Client, url: &str) -> Result<String, Box<dyn Error + Send + Sync>> {
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    attributes
        .attributes
        .and_then(|mut found| found.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| "GetQueueAttributes answered without the queue's ARN".into())
}
