//! The live stream: the board at once, then a push when the view changes, one poller per store
//! however many pages watch it.

use std::time::{Duration, Instant};

use auth_tokens::Role;
use test_support::http::event_stream;

use crate::helpers::{TestDashboard, KNOWN_STORE};

#[tokio::test]
async fn watchers_get_the_board_at_once_and_again_when_the_view_changes() {
    let dashboard = TestDashboard::start().await;
    let token = dashboard.token(Role::Barista, "ana", Some(KNOWN_STORE));
    let url = format!("{}/api/stores/{KNOWN_STORE}/events", dashboard.address);
    let mut first = event_stream(&url, &token).await;
    let mut second = event_stream(&url, &token).await;

    for stream in [&mut first, &mut second] {
        let event = stream.next_event().await.unwrap();
        assert_eq!(event.name, "board");
        let board: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(board["board"]["orders"]["pending"], serde_json::json!([]));
    }

    let order_id = "0194f1a2-0000-7000-8000-000000000001";
    let written = Instant::now();
    dashboard.put_open_order(order_id, "accepted").await;
    for stream in [&mut first, &mut second] {
        let event = stream.next_event().await.unwrap();
        let board: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        let pending = &board["board"]["orders"]["pending"];
        assert_eq!(pending[0]["order_id"], order_id, "{board}");
        assert_eq!(pending[0]["items"][0]["customisations"][0], "oat milk");
        assert_eq!(board["board"]["metrics"]["active"], 1);
    }
    // A figure, not an assertion: the view's write to the page's push, with a 100 ms poll.
    eprintln!(
        "view change pushed to both watchers after {} ms",
        written.elapsed().as_millis()
    );
    assert_eq!(dashboard.live.pollers(), 1, "one poller for both watchers");

    // Once the last watcher leaves, the store's poller stops: an idle dashboard reads nothing.
    drop((first, second));
    wait_until("the poller stops", || dashboard.live.pollers() == 0).await;
    let mut third = event_stream(&url, &token).await;
    assert_eq!(third.next_event().await.unwrap().name, "board");
    assert_eq!(dashboard.live.pollers(), 1, "a new watcher, a new poller");
    dashboard.stop().await;
}

/// Waits until `condition` holds, for at most ten seconds.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_live_stream_ends_when_its_token_expires() {
    let dashboard = TestDashboard::start().await;
    // Valid for one second (plus the five seconds of clock-skew leeway every check allows).
    let token = dashboard.token_valid_for(
        Role::Barista,
        "ana",
        Some(KNOWN_STORE),
        std::time::Duration::from_secs(1),
    );
    let url = format!("{}/api/stores/{KNOWN_STORE}/events", dashboard.address);
    let mut stream = event_stream(&url, &token).await;
    assert_eq!(stream.next_event().await.unwrap().name, "board");

    // No board change comes; what comes is the end of the token's validity, then of the stream.
    let bound = std::time::Duration::from_secs(15);
    let expired = tokio::time::timeout(bound, stream.next_event())
        .await
        .expect("the stream outlived its token")
        .expect("the stream ended without saying why");
    assert_eq!(expired.name, "expired");
    assert!(expired.data.contains("sign in again"), "{}", expired.data);
    let after = tokio::time::timeout(bound, stream.next_event())
        .await
        .expect("the stream stayed open after its token expired");
    assert!(after.is_none(), "{after:?}");
    // And the same token cannot open a new one.
    let again = dashboard
        .get(&format!("/api/stores/{KNOWN_STORE}/board"), Some(&token))
        .await;
    assert_eq!(again.status, 401);
    dashboard.stop().await;
}
