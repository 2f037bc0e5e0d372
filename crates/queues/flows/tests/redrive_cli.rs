//! `flows redrive` is listed by `--help` with every consumer group that can park, and refuses a
//! group it does not have before touching anything.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::{Command, Output};

fn flows(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flows"))
        .args(args)
        .env_remove("ORDERPIPE_AUTH__SERVICE_TOKEN")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn help_lists_redrive_for_the_saga_and_notifications() {
    let help = flows(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help).contains("redrive"), "{}", text(&help));

    let redrive = flows(&["redrive", "--help"]);
    assert!(redrive.status.success());
    let redrive = text(&redrive);
    for group in ["order_saga", "saga", "notifications", "--aggregate"] {
        assert!(redrive.contains(group), "{group} missing from:\n{redrive}");
    }
}

#[test]
fn an_unknown_group_is_refused_with_the_groups_there_are() {
    let refused = flows(&["redrive", "--group", "payments"]);
    assert!(!refused.status.success());
    let message = text(&refused);
    assert!(
        message.contains("invalid value 'payments'") && message.contains("order_saga"),
        "{message}"
    );
}
