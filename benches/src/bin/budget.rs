//! `budget`: the fixed workload `scripts/profile.sh budget` measures the command API under: a
//! number of orders (place, accept, capture the payment, prepare, ready, complete: six commands
//! each) sent by a few concurrent clients to a running command API, counted exactly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auth_tokens::{SigningKey, TokenIssuer};
use benches::api_flow::{self, ApiClients, CallObserver, Fate};
use clap::Parser;
use service_kit::cli::GrpcClientTls;
use service_kit::grpc_tls::client_endpoint;
use tonic::Code;

/// Sends a fixed number of orders to a running command API and prints how many commands were
/// acknowledged and how many failed.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The command API's gRPC address: `http://HOST:PORT`, or `https://HOST:PORT` for TLS.
    #[arg(long)]
    address: String,
    /// With an `https://` address: the CA and the client certificate.
    #[command(flatten)]
    tls: GrpcClientTls,
    /// The token issuer's ES256 private key (PEM), whose public key the command API's JWKS holds.
    #[arg(long = "private-key", env = "ORDERPIPE_TOKEN_SIGNING_KEY")]
    private_key: PathBuf,
    /// Orders to run (six commands each).
    #[arg(long, default_value_t = 100)]
    orders: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// First put the workload's items on the menu (once per database).
    #[arg(long)]
    seed: bool,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl CallObserver for Counts {
    fn observe(&self, _rpc: &'static str, _elapsed: Duration, outcome: Result<(), Code>) {
        let counter = if outcome.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let endpoint = client_endpoint("budget", &cli.address, &cli.tls.settings())?;
    let clients = cli.clients.max(1);
    let channels = api_flow::channels(&endpoint, clients);
    let key = SigningKey::from_pem_file(&cli.private_key)?;
    let issuer = TokenIssuer::new(&key, "orderpipe", "orderpipe-api");
    if cli.seed {
        ApiClients::new(channels[0].clone(), &issuer)?
            .open_stores(&["bench-store".to_owned()], 1)
            .await
            .context("seeding the menu")?;
    }
    let counts = Arc::new(Counts::default());
    let next_order = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let mut api = ApiClients::new(channels[client % channels.len()].clone(), &issuer);
            let (counts, next_order, orders) = (counts.clone(), next_order.clone(), cli.orders);
            tokio::spawn(async move {
                let api = api.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                while next_order.fetch_add(1, Ordering::Relaxed) < orders as u64 {
                    // A failed call is counted; the order stops there and the next one starts.
                    let _ = api
                        .run_order(
                            Fate::OrderOnly,
                            "bench-store",
                            "bench-customer",
                            counts.as_ref(),
                            |_, _| {},
                        )
                        .await;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    println!(
        "commands={} errors={}",
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
    Ok(())
}
