//! `flows dlq list | show | redrive` against a real (emulated) queue pair.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Command;

use aws_sdk_sqs::types::MessageAttributeValue;
use flows::queues::INTAKE_QUEUE;
use test_support::{aws_test_config, unique_name};

/// Runs the `flows` binary with the intake queue pair set, and returns its standard output.
fn flows(queue: &str, dlq: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_flows"))
        .args(args)
        .env("ORDERPIPE_SQS__INTAKE_QUEUE_URL", queue)
        .env("ORDERPIPE_SQS__INTAKE_DLQ_URL", dlq)
        .env_remove("ORDERPIPE_AUTH__SERVICE_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "flows {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_cli_lists_shows_and_redrives_a_corrected_message() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let name = unique_name("cli-intake");
    // The intake pair as the stack and the deployment shape it.
    let created = INTAKE_QUEUE.shape.create(&sqs, &name).await.unwrap();
    let (queue, dlq) = (created.queue_url.unwrap(), created.dead_letter_url);
    let reason = "invalid intake order: lines[0].sku: must be uppercase";
    let sent = sqs
        .send_message()
        .queue_url(&dlq)
        .message_body(r#"{"schema_version":1,"sku":"latte"}"#)
        .message_attributes(
            "reason",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let id = sent.message_id.unwrap();

    let listed = flows(&queue, &dlq, &["dlq", "list", "intake"]);
    assert!(listed.contains(&id) && listed.contains(reason), "{listed}");
    // Listing leaves the message where it was, visible.
    let shown = flows(&queue, &dlq, &["dlq", "show", "intake", &id]);
    assert!(shown.contains(r#""sku":"latte""#), "{shown}");

    let corrected = std::env::temp_dir().join(format!("{name}.json"));
    std::fs::write(&corrected, r#"{"schema_version":1,"sku":"LATTE-12"}"#).unwrap();
    let redriven = flows(
        &queue,
        &dlq,
        &[
            "dlq",
            "redrive",
            "intake",
            "--message-id",
            &id,
            "--body-file",
            corrected.to_str().unwrap(),
        ],
    );
    assert!(redriven.starts_with("1 message(s)"), "{redriven}");
    let back = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].body(),
        Some(r#"{"schema_version":1,"sku":"LATTE-12"}"#)
    );
    let empty = flows(&queue, &dlq, &["dlq", "list", "intake"]);
    assert!(empty.contains("is empty"), "{empty}");
    std::fs::remove_file(corrected).unwrap();
}
