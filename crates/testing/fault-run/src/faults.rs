//! The fault schedule and its injection: at random moments (from a seeded RNG), kill -9 a
//! process and start it again, pause one (SIGSTOP, then SIGCONT), cut a command-api off from
//! PostgreSQL silently (the proxy between them holds every packet), stop every command-api for
//! longer than the flows' retry windows, or restart a server of the run's stack (PostgreSQL
//! with `pg_ctl restart -m fast`, an emulator stopped and started on its data directory).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use test_support::CuttableProxy;
use tokio::time::Instant;

use crate::fleet::Fleet;

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL the named process, then start it again after a pause.
    Kill(String),
    /// SIGSTOP the named process for [`FaultTimings::pause`], then SIGCONT: it holds its
    /// connections, leases and locks without doing anything, like a VM pause or a long GC stall.
    Pause(String),
    /// The proxy between the named process and PostgreSQL stops forwarding, without closing
    /// anything, for [`FaultTimings::pause`]; then it forwards again.
    NetworkCut(String),
    /// Every command-api stopped (SIGTERM) for [`FaultTimings::api_outage`], then started.
    ApiOutage,
    /// Restart the named server of the stack (`postgres`, `kinesis`, `dynamodb`).
    Restart(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(process) => write!(f, "kill -9 {process}"),
            Fault::Pause(process) => write!(f, "pause {process}"),
            Fault::NetworkCut(process) => write!(f, "silent network cut {process} <-> postgres"),
            Fault::ApiOutage => write!(f, "command-api outage"),
            Fault::Restart(server) => write!(f, "restart {server}"),
        }
    }
}

/// How long the faults that last a while last; derived from the run's settings (see
/// [`crate::RunTimeouts`]) so each outlasts what it is meant to outlast.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultTimings {
    /// A pause and a silent network cut: longer than every lease, lock and request timeout.
    pub pause: Duration,
    /// A command-api outage: longer than every retry window of the flows.
    pub api_outage: Duration,
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// Seconds into the run.
    pub at_seconds: f64,
    /// What was done.
    pub fault: String,
    /// How long the target was away (kill: the pause before the restart; pause, cut, outage:
    /// their length; restart: the restart command's duration), in milliseconds.
    pub down_ms: u128,
}

/// When and what: `count` faults spread over `duration`, one at a random moment in each of
/// `count` equal slots; kinds in shuffled rounds so every kind comes up before any repeats. The
/// first round starts with the kinds of `first` (shuffled among themselves), so a run with few
/// faults still injects each of them.
pub fn schedule(
    kinds: &[Fault],
    first: &[Fault],
    count: u32,
    duration: Duration,
    rng: &mut fastrand::Rng,
) -> Vec<(Duration, Fault)> {
    let slot = duration / count.max(1);
    let mut round: Vec<Fault> = Vec::new();
    let mut first_round = true;
    (0..count)
        .map(|n| {
            if round.is_empty() {
                // Popped from the back: what goes last in the vector comes first.
                round = kinds.to_vec();
                rng.shuffle(&mut round);
                if first_round {
                    round.retain(|kind| !first.contains(kind));
                    let mut wanted: Vec<Fault> = first
                        .iter()
                        .filter(|k| kinds.contains(k))
                        .cloned()
                        .collect();
                    rng.shuffle(&mut wanted);
                    round.extend(wanted);
                    first_round = false;
                }
            }
            let fault = round.pop().unwrap_or_else(|| kinds[0].clone());
            // Not in the slot's last fifth, so faults never pile up at a slot boundary.
            let offset = slot.mul_f64(rng.f64() * 0.8);
            (slot * n + offset, fault)
        })
        .collect()
}

/// What the faults act on.
pub struct Targets<'a> {
    /// The processes.
    pub fleet: &'a mut Fleet,
    /// The proxy between each process named here and PostgreSQL.
    pub database_proxies: &'a HashMap<String, CuttableProxy>,
    /// The processes a command-api outage stops.
    pub command_apis: &'a [String],
    /// The command restarting a server of the stack.
    pub restart_command: &'a [String],
    /// How long pauses, cuts and outages last.
    pub timings: FaultTimings,
}

/// Injects the faults of `plan` at their moments (measured from `start`), restarting any
/// process that exits on its own meanwhile; returns what was injected.
pub async fn inject(
    plan: Vec<(Duration, Fault)>,
    start: Instant,
    targets: Targets<'_>,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<Injected>> {
    let Targets {
        fleet,
        database_proxies,
        command_apis,
        restart_command,
        timings,
    } = targets;
    let mut injected = Vec::new();
    for (at, fault) in plan {
        while Instant::now() < start + at {
            fleet.restart_exited()?;
            let left = (start + at).saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        }
        let began = Instant::now();
        println!(
            "[{:>7.1}s] fault: {fault}",
            began.duration_since(start).as_secs_f64()
        );
        let down = match &fault {
            Fault::Kill(process) => {
                let pause = Duration::from_millis(rng.u64(0..3_000));
                fleet.kill_and_restart(process, pause).await?;
                pause
            }
            Fault::Pause(process) => {
                fleet.pause(process, timings.pause).await?;
                timings.pause
            }
            Fault::NetworkCut(process) => {
                let proxy = database_proxies
                    .get(process)
                    .with_context(|| format!("{process} reaches PostgreSQL through no proxy"))?;
                proxy.stall();
                supervise_for(fleet, timings.pause).await;
                proxy.restore();
                timings.pause
            }
            Fault::ApiOutage => {
                for api in command_apis {
                    fleet.stop(api, Duration::from_secs(10)).await?;
                }
                supervise_for(fleet, timings.api_outage).await;
                for api in command_apis {
                    fleet.start_again(api)?;
                }
                timings.api_outage
            }
            Fault::Restart(server) => {
                restart_server(restart_command, server).await?;
                began.elapsed()
            }
        };
        println!(
            "[{:>7.1}s] fault over: {fault} ({:.1} s)",
            start.elapsed().as_secs_f64(),
            down.as_secs_f64()
        );
        injected.push(Injected {
            at_seconds: began.duration_since(start).as_secs_f64(),
            fault: fault.to_string(),
            down_ms: down.as_millis(),
        });
    }
    Ok(injected)
}

/// Waits `how_long`, restarting meanwhile any process that exits on its own (a stopped one is
/// not started: the fleet knows it was stopped on purpose).
async fn supervise_for(fleet: &mut Fleet, how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        if let Err(error) = fleet.restart_exited() {
            println!("cannot restart a process: {error:#}");
        }
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
    }
}

async fn restart_server(command: &[String], server: &str) -> anyhow::Result<()> {
    let Some((program, args)) = command.split_first() else {
        bail!("no --restart-command to restart {server} with");
    };
    let restart = tokio::task::spawn_blocking({
        let (program, args, server) = (program.clone(), args.to_vec(), server.to_owned());
        move || {
            std::process::Command::new(program)
                .args(args)
                .arg(server)
                .stdin(std::process::Stdio::null())
                .status()
        }
    });
    let status = restart
        .await
        .context("the restart task failed")?
        .with_context(|| format!("running the restart command for {server}"))?;
    if !status.success() {
        bail!("restarting {server} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_up_before_any_repeats_and_moments_stay_in_their_slots() {
        let kinds = vec![
            Fault::Kill("a".into()),
            Fault::Kill("b".into()),
            Fault::Restart("postgres".into()),
        ];
        let plan = schedule(
            &kinds,
            &[],
            7,
            Duration::from_secs(70),
            &mut fastrand::Rng::with_seed(3),
        );
        assert_eq!(plan.len(), 7);
        for round in plan.chunks(3).filter(|round| round.len() == 3) {
            for kind in &kinds {
                assert!(round.iter().any(|(_, fault)| fault == kind), "{round:?}");
            }
        }
        for (n, (at, _)) in plan.iter().enumerate() {
            let slot_start = Duration::from_secs(10 * n as u64);
            assert!(
                *at >= slot_start && *at < slot_start + Duration::from_secs(8),
                "{at:?}"
            );
        }
    }

    #[test]
    fn the_kinds_asked_for_first_come_first_so_a_short_run_injects_each() {
        let kinds: Vec<Fault> = (0..12).map(|n| Fault::Kill(format!("p{n}"))).collect();
        let first = vec![Fault::Kill("p9".into()), Fault::Kill("p11".into())];
        for seed in 0..50 {
            let plan = schedule(
                &kinds,
                &first,
                3,
                Duration::from_secs(90),
                &mut fastrand::Rng::with_seed(seed),
            );
            for kind in &first {
                assert!(
                    plan[..2].iter().any(|(_, fault)| fault == kind),
                    "seed {seed}: {plan:?}"
                );
            }
            // The first round still holds every kind once.
            let long = schedule(
                &kinds,
                &first,
                12,
                Duration::from_secs(120),
                &mut fastrand::Rng::with_seed(seed),
            );
            for kind in &kinds {
                assert!(long.iter().any(|(_, fault)| fault == kind), "{long:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let kinds = vec![Fault::Kill("a".into()), Fault::Restart("kinesis".into())];
        let plan = |seed| {
            schedule(
                &kinds,
                &[],
                5,
                Duration::from_secs(50),
                &mut fastrand::Rng::with_seed(seed),
            )
        };
        assert_eq!(plan(9), plan(9));
    }
}
