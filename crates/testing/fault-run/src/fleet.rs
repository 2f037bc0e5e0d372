//! The pipeline's processes, run as real binaries: started, killed with SIGKILL, restarted with
//! the same settings, and restarted like a supervisor would when one exits on its own.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// How to run one process of the pipeline. Adding a process to the fault run is one more spec.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Its name in the report, the fault schedule and the log file name.
    pub name: String,
    /// The binary, e.g. `target/debug/relay`.
    pub binary: PathBuf,
    /// Its arguments, e.g. `["run"]`.
    pub args: Vec<String>,
    /// Settings on top of the inherited environment (ports, worker id).
    pub env: Vec<(String, String)>,
    /// A port on 127.0.0.1 that accepts connections once the process is up.
    pub ready_port: u16,
}

struct ManagedProcess {
    spec: ProcessSpec,
    child: Option<Child>,
    unexpected_exits: u32,
}

/// Every process of the run.
pub struct Fleet {
    processes: Vec<ManagedProcess>,
    log_dir: PathBuf,
}

/// How long a process may take to accept connections after it is started.
const START_PATIENCE: Duration = Duration::from_secs(90);

impl Fleet {
    /// A fleet of `specs`, none started yet; logs go to `log_dir/<name>.log`.
    pub fn new(specs: Vec<ProcessSpec>, log_dir: &Path) -> Self {
        Self {
            processes: specs
                .into_iter()
                .map(|spec| ManagedProcess {
                    spec,
                    child: None,
                    unexpected_exits: 0,
                })
                .collect(),
            log_dir: log_dir.to_owned(),
        }
    }

    /// The processes' names, in spec order.
    pub fn names(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.spec.name.clone()).collect()
    }

    /// Starts every process and waits until each accepts connections.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        for index in 0..self.processes.len() {
            self.start(index)?;
        }
        for index in 0..self.processes.len() {
            self.wait_ready(index).await?;
        }
        Ok(())
    }

    /// Kills `name` with SIGKILL (no shutdown path runs), waits `pause`, starts it again.
    pub async fn kill_and_restart(&mut self, name: &str, pause: Duration) -> anyhow::Result<()> {
        let index = self.index_of(name)?;
        if let Some(mut child) = self.processes[index].child.take() {
            child.kill().with_context(|| format!("kill -9 {name}"))?;
            child.wait().with_context(|| format!("reaping {name}"))?;
        }
        tokio::time::sleep(pause).await;
        self.start(index)
    }

    /// Stops `name` with SIGSTOP for `how_long`, then lets it go on with SIGCONT. Meanwhile the
    /// others are supervised as usual. The stopped process keeps its sockets open (the kernel
    /// still acknowledges its TCP traffic), its leases and its locks: only timeouts can tell.
    pub async fn pause(&mut self, name: &str, how_long: Duration) -> anyhow::Result<()> {
        let index = self.index_of(name)?;
        let Some(pid) = self.processes[index].child.as_ref().map(Child::id) else {
            bail!("{name} is not running: nothing to pause");
        };
        signal(pid, "STOP").with_context(|| format!("SIGSTOP {name}"))?;
        let until = tokio::time::Instant::now() + how_long;
        while tokio::time::Instant::now() < until {
            // A stopped child is not an exited one: try_wait leaves it alone.
            self.restart_exited()?;
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        }
        signal(pid, "CONT").with_context(|| format!("SIGCONT {name}"))
    }

    /// Stops `name` gracefully (SIGTERM, SIGKILL after `grace`) and leaves it stopped until
    /// [`Fleet::start_again`].
    pub async fn stop(&mut self, name: &str, grace: Duration) -> anyhow::Result<()> {
        let index = self.index_of(name)?;
        if let Some(mut child) = self.processes[index].child.take() {
            let _ = signal(child.id(), "TERM");
            let deadline = tokio::time::Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            child.wait().with_context(|| format!("reaping {name}"))?;
        }
        Ok(())
    }

    /// Starts `name` again after [`Fleet::stop`] (nothing when it is running).
    pub fn start_again(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self.index_of(name)?;
        if self.processes[index].child.is_none() {
            self.start(index)?;
        }
        Ok(())
    }

    /// Restarts every process that exited without being killed by the run (a process that
    /// cannot reach a dependency at startup exits; a supervisor starts it again). Returns the
    /// names of those restarted.
    pub fn restart_exited(&mut self) -> anyhow::Result<Vec<String>> {
        let mut restarted = Vec::new();
        for index in 0..self.processes.len() {
            let process = &mut self.processes[index];
            let exited = match process.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => false,
            };
            if exited {
                process.child = None;
                process.unexpected_exits += 1;
                restarted.push(process.spec.name.clone());
                self.start(index)?;
            }
        }
        Ok(restarted)
    }

    /// Waits until every process accepts connections (after the faults, before the checks).
    pub async fn wait_all_ready(&mut self) -> anyhow::Result<()> {
        for index in 0..self.processes.len() {
            self.wait_ready(index).await?;
        }
        Ok(())
    }

    /// Per process, how often it exited on its own.
    pub fn unexpected_exits(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.spec.name.clone(), p.unexpected_exits))
            .collect()
    }

    /// Asks every process to stop (SIGTERM) and waits for them, killing what is still running
    /// after `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        for process in &self.processes {
            if let Some(child) = &process.child {
                let _ = signal(child.id(), "TERM");
                // A paused process handles SIGTERM only once it runs again.
                let _ = signal(child.id(), "CONT");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                while matches!(child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn index_of(&self, name: &str) -> anyhow::Result<usize> {
        self.processes
            .iter()
            .position(|p| p.spec.name == name)
            .with_context(|| format!("no process named {name}"))
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let log_path = self.log_path(&self.processes[index].spec.name);
        let process = &mut self.processes[index];
        let spec = &process.spec;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        writeln!(log, "==== fault-run: starting {}", spec.name)?;
        let stderr: File = log.try_clone()?;
        let child = Command::new(&spec.binary)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        process.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            let port = self.processes[index].spec.ready_port;
            if TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
                return Ok(());
            }
            // A process that exited while its dependency was away is started again.
            self.restart_exited()?;
            if tokio::time::Instant::now() > deadline {
                let name = &self.processes[index].spec.name;
                bail!(
                    "{name} did not accept connections on {port} within {START_PATIENCE:?}; see {}",
                    self.log_path(name).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sends `SIGNAL` (e.g. `STOP`) to `pid` with kill(1): std's Child can only SIGKILL.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .with_context(|| format!("running kill -{name} {pid}"))?;
    if !status.success() {
        bail!("kill -{name} {pid} failed ({status})");
    }
    Ok(())
}

/// A port on 127.0.0.1 that is free now (the OS picks it from the ephemeral range, so never one
/// of the local stack's fixed ports).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}
