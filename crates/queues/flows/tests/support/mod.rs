//! What the flows' SQS tests share.

use aws_sdk_sqs::types::QueueAttributeName;

/// Creates the queue `name` (FIFO: `name.fifo`) and returns its URL.
pub async fn queue(sqs: &aws_sdk_sqs::Client, name: &str, fifo: bool) -> String {
    let mut create = sqs.create_queue();
    if fifo {
        create = create
            .queue_name(format!("{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true");
    } else {
        create = create.queue_name(name);
    }
    create.send().await.unwrap().queue_url.unwrap()
}
