//! The pipeline under load as separate processes (command-api, relay, projectors), so each one's
//! peak memory is its own: started from built binaries on free loopback ports, configured through
//! `ORDERPIPE_*` variables to use the run's fresh resources, stopped with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use test_support::TestTokenKeys;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::memory::{memory_of, MemoryUsage};
use crate::resources::PipelineResources;
use read_models::InventoryMarker;

/// How long a process may take to open its port.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM before it is killed.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(20);
/// `relay.max_commits_per_record` of the run's relay: every reader of a run is this build, which
/// unpacks (the relay's own default, 1, is for deployments whose readers may be older).
const COMMITS_PER_RECORD: &str = "100";

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A binary is missing.
    #[error("{0} not found: build it first (`cargo build --release -p command-api -p relay -p projectors`)")]
    MissingBinary(PathBuf),
    /// A process could not be spawned.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The process.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A process exited or never opened its port.
    #[error("{name} did not start listening on {address} (see {log})")]
    NotListening {
        /// The process.
        name: &'static str,
        /// The port it should have opened.
        address: SocketAddr,
        /// Its log file.
        log: String,
    },
    /// No free port, or the log directory is not writable.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One running process of the pipeline, started from its built binary.
pub struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    /// Starts `<bin_dir>/<name> <command>` with `env` (on top of this process's environment,
    /// without `ORDERPIPE_CONFIG`), logging to `log`, and waits until it listens on `port`.
    pub async fn start(
        bin_dir: &Path,
        name: &'static str,
        command: &str,
        env: Vec<(&str, String)>,
        log: &Path,
        port: SocketAddr,
    ) -> Result<Self, ClusterError> {
        let child = spawn(bin_dir, name, command, env, log)?;
        let process = Self { name, child };
        if !wait_for_port(port).await {
            process.stop().await;
            return Err(ClusterError::NotListening {
                name,
                address: port,
                log: log.display().to_string(),
            });
        }
        Ok(process)
    }

    /// Its memory now, and its peak so far.
    pub fn memory(&self) -> Option<MemoryUsage> {
        self.child.id().and_then(memory_of)
    }

    /// Stops it with SIGTERM, killing it if it does not exit in time.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // tokio's Child can only SIGKILL; a graceful stop needs SIGTERM.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(SHUTDOWN_PATIENCE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} did not stop after SIGTERM; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

/// The command API, the relay and the projectors, running.
pub struct Cluster {
    /// The command API's gRPC address.
    pub grpc_address: SocketAddr,
    /// The command API's admin address (`/metrics`).
    pub api_admin: SocketAddr,
    /// The relay's admin address (`/metrics`).
    pub relay_admin: SocketAddr,
    /// The first projectors process's admin address (`/metrics`).
    pub projectors_admin: SocketAddr,
    /// Every projectors process's admin address, the first one first.
    pub projectors_admins: Vec<SocketAddr>,
    /// The key pair whose JWKS the command API verifies tokens with (the load mints with it).
    pub keys: TestTokenKeys,
    processes: Vec<Process>,
}

impl Cluster {
    /// Starts the command API, the relay (lingering `relay_linger_ms`, or its default) and
    /// `projectors` projectors processes (at least one; several share the shards' leases;
    /// recording the inventories' progress as `inventory_marker` says) from `bin_dir` on
    /// `resources`, logging to `log_dir`.
    pub async fn start(
        bin_dir: &Path,
        log_dir: &Path,
        resources: &PipelineResources,
        projectors: usize,
        relay_linger_ms: Option<u64>,
        inventory_marker: InventoryMarker,
    ) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(log_dir)?;
        let keys = TestTokenKeys::new();
        let grpc_address = free_address()?;
        let api_admin = free_address()?;
        let relay_admin = free_address()?;
        let projectors_admins = (0..projectors.max(1))
            .map(|_| free_address())
            .collect::<Result<Vec<_>, _>>()?;
        let projectors_admin = projectors_admins[0];
        let common = |admin: SocketAddr| {
            vec![
                ("ORDERPIPE_DATABASE__URL", resources.events_db.url.clone()),
                ("ORDERPIPE_ADMIN__HOST", admin.ip().to_string()),
                ("ORDERPIPE_ADMIN__PORT", admin.port().to_string()),
                ("ORDERPIPE_LOG__FILTER", "warn".to_owned()),
                (
                    "ORDERPIPE_KINESIS__STREAM_NAME",
                    resources.stream.name.clone(),
                ),
            ]
        };
        let api_env = command_api_env(
            &resources.events_db.url,
            grpc_address,
            api_admin,
            &keys.jwks_url(),
            32,
        );
        let projectors_env = |admin: SocketAddr| {
            let mut env = common(admin);
            env.extend([
                (
                    "ORDERPIPE_DYNAMODB__INVENTORY_MARKER",
                    inventory_marker.as_str().to_owned(),
                ),
                (
                    "ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE",
                    resources.active_orders.orders.clone(),
                ),
                (
                    "ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE",
                    resources.active_orders.stores.clone(),
                ),
                (
                    "ORDERPIPE_DYNAMODB__LEASES_TABLE",
                    resources.leases_table.clone(),
                ),
                (
                    "ORDERPIPE_DYNAMODB__PARKED_TABLE",
                    resources.parked_table.clone(),
                ),
                (
                    "ORDERPIPE_SQS__PROJECTOR_DLQ_URL",
                    resources.dead_letter_queue_url.clone(),
                ),
                (
                    "ORDERPIPE_HISTORY__DATABASE__URL",
                    resources.views_db.url.clone(),
                ),
                (
                    "ORDERPIPE_ANALYTICS__DATABASE__URL",
                    resources.views_db.url.clone(),
                ),
            ]);
            env
        };

        let mut relay_env = common(relay_admin);
        relay_env.push((
            "ORDERPIPE_RELAY__MAX_COMMITS_PER_RECORD",
            COMMITS_PER_RECORD.to_owned(),
        ));
        if let Some(linger) = relay_linger_ms {
            relay_env.push(("ORDERPIPE_RELAY__MAX_LINGER_MS", linger.to_string()));
        }

        let mut cluster = Self {
            grpc_address,
            api_admin,
            relay_admin,
            projectors_admin,
            projectors_admins: projectors_admins.clone(),
            keys,
            processes: Vec::new(),
        };
        let mut starts = vec![
            (
                "command-api",
                "serve",
                api_env,
                grpc_address,
                "command-api".to_owned(),
            ),
            ("relay", "run", relay_env, relay_admin, "relay".to_owned()),
        ];
        for (index, admin) in projectors_admins.into_iter().enumerate() {
            let log_name = projectors_name(index);
            starts.push(("projectors", "run", projectors_env(admin), admin, log_name));
        }
        for (name, command, env, port, log_name) in starts {
            let log = log_dir.join(format!("{log_name}.log"));
            match Process::start(bin_dir, name, command, env, &log, port).await {
                Ok(process) => cluster.processes.push(process),
                Err(error) => {
                    cluster.stop().await;
                    return Err(error);
                }
            }
        }
        Ok(cluster)
    }

    /// Each process's memory now (and its peak so far), by name.
    pub fn memory(&self) -> Vec<(&'static str, Option<MemoryUsage>)> {
        self.processes
            .iter()
            .map(|p| (p.name, p.memory()))
            .collect()
    }

    /// Saves each process's `/metrics` as `<dir>/<process>.metrics` (the store's commit times
    /// and batch sizes, the relay's publish times: where the time went).
    pub async fn save_metrics(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let projectors = self
            .projectors_admins
            .iter()
            .enumerate()
            .map(|(index, &address)| (projectors_name(index), address));
        for (name, address) in [
            ("command-api".to_owned(), self.api_admin),
            ("relay".to_owned(), self.relay_admin),
        ]
        .into_iter()
        .chain(projectors)
        {
            if let Some(body) = fetch_metrics(address).await {
                std::fs::write(dir.join(format!("{name}.metrics")), body)?;
            }
        }
        Ok(())
    }

    /// Stops every process (SIGTERM, in reverse start order), killing what does not exit in time.
    pub async fn stop(mut self) {
        while let Some(process) = self.processes.pop() {
            process.stop().await;
        }
    }
}

/// The name of the `index`th projectors process's log and metrics files: the first keeps the
/// plain name, so a one-process run's files are named as before.
fn projectors_name(index: usize) -> String {
    match index {
        0 => "projectors".to_owned(),
        _ => format!("projectors-{}", index + 1),
    }
}

/// The command API's settings for a benchmark: its database, listeners and token keys' JWKS, quiet
/// logs, and a pool of `connections` (one per concurrent client, so the pool is not what the
/// figures measure).
pub fn command_api_env(
    database_url: &str,
    grpc: SocketAddr,
    admin: SocketAddr,
    jwks_url: &str,
    connections: usize,
) -> Vec<(&'static str, String)> {
    vec![
        ("ORDERPIPE_DATABASE__URL", database_url.to_owned()),
        (
            "ORDERPIPE_DATABASE__MAX_CONNECTIONS",
            connections.to_string(),
        ),
        ("ORDERPIPE_ADMIN__HOST", admin.ip().to_string()),
        ("ORDERPIPE_ADMIN__PORT", admin.port().to_string()),
        ("ORDERPIPE_GRPC__HOST", grpc.ip().to_string()),
        ("ORDERPIPE_GRPC__PORT", grpc.port().to_string()),
        ("ORDERPIPE_AUTH__JWKS_URL", jwks_url.to_owned()),
        ("ORDERPIPE_LOG__FILTER", "warn".to_owned()),
    ]
}

fn spawn(
    bin_dir: &Path,
    name: &'static str,
    args: &str,
    env: Vec<(&str, String)>,
    log: &Path,
) -> Result<Child, ClusterError> {
    let binary = bin_dir.join(name);
    if !binary.is_file() {
        return Err(ClusterError::MissingBinary(binary));
    }
    let log_file = std::fs::File::create(log)?;
    Command::new(&binary)
        .arg(args)
        .env_remove("ORDERPIPE_CONFIG")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ClusterError::Spawn { name, source })
}

/// A loopback address with a port free right now (the OS's ephemeral range, so never one of the
/// fixed ports of `scripts/up.sh`).
pub fn free_address() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

async fn wait_for_port(address: SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if TcpStream::connect(address).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Fetches `http://<address>/metrics` and returns the largest value of the samples of `metric`
/// (any labels); `None` when unreachable or absent. A plain HTTP/1.0 GET: the admin endpoint is
/// ours and answers it, and no HTTP client crate is needed for one request a second.
pub async fn scrape_max(address: SocketAddr, metric: &str) -> Option<f64> {
    max_sample(&fetch_metrics(address).await?, metric)
}

/// The `quantile` (0 to 1) of histogram `metric` on `http://<address>/metrics`, interpolated
/// within its buckets as Prometheus's `histogram_quantile` does (so only as fine as the
/// buckets); `None` when unreachable, absent or empty.
pub async fn scrape_quantile(address: SocketAddr, metric: &str, quantile: f64) -> Option<f64> {
    histogram_quantile(&fetch_metrics(address).await?, metric, quantile)
}

/// The `/metrics` bodies of every address that answers, one after the other (sums and
/// histograms over them add the processes up); `None` when none answers.
pub async fn metrics_of(addresses: &[SocketAddr]) -> Option<String> {
    let mut bodies = Vec::new();
    for &address in addresses {
        bodies.extend(fetch_metrics(address).await);
    }
    (!bodies.is_empty()).then(|| bodies.join("\n"))
}

/// Fetches `http://<address>/metrics` and returns the sum of the samples of `metric` whose
/// labels include `label` (`("", "")`: every sample); `None` when unreachable or absent.
pub async fn scrape_sum(address: SocketAddr, metric: &str, label: (&str, &str)) -> Option<f64> {
    sum_samples(&fetch_metrics(address).await?, metric, label)
}

/// [`scrape_sum`] over the series that carry every one of `labels`.
pub async fn scrape_sum_of(
    address: SocketAddr,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    sum_samples_of(&fetch_metrics(address).await?, metric, labels)
}

/// The body of `http://<address>/metrics`.
async fn fetch_metrics(address: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(body)
}

fn max_sample(exposition: &str, metric: &str) -> Option<f64> {
    samples(exposition, metric)
        .map(|(_, value)| value)
        .reduce(f64::max)
}

fn histogram_quantile(exposition: &str, metric: &str, quantile: f64) -> Option<f64> {
    labelled_histogram_quantile(exposition, metric, ("", ""), quantile)
}

/// The `quantile` of histogram `metric` over its series whose labels include `label`
/// (`("", "")`: all), their buckets added up (several processes' expositions one after the
/// other count as one histogram).
pub fn labelled_histogram_quantile(
    exposition: &str,
    metric: &str,
    (name, value): (&str, &str),
    quantile: f64,
) -> Option<f64> {
    let prefix = format!("{metric}_bucket{{");
    let wanted = format!("{name}=\"{value}\"");
    let mut series: Vec<(f64, f64)> = exposition
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter(|line| name.is_empty() || line.contains(&wanted))
        .filter_map(|line| {
            let bound = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, line.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    series.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Cumulative counts of the same bound in several series add up.
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (bound, count) in series {
        match buckets.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => buckets.push((bound, count)),
        }
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = quantile * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Past the largest bucket: all that can be said is "more than it".
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        (lower, below) = (bound, count);
    }
    None
}

/// The sum of the samples of `metric` in `exposition` whose labels include `label` (`("", "")`:
/// every sample); `None` when absent.
pub fn sum_samples(exposition: &str, metric: &str, (name, value): (&str, &str)) -> Option<f64> {
    let labels: &[(&str, &str)] = if name.is_empty() {
        &[]
    } else {
        &[(name, value)]
    };
    sum_samples_of(exposition, metric, labels)
}

/// [`sum_samples`] over the series that carry every one of `labels`.
pub fn sum_samples_of(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    samples(exposition, metric)
        .filter(|(series, _)| wanted.iter().all(|label| series.contains(label)))
        .map(|(_, value)| value)
        .reduce(|a, b| a + b)
}

/// The samples of `metric`: each line's labels (`{...}`, or empty) and value.
fn samples<'e>(exposition: &'e str, metric: &'e str) -> impl Iterator<Item = (&'e str, f64)> {
    exposition.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let (labels, value) = rest.rsplit_once(' ')?;
        Some((labels, value.parse::<f64>().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_interpolated_within_its_bucket() {
        let body = "h_bucket{le=\"0.01\"} 50\nh_bucket{le=\"0.02\"} 90\nh_bucket{le=\"+Inf\"} 100\nh_sum 1\nh_count 100\n";
        let p50 = histogram_quantile(body, "h", 0.5).expect("p50");
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p70 = histogram_quantile(body, "h", 0.7).expect("p70");
        assert!((p70 - 0.015).abs() < 1e-9, "{p70}");
        assert_eq!(
            histogram_quantile(body, "h", 0.99),
            Some(0.02),
            "beyond the last bound"
        );
        assert_eq!(histogram_quantile(body, "missing", 0.5), None);
    }

    #[test]
    fn the_largest_sample_of_a_metric_is_found_among_its_labels() {
        let body = "# TYPE lag gauge\nlag{shard=\"a\"} 12\nlag{shard=\"b\"} 340\nlag_total 9999\n";
        assert_eq!(max_sample(body, "lag"), Some(340.0));
        assert_eq!(max_sample(body, "missing"), None);
    }

    #[test]
    fn samples_with_a_label_are_summed() {
        let body = "calls{projection=\"a\",kind=\"write\"} 5\ncalls{projection=\"b\",kind=\"write\"} 7\ncalls{projection=\"a\",kind=\"read\"} 2\ncalls_total 100\n";
        assert_eq!(sum_samples(body, "calls", ("kind", "write")), Some(12.0));
        assert_eq!(sum_samples(body, "calls", ("", "")), Some(14.0));
        assert_eq!(sum_samples(body, "calls", ("kind", "delete")), None);
        assert_eq!(
            sum_samples_of(body, "calls", &[("projection", "a"), ("kind", "write")]),
            Some(5.0)
        );
    }
}
