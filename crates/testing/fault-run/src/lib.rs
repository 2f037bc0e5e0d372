//! The soak-and-fault run: orderpipe's real processes under load while processes are killed and
//! servers restarted, then the contract checked (see `docs/reliability.md`).
//!
//! - [`fleet`]: the processes, started, killed (SIGKILL), paused (SIGSTOP) and restarted;
//! - [`load`]: clients that retry with their idempotency keys, and the ledger of what was
//!   acknowledged;
//! - [`faults`]: the seeded schedule and the injection;
//! - [`timeouts`]: the bounds the processes run with, and the fault lengths derived from them;
//! - [`probe`]: a writer timing its commits on one command-api while the other is stalled;
//! - [`checks`]: what must hold once the pipeline settles ([`flow_checks`]: the flows' part);
//! - [`report`]: the summary.

pub mod checks;
pub mod faults;
pub mod fleet;
pub mod flow_checks;
pub mod load;
pub mod probe;
pub mod report;
mod settings;
pub mod timeouts;

pub use settings::RunSettings;
pub use timeouts::RunTimeouts;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use auth_tokens::{Role, TokenIssuer};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use service_kit::cli::GrpcClientTls;
use test_support::{CuttableProxy, TestTokenKeys};

use crate::faults::{Fault, Targets};
use crate::fleet::{free_port, Fleet, ProcessSpec};
use crate::load::{Ledger, Load};
use crate::report::RunReport;

/// The servers of the run's stack a fault may restart (moto is not one: it keeps SQS in memory
/// only, so a restart loses every queue; that is the emulator, not the pipeline).
const RESTARTABLE_SERVERS: [&str; 3] = ["postgres", "kinesis", "dynamodb"];

/// The command-api that reaches PostgreSQL through the run's proxy (paused and cut off).
const API_BEHIND_PROXY: &str = "command-api-a";
/// The command-api that reaches PostgreSQL directly and keeps committing meanwhile.
const API_DIRECT: &str = "command-api-b";
/// The write probe's command-api (its index in the fleet's gRPC ports): the one that is never
/// paused or cut off.
const PROBED_API: usize = 1;
/// The flows worker (`flows run`: saga, notifications, payments, intake).
const FLOWS: &str = "flows";
/// The processes a pause may hit: a command-api, the relay, a projector and the flows.
const PAUSED: [&str; 4] = [API_BEHIND_PROXY, "relay", "projectors-a", FLOWS];
/// Receives of a payment request before SQS dead-letters it, when the queue does not say.
const DEFAULT_MAX_RECEIVE_COUNT: u32 = 5;

/// A fault run, its processes defined and not started yet.
pub struct Run {
    settings: RunSettings,
    seed: u64,
    fleet: Fleet,
    grpc_ports: Vec<u16>,
    database_proxies: HashMap<String, CuttableProxy>,
    timeouts: RunTimeouts,
    /// The run's token key pair: the command-apis get its JWKS, the flows a service token
    /// minted with it, and the run's clients mint their own.
    keys: TestTokenKeys,
    events: PgPool,
    stream_name: String,
    aws: aws_config::SdkConfig,
}

fn required_env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run the fault run through scripts/fault-run.sh")
    })
}

impl Run {
    /// The run's token issuer (its clients and end checks mint with it).
    fn issuer(&self) -> TokenIssuer {
        self.keys.issuer().clone()
    }

    /// Defines the processes on free ports of their own, with settings from the environment
    /// (the run's stack) plus their ports, worker ids and a token key pair made for this run.
    pub async fn build(settings: RunSettings) -> anyhow::Result<Self> {
        let seed = settings.seed.unwrap_or_else(|| fastrand::u64(..));
        let log_dir = settings.out_dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let keys = TestTokenKeys::new();
        // Valid for longer than any run: an expired token would be a refusal, not a fault.
        let flows_token = keys.issuer().mint(
            FLOWS_SUBJECT,
            Role::Service,
            None,
            Duration::from_secs(24 * 3600),
        )?;
        let database_url = required_env("ORDERPIPE_DATABASE__URL")?;
        let (database_address, _) = loopback_address(&database_url)?;
        let proxy = CuttableProxy::start(database_address).await;
        let proxied_url = database_url.replacen(
            &database_address.to_string(),
            &proxy.address().to_string(),
            1,
        );
        let aws = test_support::aws_test_config().await;
        let timeouts = run_timeouts(&aws).await;
        let ports = Ports {
            grpc: [free_port()?, free_port()?],
        };
        let specs = process_specs(
            &settings.bin_dir,
            &ports,
            &Credentials {
                jwks_url: keys.jwks_url(),
                flows_token,
            },
            &proxied_url,
            &timeouts,
            settings.payment_deadline(),
            &settings.tls,
        )?;
        let events = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&database_url)?;
        Ok(Self {
            seed,
            fleet: Fleet::new(specs, &log_dir),
            grpc_ports: ports.grpc.to_vec(),
            database_proxies: HashMap::from([(API_BEHIND_PROXY.to_owned(), proxy)]),
            timeouts,
            keys,
            events,
            stream_name: required_env("ORDERPIPE_KINESIS__STREAM_NAME")?,
            aws,
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
        println!("fault run: {}", self.timeouts);
        self.fleet.start_all().await?;
        let give_up_at = Instant::now() + self.settings.duration() + self.settings.settle_timeout();
        let addresses: Vec<String> = self
            .grpc_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let load = Load::new(&addresses, &self.settings.tls, self.issuer(), give_up_at)?;
        load.open_stores().await?;

        let start = Instant::now();
        let until = start + self.settings.duration();
        let clients: Vec<_> = (0..self.settings.clients)
            .map(|client| {
                let seed = self.seed.wrapping_add(client as u64 + 1);
                tokio::spawn(load.clone().run_client(client, seed, until))
            })
            .collect();

        let probe = tokio::spawn(probe::run(load.clone(), PROBED_API, start, until));
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let plan = faults::schedule(
            &self.fault_kinds(),
            &first_faults(),
            self.settings.faults,
            self.settings.duration(),
            &mut rng,
        );
        let command_apis = [API_BEHIND_PROXY.to_owned(), API_DIRECT.to_owned()];
        let injected = faults::inject(
            plan,
            start,
            Targets {
                fleet: &mut self.fleet,
                database_proxies: &self.database_proxies,
                command_apis: &command_apis,
                restart_command: &self.settings.restart_command,
                timings: self.timeouts.fault_timings(),
            },
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
        let probes = probe.await??;
        let load_seconds = start.elapsed().as_secs_f64();
        println!("[{load_seconds:>7.1}s] load done; waiting for the pipeline to settle");

        let ledger = std::mem::take(&mut *load.ledger().lock().unwrap_or_else(|p| p.into_inner()));
        let settled_from = Instant::now();
        self.fleet.wait_all_ready().await?;
        let mut verdicts = self
            .check(&ledger, settled_from + self.settings.settle_timeout())
            .await?;
        verdicts.push(probe::the_other_writer_kept_committing(
            &probes,
            &injected,
            &[
                Fault::Pause(API_BEHIND_PROXY.to_owned()).to_string(),
                Fault::NetworkCut(API_BEHIND_PROXY.to_owned()).to_string(),
            ],
            self.timeouts.other_writer_bound(),
        ));
        let settle_seconds = settled_from.elapsed().as_secs_f64();
        self.fleet.stop_all(Duration::from_secs(15)).await;

        let report = RunReport {
            started_at,
            seed: self.seed,
            timeouts: self.timeouts.to_string(),
            load_seconds,
            clients: self.settings.clients,
            commands_acknowledged: ledger.acks.len(),
            acknowledged_after_retry: ledger.acks.iter().filter(|a| a.attempts > 1).count(),
            retries: ledger.retries,
            internal_errors: ledger.internal_errors,
            client_deadlines: ledger.client_deadlines,
            cancelled_answers: ledger.cancelled_answers.len(),
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

    /// Every process killed; a command-api, the relay, a projector and the flows paused; the
    /// proxied command-api cut off from PostgreSQL; every command-api stopped for longer than the
    /// flows retry; every server restarted unless left out.
    fn fault_kinds(&self) -> Vec<Fault> {
        let mut kinds: Vec<Fault> = self.fleet.names().into_iter().map(Fault::Kill).collect();
        kinds.extend(
            PAUSED
                .iter()
                .map(|process| Fault::Pause((*process).to_owned())),
        );
        kinds.extend(self.database_proxies.keys().cloned().map(Fault::NetworkCut));
        kinds.push(Fault::ApiOutage);
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
        verdicts.push(
            checks::nothing_committed_that_a_client_was_told_failed(&self.events, ledger).await?,
        );
        verdicts.extend(checks::nothing_happened_twice(&self.events).await?);
        verdicts.extend(
            flow_checks::run(
                &self.events,
                &self.aws,
                ledger,
                &self.issuer(),
                &self.checked_api()?,
                self.settings.payment_deadline(),
                deadline,
            )
            .await?,
        );
        Ok(verdicts)
    }

    /// The command API the flows' checks read stock levels from (the last one).
    fn checked_api(&self) -> anyhow::Result<tonic::transport::Endpoint> {
        let port = self.grpc_ports.last().copied().unwrap_or_default();
        Ok(self
            .settings
            .tls
            .endpoint("fault-run", &format!("127.0.0.1:{port}"))?)
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

/// The first fault of each new kind comes in the first round, so that the short run
/// (`--seconds 90 --faults 8`) injects a pause, a silent network cut, a command-api outage and a
/// kill and a pause of the flows whatever the seed.
fn first_faults() -> Vec<Fault> {
    vec![
        Fault::Pause(API_BEHIND_PROXY.to_owned()),
        Fault::NetworkCut(API_BEHIND_PROXY.to_owned()),
        Fault::ApiOutage,
        Fault::Kill(FLOWS.to_owned()),
        Fault::Pause(FLOWS.to_owned()),
    ]
}

/// The address and database name of a `postgres://` URL on a numeric loopback address.
fn loopback_address(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let address = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .with_context(|| format!("the run's PostgreSQL is not on a numeric address: {url}"))?;
    Ok((
        address,
        options.get_database().unwrap_or_default().to_owned(),
    ))
}

/// The bounds the processes run with (see `process_specs`), and the payments queue's redrive
/// policy as the stack set it.
async fn run_timeouts(aws: &aws_config::SdkConfig) -> RunTimeouts {
    let max_receive_count = match std::env::var("ORDERPIPE_SQS__PAYMENTS_QUEUE_URL") {
        Ok(url) => aws_sdk_sqs::Client::new(aws)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .ok()
            .and_then(|out| {
                out.attributes?
                    .get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
                    .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
            })
            .and_then(|policy| {
                let count = &policy["maxReceiveCount"];
                count
                    .as_u64()
                    .or_else(|| count.as_str().and_then(|c| c.parse().ok()))
            })
            .and_then(|count| u32::try_from(count).ok())
            .unwrap_or(DEFAULT_MAX_RECEIVE_COUNT),
        Err(_) => DEFAULT_MAX_RECEIVE_COUNT,
    };
    RunTimeouts {
        projector_lease: Duration::from_millis(3_000),
        flows_lease: Duration::from_millis(3_000),
        api_request: Duration::from_millis(5_000),
        database_acquire: Duration::from_millis(3_000),
        database_statement: Duration::from_millis(5_000),
        database_lock: Duration::from_millis(2_000),
        database_idle_in_transaction: Duration::from_millis(5_000),
        writer_batch: Duration::from_millis(4_000),
        client_request: load::CLIENT_DEADLINE,
        flows_command_attempts: 3,
        flows_apply_attempts: 4,
        queue_retry_initial: Duration::from_millis(1_000),
        queue_retry_max: Duration::from_millis(4_000),
        queue_wait: Duration::from_secs(1),
        max_receive_count,
    }
}

/// The ports the run gives its servers.
struct Ports {
    /// command-api-a's and command-api-b's gRPC ports.
    grpc: [u16; 2],
}

/// The subject of the flows' service token: starts with the prefix the end checks tell the
/// flows' commands by.
const FLOWS_SUBJECT: &str = "flows-service";

/// What the processes authenticate with: the command-apis verify with the JWKS, the flows call
/// with a token the run minted. No process gets the private key.
struct Credentials {
    jwks_url: String,
    flows_token: String,
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// The pipeline's processes: one entry each. Two command-apis share the database, one through
/// the run's proxy (which a silent network cut stalls); two projector workers share the shards,
/// so a killed one's leases are taken over while it is away; the flows worker runs the saga,
/// notifications, payments and intake, calling command-api-b: while command-api-a is paused or
/// cut off the flows go on, so the clients' commands (not only their polling) meet the fault.
fn process_specs(
    bin_dir: &std::path::Path,
    ports: &Ports,
    credentials: &Credentials,
    proxied_database_url: &str,
    timeouts: &RunTimeouts,
    payment_deadline: Duration,
    command_api_tls: &GrpcClientTls,
) -> anyhow::Result<Vec<ProcessSpec>> {
    let binary = |name: &str| -> PathBuf { bin_dir.join(name) };
    let admin = |port: u16| ("ORDERPIPE_ADMIN__PORT".to_owned(), port.to_string());
    let jwks = (
        "ORDERPIPE_AUTH__JWKS_URL".to_owned(),
        credentials.jwks_url.clone(),
    );
    let mut specs = Vec::new();
    for (name, grpc_port) in [
        (API_BEHIND_PROXY, ports.grpc[0]),
        (API_DIRECT, ports.grpc[1]),
    ] {
        let mut env = vec![
            ("ORDERPIPE_GRPC__PORT".into(), grpc_port.to_string()),
            admin(free_port()?),
            jwks.clone(),
            (
                "ORDERPIPE_GRPC__REQUEST_TIMEOUT_MS".into(),
                millis(timeouts.api_request),
            ),
            (
                "ORDERPIPE_DATABASE__ACQUIRE_TIMEOUT_MS".into(),
                millis(timeouts.database_acquire),
            ),
            // The write side's bounds (issue 14), explicit so the fault lengths derived from
            // them hold whatever the built-in defaults become. The writer's own lock,
            // statement and idle bounds stay below the sessions' (their defaults).
            (
                "ORDERPIPE_DATABASE__SESSION__STATEMENT_TIMEOUT_MS".into(),
                millis(timeouts.database_statement),
            ),
            (
                "ORDERPIPE_DATABASE__SESSION__LOCK_TIMEOUT_MS".into(),
                millis(timeouts.database_lock),
            ),
            (
                "ORDERPIPE_DATABASE__SESSION__IDLE_IN_TRANSACTION_TIMEOUT_MS".into(),
                millis(timeouts.database_idle_in_transaction),
            ),
            (
                "ORDERPIPE_STORE__WRITER__BATCH_TIMEOUT_MS".into(),
                millis(timeouts.writer_batch),
            ),
        ];
        if name == API_BEHIND_PROXY {
            env.push((
                "ORDERPIPE_DATABASE__URL".into(),
                proxied_database_url.into(),
            ));
        }
        specs.push(ProcessSpec {
            name: name.into(),
            binary: binary("command-api"),
            args: vec!["serve".into()],
            env,
            ready_port: grpc_port,
        });
    }
    let relay_admin = free_port()?;
    specs.push(ProcessSpec {
        name: "relay".into(),
        binary: binary("relay"),
        args: vec!["run".into()],
        env: vec![
            admin(relay_admin),
            // Every reader of the run is this build, which unpacks: records may pack.
            (
                "ORDERPIPE_RELAY__MAX_COMMITS_PER_RECORD".into(),
                "100".into(),
            ),
        ],
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
                (
                    "ORDERPIPE_RUNTIME__LEASE_DURATION_MS".into(),
                    millis(timeouts.projector_lease),
                ),
                (
                    "ORDERPIPE_RUNTIME__SHARD_SYNC_INTERVAL_MS".into(),
                    "5000".into(),
                ),
            ],
            ready_port: port,
        });
    }
    let flows_admin = free_port()?;
    specs.push(ProcessSpec {
        name: FLOWS.into(),
        binary: binary("flows"),
        args: vec!["run".into()],
        env: vec![
            admin(flows_admin),
            (
                "ORDERPIPE_AUTH__SERVICE_TOKEN".into(),
                credentials.flows_token.clone(),
            ),
            (
                "ORDERPIPE_COMMAND_API__URL".into(),
                command_api_tls.url(&format!("127.0.0.1:{}", ports.grpc[1])),
            ),
            (
                "ORDERPIPE_COMMAND_API__ATTEMPTS".into(),
                timeouts.flows_command_attempts.to_string(),
            ),
            ("ORDERPIPE_RUNTIME__WORKER_ID".into(), FLOWS.into()),
            (
                "ORDERPIPE_RUNTIME__LEASE_DURATION_MS".into(),
                millis(timeouts.flows_lease),
            ),
            (
                "ORDERPIPE_RUNTIME__SHARD_SYNC_INTERVAL_MS".into(),
                "5000".into(),
            ),
            (
                "ORDERPIPE_RUNTIME__MAX_APPLY_ATTEMPTS".into(),
                timeouts.flows_apply_attempts.to_string(),
            ),
            (
                "ORDERPIPE_SQS__WAIT_TIME_SECONDS".into(),
                timeouts.queue_wait.as_secs().to_string(),
            ),
            (
                "ORDERPIPE_SQS__RETRY_INITIAL_MS".into(),
                millis(timeouts.queue_retry_initial),
            ),
            (
                "ORDERPIPE_SQS__RETRY_MAX_MS".into(),
                millis(timeouts.queue_retry_max),
            ),
            // The slow test card approves within a run's patience; a gateway call that hangs
            // (the timeout card) is given up after this and retried.
            ("ORDERPIPE_PAYMENTS__SANDBOX_SLOW_MS".into(), "1500".into()),
            (
                "ORDERPIPE_PAYMENTS__GATEWAY_TIMEOUT_MS".into(),
                "3000".into(),
            ),
            // A charge unresolved this long is given up: the order rejected, the stock
            // released, a late capture refunded (the end checks hold the flows to it).
            (
                "ORDERPIPE_PAYMENTS__CHARGE_DEADLINE_MS".into(),
                millis(payment_deadline),
            ),
        ],
        ready_port: flows_admin,
    });
    Ok(specs)
}
