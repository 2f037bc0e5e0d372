//! TLS on the command API: a throwaway CA made in each test signs the server's (and the
//! clients') certificates; the clients are built the way every internal client builds them
//! (`service_kit::grpc_tls::client_endpoint`).

use std::path::PathBuf;

use command_api::app::{Application, StartupError};
use command_api::auth::Role;
use fault_run::load::Load;
use proto::v1 as pb;
use proto::v1::menu_service_client::MenuServiceClient;
use service_kit::cli::GrpcClientTls;
use service_kit::error_chain;
use service_kit::grpc_tls::{client_endpoint, ClientTlsSettings, GrpcTlsError, ServerTlsSettings};
use test_support::tls::{IssuedCertificate, TestCa};
use tonic::transport::Channel;

use crate::helpers::{prepare, spawn_app_with, Options, TestApp};

/// A TLS app whose certificate `ca` signed for `localhost`; with `client_ca`, it requires
/// client certificates signed by that CA.
async fn spawn_tls_app(ca: &TestCa, client_ca: Option<&TestCa>) -> TestApp {
    let server = ca.server("command-api", &["localhost", "127.0.0.1"]);
    spawn_app_with(Options {
        tls: ServerTlsSettings {
            cert_file: Some(server.cert_file),
            key_file: Some(server.key_file),
            client_ca_file: client_ca.map(|ca| ca.cert_file.clone()),
            self_signed: false,
        },
        ..Options::default()
    })
    .await
}

/// A client of `app` over `https://localhost:PORT`, trusting `trusted`'s CA and presenting
/// `identity` when given.
fn tls_channel(app: &TestApp, trusted: &TestCa, identity: Option<&IssuedCertificate>) -> Channel {
    let url = format!("https://localhost:{}", app.grpc_address.port());
    let tls = ClientTlsSettings {
        ca_file: Some(trusted.cert_file.clone()),
        cert_file: identity.map(|issued| issued.cert_file.clone()),
        key_file: identity.map(|issued| issued.key_file.clone()),
        domain_name: None,
    };
    client_endpoint("command_api", &url, &tls)
        .expect("a valid TLS client configuration")
        .connect_lazy()
}

/// Adds a menu item over `channel` as a service: a write, so a refused call can be shown to
/// have changed nothing.
async fn add_menu_item(app: &TestApp, channel: Channel, sku: &str) -> Result<(), tonic::Status> {
    let bearer = app.bearer(Some(&app.token(Role::Service, "tls-test")));
    MenuServiceClient::with_interceptor(channel, bearer)
        .add_menu_item(pb::AddMenuItemRequest {
            idempotency_key: format!("tls-{sku}"),
            sku: sku.into(),
            name: "Flat white".into(),
            price: Some(pb::Money { cents: 400 }),
            category: pb::MenuCategory::Drink as i32,
        })
        .await
        .map(|_| ())
}

/// The status and its sources on one line (the handshake's reason sits in the sources).
fn described(status: &tonic::Status) -> String {
    error_chain(status)
}

#[tokio::test]
async fn a_tls_call_succeeds_and_a_plaintext_one_is_refused() {
    let ca = TestCa::new("orderpipe-test-ca");
    let app = spawn_tls_app(&ca, None).await;

    add_menu_item(&app, tls_channel(&app, &ca, None), "FLAT-WHITE")
        .await
        .expect("a client trusting the CA is served over TLS");
    assert_eq!(app.event_count().await, 1);

    // The same call in clear HTTP/2 to the TLS port.
    let refused = add_menu_item(&app, app.channel(), "CORTADO")
        .await
        .expect_err("a plaintext call to a TLS listener must fail");
    // The server answers a ClientHello only: the client sees its connection dropped.
    assert!(
        described(&refused).contains("connection error"),
        "{}",
        described(&refused)
    );
    assert_eq!(app.event_count().await, 1, "the refused call wrote nothing");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_servers_ca_fails_the_handshake() {
    let ca = TestCa::new("orderpipe-test-ca");
    let other = TestCa::new("someone-elses-ca");
    let app = spawn_tls_app(&ca, None).await;

    let refused = add_menu_item(&app, tls_channel(&app, &other, None), "FLAT-WHITE")
        .await
        .expect_err("a server certificate from an untrusted CA must be refused");
    let reason = described(&refused);
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{reason}");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn mtls_refuses_callers_without_a_certificate_from_the_client_ca() {
    let ca = TestCa::new("orderpipe-test-ca");
    let impostor_ca = TestCa::new("impostor-ca");
    let app = spawn_tls_app(&ca, Some(&ca)).await;

    // No client certificate at all.
    let anonymous = add_menu_item(&app, tls_channel(&app, &ca, None), "NO-CERT")
        .await
        .expect_err("mTLS must refuse a caller without a certificate");
    assert!(
        described(&anonymous).contains("CertificateRequired")
            || anonymous.code() == tonic::Code::Unavailable,
        "{}",
        described(&anonymous)
    );

    // A certificate signed by a CA the server does not take.
    let impostor = impostor_ca.client("flows");
    let untrusted = add_menu_item(&app, tls_channel(&app, &ca, Some(&impostor)), "IMPOSTOR")
        .await
        .expect_err("mTLS must refuse a certificate from another CA");
    assert_ne!(untrusted.code(), tonic::Code::Ok);
    assert_eq!(app.event_count().await, 0, "refused callers wrote nothing");

    // A certificate the client CA signed.
    let flows = ca.client("flows");
    add_menu_item(&app, tls_channel(&app, &ca, Some(&flows)), "FLAT-WHITE")
        .await
        .expect("a caller with a certificate from the client CA is served");
    assert_eq!(app.event_count().await, 1);
}

/// Starts an app with `tls` and returns why it refused to, and whether the database was
/// touched (it must not be: TLS is checked before the event store is opened).
async fn refused_start(tls: ServerTlsSettings) -> (StartupError, bool) {
    let prepared = prepare(Options {
        tls,
        ..Options::default()
    })
    .await;
    let error = match Application::build(prepared.settings).await {
        Ok(_) => panic!("the app started with bad TLS files"),
        Err(error) => error,
    };
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('events') IS NOT NULL")
        .fetch_one(&prepared.database.pool)
        .await
        .expect("query the catalogue");
    (error, migrated)
}

#[tokio::test]
async fn unreadable_or_mismatched_certificate_files_stop_the_start_with_the_setting_named() {
    let ca = TestCa::new("orderpipe-test-ca");
    let server = ca.server("command-api", &["localhost"]);
    let other = ca.server("other", &["localhost"]);

    // A key file that does not exist.
    let missing = ca.dir().join("missing-key.pem");
    let (error, migrated) = refused_start(ServerTlsSettings {
        cert_file: Some(server.cert_file.clone()),
        key_file: Some(missing.clone()),
        client_ca_file: None,
        self_signed: false,
    })
    .await;
    let message = error_chain(&error);
    assert!(
        matches!(&error, StartupError::Tls(GrpcTlsError::Unreadable { path, .. }) if *path == missing),
        "{message}"
    );
    assert!(message.contains("grpc.tls.key_file"), "{message}");
    assert!(!migrated, "a refused start must not touch the database");

    // Another certificate's key.
    let (error, migrated) = refused_start(ServerTlsSettings {
        cert_file: Some(server.cert_file.clone()),
        key_file: Some(other.key_file.clone()),
        client_ca_file: None,
        self_signed: false,
    })
    .await;
    let message = error_chain(&error);
    assert!(
        matches!(&error, StartupError::Tls(GrpcTlsError::KeyMismatch { .. })),
        "{message}"
    );
    assert!(
        message.contains("is not the private key of grpc.tls.cert_file"),
        "{message}"
    );
    assert!(!migrated);

    // A certificate file that holds a key, not a certificate.
    let (error, _) = refused_start(ServerTlsSettings {
        cert_file: Some(server.key_file.clone()),
        key_file: Some(server.key_file.clone()),
        client_ca_file: None,
        self_signed: false,
    })
    .await;
    assert!(
        matches!(&error, StartupError::Tls(GrpcTlsError::Certificate { .. })),
        "{}",
        error_chain(&error)
    );

    // A client CA without a server identity.
    let (error, _) = refused_start(ServerTlsSettings {
        cert_file: None,
        key_file: None,
        client_ca_file: Some(ca.cert_file.clone()),
        self_signed: false,
    })
    .await;
    assert!(
        matches!(&error, StartupError::Tls(GrpcTlsError::Incomplete(_))),
        "{}",
        error_chain(&error)
    );

    // A client CA file that is not PEM at all.
    let garbage: PathBuf = ca.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let (error, migrated) = refused_start(ServerTlsSettings {
        cert_file: Some(server.cert_file),
        key_file: Some(server.key_file),
        client_ca_file: Some(garbage),
        self_signed: false,
    })
    .await;
    let message = error_chain(&error);
    assert!(message.contains("grpc.tls.client_ca_file"), "{message}");
    assert!(!migrated);
}

#[tokio::test]
async fn a_self_signed_listener_serves_tls_that_only_a_non_verifying_peer_accepts() {
    // What an AWS ALB target runs: a certificate made at start, which the load balancer
    // encrypts to without checking. A client that checks refuses it at the handshake, which
    // shows the listener speaks TLS (a plaintext listener would never get that far).
    let app = spawn_app_with(Options {
        tls: ServerTlsSettings {
            self_signed: true,
            ..ServerTlsSettings::default()
        },
        ..Options::default()
    })
    .await;
    let ca = TestCa::new("orderpipe-test-ca");
    let refused = add_menu_item(&app, tls_channel(&app, &ca, None), "FLAT-WHITE")
        .await
        .expect_err("nobody's CA signed a self-signed certificate");
    let reason = described(&refused);
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    let plaintext = add_menu_item(&app, app.channel(), "CORTADO")
        .await
        .expect_err("a self-signed listener is still TLS only");
    assert!(
        described(&plaintext).contains("connection error"),
        "{}",
        described(&plaintext)
    );
    assert_eq!(app.event_count().await, 0);

    // Files and a start-up certificate at once is a mistake, refused.
    let server = ca.server("command-api", &["localhost"]);
    let (error, _) = refused_start(ServerTlsSettings {
        cert_file: Some(server.cert_file),
        key_file: Some(server.key_file),
        client_ca_file: None,
        self_signed: true,
    })
    .await;
    assert!(
        error_chain(&error).contains("grpc.tls.self_signed"),
        "{}",
        error_chain(&error)
    );
}

#[tokio::test]
async fn the_load_tools_client_completes_commands_over_mtls() {
    let ca = TestCa::new("orderpipe-test-ca");
    let app = spawn_tls_app(&ca, Some(&ca)).await;
    let tool = ca.client("local-tools");
    // What `fault-run --ca-file … --cert-file … --key-file …` builds (loadgen, compare and
    // budget take the same options, through the same `GrpcClientTls`).
    let tls = GrpcClientTls::new(
        Some(ca.cert_file.clone()),
        Some(tool.cert_file.clone()),
        Some(tool.key_file.clone()),
    );
    let address = format!("localhost:{}", app.grpc_address.port());
    let give_up_at = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let load = Load::new(&[address], &tls, app.keys.issuer().clone(), give_up_at).unwrap();

    load.open_stores().await.unwrap();

    let acknowledged = {
        let ledger = load.ledger();
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.unanswered.is_empty() && ledger.told_failed.is_empty(),
            "unanswered {:?}, failed {}",
            ledger.unanswered,
            ledger.told_failed.len()
        );
        ledger.acks.len()
    };
    assert!(acknowledged > 0, "the menu and stock were put in place");
    assert!(app.event_count().await > 0);
}
