//! The soak-and-fault run: orderpipe's real processes under load while processes are killed and
//! servers restarted, then the contract checked (see `docs/reliability.md`).
//!
//! - [`fleet`]: the processes, started, killed (SIGKILL) and restarted;
//! - [`load`]: clients that retry with their idempotency keys, and the ledger of what was
//!   acknowledged;
//! - [`faults`]: the seeded schedule and the injection;
//! - [`checks`]: what must hold once the pipeline settles;
//! - [`report`]: the summary.

pub mod checks;
pub mod faults;
pub mod fleet;
pub mod load;
pub mod report;
mod settings;

pub use settings::RunSettings;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use command_api::auth::TokenAuthority;
use command_api::configuration::AuthSettings;
use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::faults::Fault;
use crate::fleet::{free_port, Fleet, ProcessSpec};
use crate::load::{Ledger, Load};
use crate::report::RunReport;

/// The servers of the run's stack a fault may restart (moto is not one: it keeps SQS in memory
/// only, so a restart loses every queue; that is the emulator, not the pipeline).
const RESTARTABLE_SERVERS: [&str; 3] = ["postgres", "kinesis", "dynamodb"];

/// A fault run, its processes defined and not started yet.
pub struct Run {
    settings: RunSettings,
    seed: u64,
    fleet: Fleet,
    grpc_port: u16,
    tokens: TokenAuthority,
    events: PgPool,
    stream_name: String,
}

fn required_env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run the fault run through scripts/fault-run.sh")
    })
}

impl Run {
    /// Defines the processes on free ports of their own, with settings from the environment
    /// (the run's stack) plus their ports, worker ids and a signing secret made for this run.
    pub async fn build(settings: RunSettings) -> anyhow::Result<Self> {
        let seed = settings.seed.unwrap_or_else(|| fastrand::u64(..));
        let log_dir = settings.out_dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let auth = AuthSettings {
            jwt_secret: SecretString::from(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )),
            issuer: "orderpipe".into(),
            audience: "orderpipe-api".into(),
        };
        let grpc_port = free_port()?;
        let specs = process_specs(&settings.bin_dir, grpc_port, &auth)?;
        let events = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&required_env("ORDERPIPE_DATABASE__URL")?)?;
        Ok(Self {
            seed,
            fleet: Fleet::new(specs, &log_dir),
            grpc_port,
            tokens: TokenAuthority::new(&auth),
            events,
            stream_name: required_env("ORDERPIPE_KINESIS__STREAM_NAME")?,
            settings,
        })
    }

    /// Starts the processes, runs the load and the faults, waits for the pipeline to settle,
    /// checks, stops the processes and writes the report.
    pub async fn run(mut self) -> anyhow::Result<RunReport> {
        let started_at = OffsetDateTime::now_utc().format(&Rfc3339)?;
        println!(
            "fault run: seed {}, {} s, {} faults, {} clients; logs in {}",
            self.seed,
            self.settings.seconds,
            self.settings.faults,
            self.settings.clients,
            self.settings.out_dir.join("logs").display()
        );
        self.fleet.start_all().await?;
        let give_up_at = Instant::now() + self.settings.duration() + self.settings.settle_timeout();
        let load = Load::new(
            &format!("127.0.0.1:{}", self.grpc_port),
            self.tokens.clone(),
            give_up_at,
        )?;
        load.open_stores().await?;

        let start = Instant::now();
        let until = start + self.settings.duration();
        let clients: Vec<_> = (0..self.settings.clients)
            .map(|client| {
                let seed = self.seed.wrapping_add(client as u64 + 1);
                tokio::spawn(load.clone().run_client(client, seed, until))
            })
            .collect();

        let mut rng = fastrand::Rng::with_seed(self.seed);
        let plan = faults::schedule(
            &self.fault_kinds(),
            self.settings.faults,
            self.settings.duration(),
            &mut rng,
        );
        let injected = faults::inject(
            plan,
            start,
            &mut self.fleet,
            &self.settings.restart_command,
            &mut rng,
        )
        .await?;
        // Clients finish the order in hand after the load's end; keep supervising meanwhile.
        while !clients.iter().all(|c| c.is_finished()) {
            self.fleet.restart_exited()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for client in clients {
            client.await??;
        }
        let load_seconds = start.elapsed().as_secs_f64();
        println!("[{load_seconds:>7.1}s] load done; waiting for the pipeline to settle");

        let ledger = std::mem::take(&mut *load.ledger().lock().unwrap_or_else(|p| p.into_inner()));
        let settled_from = Instant::now();
        self.fleet.wait_all_ready().await?;
        let verdicts = self
            .check(&ledger, settled_from + self.settings.settle_timeout())
            .await?;
        let settle_seconds = settled_from.elapsed().as_secs_f64();
        self.fleet.stop_all(Duration::from_secs(15)).await;

        let report = RunReport {
            started_at,
            seed: self.seed,
            load_seconds,
            clients: self.settings.clients,
            commands_acknowledged: ledger.acks.len(),
            acknowledged_after_retry: ledger.acks.iter().filter(|a| a.attempts > 1).count(),
            retries: ledger.retries,
            internal_errors: ledger.internal_errors,
            refused: ledger.refused,
            unanswered: ledger.unanswered,
            orders: ledger.orders,
            faults: injected,
            unexpected_exits: self
                .fleet
                .unexpected_exits()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            settle_seconds,
            verdicts,
        };
        self.write(&report)?;
        Ok(report)
    }

    /// Every process killed, and every server restarted unless left out.
    fn fault_kinds(&self) -> Vec<Fault> {
        let mut kinds: Vec<Fault> = self.fleet.names().into_iter().map(Fault::Kill).collect();
        kinds.extend(
            RESTARTABLE_SERVERS
                .iter()
                .filter(|server| !(self.settings.no_postgres_restart && **server == "postgres"))
                .map(|server| Fault::Restart((*server).to_owned())),
        );
        kinds
    }

    async fn check(
        &self,
        ledger: &Ledger,
        deadline: Instant,
    ) -> anyhow::Result<Vec<checks::Verdict>> {
        // The relay empties the outbox first; the projections follow.
        while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(&self.events)
            .await
            .map_or(true, |waiting| waiting > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut verdicts = checks::projections_equal_a_fresh_replay(
            &self.settings.bin_dir.join("replay"),
            deadline,
        )
        .await;
        verdicts.push(checks::every_event_reached_kinesis(&self.events, &self.stream_name).await?);
        verdicts
            .push(checks::store_holds_every_acknowledged_command_once(&self.events, ledger).await?);
        verdicts.extend(checks::nothing_happened_twice(&self.events, ledger).await?);
        Ok(verdicts)
    }

    fn write(&self, report: &RunReport) -> anyhow::Result<()> {
        let out = &self.settings.out_dir;
        std::fs::write(out.join("report.md"), report.to_markdown())?;
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(report)?,
        )?;
        Ok(())
    }
}

/// The pipeline's processes: one entry each. Two projector workers share the shards, so a
/// killed one's leases are taken over while it is away.
fn process_specs(
    bin_dir: &std::path::Path,
    grpc_port: u16,
    auth: &AuthSettings,
) -> anyhow::Result<Vec<ProcessSpec>> {
    use secrecy::ExposeSecret;
    let binary = |name: &str| -> PathBuf { bin_dir.join(name) };
    let admin = |port: u16| ("ORDERPIPE_ADMIN__PORT".to_owned(), port.to_string());
    let api_admin = free_port()?;
    let mut specs = vec![ProcessSpec {
        name: "command-api".into(),
        binary: binary("command-api"),
        args: vec!["serve".into()],
        env: vec![
            ("ORDERPIPE_GRPC__PORT".into(), grpc_port.to_string()),
            admin(api_admin),
            (
                "ORDERPIPE_AUTH__JWT_SECRET".into(),
                auth.jwt_secret.expose_secret().to_owned(),
            ),
        ],
        ready_port: grpc_port,
    }];
    let relay_admin = free_port()?;
    specs.push(ProcessSpec {
        name: "relay".into(),
        binary: binary("relay"),
        args: vec!["run".into()],
        env: vec![admin(relay_admin)],
        ready_port: relay_admin,
    });
    for worker in ["projectors-a", "projectors-b"] {
        let port = free_port()?;
        specs.push(ProcessSpec {
            name: worker.into(),
            binary: binary("projectors"),
            args: vec!["run".into()],
            env: vec![
                admin(port),
                ("ORDERPIPE_RUNTIME__WORKER_ID".into(), worker.into()),
                // Short leases: a killed worker's shards move to the other within seconds.
                ("ORDERPIPE_RUNTIME__LEASE_DURATION_MS".into(), "3000".into()),
                (
                    "ORDERPIPE_RUNTIME__SHARD_SYNC_INTERVAL_MS".into(),
                    "5000".into(),
                ),
            ],
            ready_port: port,
        });
    }
    Ok(specs)
}
