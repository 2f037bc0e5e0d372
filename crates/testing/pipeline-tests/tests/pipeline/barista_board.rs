//! The barista dashboard in headless Chromium over the running pipeline: orders placed over gRPC
//! appear on the board as the projector writes the view, a barista moves one through Preparing,
//! Ready and Completed with the page's buttons (refused first for an unpaid order), and the
//! metrics follow. The browser is driven by `crates/read/dashboard/browser-test/board.mjs` (playwright-core
//! with Debian's chromium); its screenshots are kept in `target/dashboard-screenshots/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use command_api::auth::Role;
use dashboard::settings::{
    BoardSettings, CommandApiSettings, HttpSettings, Settings as DashboardSettings,
};
use proto::v1 as pb;
use read_models::settings::{ReadModelDatabase, ViewTables};
use test_support::http::request;
use tokio::sync::{mpsc, oneshot};

use crate::support::{eventually, loopback, quiet_log, Pipeline, Views, STORE};
use crate::workload::{open_the_store, run_order, Clients, Fate};

#[tokio::test]
async fn a_barista_takes_an_order_across_the_board_in_a_browser() {
    let script = browser_script();
    let screenshots = screenshot_dir();
    let pipeline = Pipeline::start().await;
    let views = pipeline.views("board").await;
    let worker = pipeline.spawn_worker(&views, "board");
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    // Croissants below their threshold of 5: the board warns, and lists the reorder it opened.
    clients
        .inventory
        .set_stock(pb::SetStockRequest {
            idempotency_key: "stock-low-croissant".into(),
            store_id: STORE.into(),
            sku: "CROISSANT".into(),
            on_hand: 4,
            low_stock_threshold: 5,
        })
        .await
        .unwrap();

    let (address, stop_dashboard, dashboard) = start_dashboard(&pipeline, &views).await;
    let barista = pipeline.token(Role::Barista, "ana");
    let board_url = format!("{address}/api/stores/{STORE}/board");
    eventually("the view to know the store", || async {
        request("GET", &board_url, Some(&barista), None)
            .await
            .status
            == 200
    })
    .await;

    let mut browser = Browser::launch(&script, &address, &barista, &screenshots);
    let before = browser.expect("ready").await;
    let (paid, _) = run_order(&pipeline, &mut clients, "c-1", Fate::Paid).await;
    let (unpaid, _) = run_order(&pipeline, &mut clients, "c-2", Fate::Open).await;
    browser.send(&format!("orders {paid} {unpaid}"));

    let refusal = browser.expect("refused").await;
    assert_eq!(
        refusal,
        "the order cannot be prepared before its payment is captured"
    );
    browser.expect("done").await;
    browser.finish();

    // The page's metrics at sign-in were the view's (nothing placed yet).
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["orders_today"], 0);
    assert_eq!(before["completed"], 0);
    // The order's history, through the read API, once the history projector has it.
    let history_url = format!("{address}/api/orders/{paid}/history");
    eventually("the history of the completed order", || async {
        let history = request("GET", &history_url, Some(&barista), None).await;
        history.status == 200 && history.body["status"] == "completed"
    })
    .await;
    let history = request("GET", &history_url, Some(&barista), None).await;
    let events: Vec<&str> = history.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "order_placed",
            "order_accepted",
            "payment_captured",
            "preparation_started",
            "order_marked_ready",
            "order_completed"
        ]
    );
    let saved = std::fs::read_dir(&screenshots)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "png"))
        })
        .count();
    assert_eq!(saved, 7, "screenshots in {}", screenshots.display());

    let _ = stop_dashboard.send(());
    dashboard.await.unwrap().unwrap();
    pipeline.stop().await;
    worker.await.unwrap();
}

/// The dashboard over `views`, sending commands to the pipeline's command API.
async fn start_dashboard(
    pipeline: &Pipeline,
    views: &Views,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let app = dashboard::app::Application::build(DashboardSettings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
        },
        admin: loopback(),
        aws: Default::default(),
        dynamodb: ViewTables {
            active_orders_table: views.tables.orders.clone(),
            store_metrics_table: views.tables.stores.clone(),
            // No swap happens here: a views table that does not exist means "the configured
            // tables are live".
            views_table: test_support::unique_name("views"),
        },
        history: ReadModelDatabase {
            database: pipeline.views_db.settings(None),
            schema: views.history.as_str().into(),
        },
        auth: pipeline.auth(),
        command_api: CommandApiSettings {
            url: format!("http://{}", pipeline.grpc_address),
            timeout_ms: 10_000,
            tls: Default::default(),
        },
        board: BoardSettings {
            poll_interval_ms: 200,
        },
        log: quiet_log(),
    })
    .await
    .unwrap();
    let address = format!("http://{}", app.http_address());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (address, stop, running)
}

/// `crates/read/dashboard/browser-test/board.mjs`, once its dependencies are installed.
fn browser_script() -> PathBuf {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../read/dashboard/browser-test");
    assert!(
        directory.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run crates/read/dashboard/browser-test/setup.sh (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run crates/read/dashboard/browser-test/setup.sh (installs Debian's chromium)"
    );
    directory.join("board.mjs")
}

/// `ORDERPIPE_SCREENSHOT_DIR`, or `target/dashboard-screenshots/` of the workspace; emptied of
/// an earlier run's pictures.
fn screenshot_dir() -> PathBuf {
    let directory = std::env::var_os("ORDERPIPE_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../target/dashboard-screenshots")
        });
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// The browser script, running: lines to its stdin, lines from its stdout. Killed if the test
/// fails first.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Browser {
    fn launch(script: &Path, url: &str, token: &str, screenshots: &Path) -> Self {
        let mut child = Command::new("node")
            .arg(script)
            .env("DASHBOARD_URL", url)
            .env("BARISTA_TOKEN", token)
            .env("STORE", STORE)
            .env("SCREENSHOT_DIR", screenshots)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs the browser script");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin: Some(stdin),
            lines,
        }
    }

    /// The rest of the script's next line that starts with `word`; fails the test if the
    /// script reports a failure or ends first.
    async fn expect(&mut self, word: &str) -> String {
        loop {
            let line = self
                .lines
                .recv()
                .await
                .unwrap_or_else(|| panic!("the browser script ended before '{word}'"));
            let (first, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            if first == "failed" {
                panic!("in the browser: {rest} (screenshots: failure.png)");
            }
            if first == "timing" {
                eprintln!("dashboard, seen in the browser: {rest}");
            }
            if first == word {
                return rest.to_owned();
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the script to exit and checks it succeeded.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the browser script exited with {status}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
