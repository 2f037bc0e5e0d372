//! Thin wrappers over the SQS operations the flows make, one method each on the queue they act
//! on ([`SqsQueue`]). Each keeps the SDK's error as the source of an [`AwsCallError`], classified
//! as retryable or final by `aws-support`, so callers decide on that and never on error text.

use std::time::Duration;

use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use aws_support::AwsCallError;
use commit_log::projection::ProjectionError;
use service_kit::error_chain;

/// SQS's longest visibility timeout: 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// SQS's longest delay of one message: 15 minutes.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// What a ReceiveMessage asks for.
#[derive(Debug, Clone)]
pub struct Receive<'a> {
    /// At most this many messages (1 to 10).
    pub max_messages: i32,
    /// Long-polling wait (whole seconds, 0 to 20).
    pub wait: Duration,
    /// How long the received messages stay hidden (whole seconds).
    pub visibility: Duration,
    /// The system attributes to return with each message.
    pub system_attributes: &'a [MessageSystemAttributeName],
    /// Whether to return every message attribute too.
    pub message_attributes: bool,
}

/// A message to send. A FIFO queue takes its group and deduplication id, a standard queue its
/// delay; each kind of queue refuses the other's, so [`SqsQueue::send`] passes only those its
/// queue takes.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    body: &'a str,
    group: Option<(String, String)>,
    delay: Option<Duration>,
    attributes: Vec<(&'static str, String)>,
}

impl<'a> Outgoing<'a> {
    /// A message with `body`, in no group, not delayed, without attributes.
    pub fn new(body: &'a str) -> Self {
        Self {
            body,
            group: None,
            delay: None,
            attributes: Vec::new(),
        }
    }

    /// On a FIFO queue: in message group `group_id`, deduplicated by `deduplication_id`.
    pub fn in_group(
        mut self,
        group_id: impl Into<String>,
        deduplication_id: impl Into<String>,
    ) -> Self {
        self.group = Some((group_id.into(), deduplication_id.into()));
        self
    }

    /// On a standard queue: delivered after `delay` (whole seconds, at most 15 minutes).
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// With the string message attribute `name`.
    pub fn attribute(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }
}

/// How a log consumer that sends to a queue treats a failed send of `commits[index]`'s `what`:
/// SQS refusing the message itself (contents it does not accept) is that commit's poison; every
/// other failure (throttling, the endpoint away, a queue or permission an operator must restore)
/// is retried until it passes.
pub fn projection_error(index: usize, error: AwsCallError, what: &str) -> ProjectionError {
    let refused = matches!(
        error.code.as_deref(),
        Some("InvalidMessageContents" | "InvalidParameterValue")
    );
    if refused && !error.retryable {
        ProjectionError::Poison {
            index,
            reason: format!("SQS refused the {what}: {}", error_chain(&error)),
        }
    } else {
        ProjectionError::Transient(Box::new(error))
    }
}

/// One SQS queue and the client that reaches it.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// The queue at `url`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether it is a FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// ReceiveMessage: up to `request.max_messages` messages, hidden for `request.visibility`.
    pub async fn receive(&self, request: &Receive<'_>) -> Result<Vec<Message>, AwsCallError> {
        let mut call = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(request.max_messages)
            .wait_time_seconds(request.wait.as_secs() as i32)
            .visibility_timeout(request.visibility.as_secs() as i32)
            .set_message_system_attribute_names(Some(request.system_attributes.to_vec()));
        if request.message_attributes {
            call = call.message_attribute_names("All");
        }
        let output = call
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("sqs:ReceiveMessage", e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// SendMessage; returns the new message's id.
    pub async fn send(&self, message: Outgoing<'_>) -> Result<String, AwsCallError> {
        let mut call = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body);
        for (name, value) in message.attributes {
            call = call.message_attributes(name, text_attribute(&value));
        }
        if self.is_fifo() {
            if let Some((group_id, deduplication_id)) = message.group {
                call = call
                    .message_group_id(group_id)
                    .message_deduplication_id(deduplication_id);
            }
        } else if let Some(delay) = message.delay {
            call = call.delay_seconds(delay.min(MAX_DELAY).as_secs() as i32);
        }
        let output = call
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("sqs:SendMessage", e))?;
        Ok(output.message_id.unwrap_or_default())
    }

    /// DeleteMessage of the message received with `receipt_handle`.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), AwsCallError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("sqs:DeleteMessage", e))?;
        Ok(())
    }

    /// ChangeMessageVisibility: the message received with `receipt_handle` becomes visible
    /// after `timeout` (whole seconds, at most 12 hours; zero: at once).
    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), AwsCallError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(timeout.min(MAX_VISIBILITY).as_secs() as i32)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("sqs:ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// GetQueueAttributes of one attribute; `None` when the queue does not have it.
    pub async fn attribute(
        &self,
        name: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("sqs:GetQueueAttributes", e))?;
        Ok(output.attributes.and_then(|mut a| a.remove(&name)))
    }
}

/// A string message attribute.
fn text_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("the data type, the only required field, is set")
}
