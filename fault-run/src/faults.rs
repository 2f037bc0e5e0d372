//! The fault schedule and its injection: at random moments (from a seeded RNG), kill -9 a
//! process and start it again, or restart a server of the run's stack (PostgreSQL with
//! `pg_ctl restart -m fast`, an emulator stopped and started on its data directory).

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::time::Instant;

use crate::fleet::Fleet;

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL the named process, then start it again after a pause.
    Kill(String),
    /// Restart the named server of the stack (`postgres`, `kinesis`, `dynamodb`).
    Restart(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(process) => write!(f, "kill -9 {process}"),
            Fault::Restart(server) => write!(f, "restart {server}"),
        }
    }
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// Seconds into the run.
    pub at_seconds: f64,
    /// What was done.
    pub fault: String,
    /// How long the target was away (kill: the pause before the restart; restart: the
    /// restart command's duration), in milliseconds.
    pub down_ms: u128,
}

/// When and what: `count` faults spread over `duration`, one at a random moment in each of
/// `count` equal slots; kinds in shuffled rounds so every kind comes up before any repeats.
pub fn schedule(
    kinds: &[Fault],
    count: u32,
    duration: Duration,
    rng: &mut fastrand::Rng,
) -> Vec<(Duration, Fault)> {
    let slot = duration / count.max(1);
    let mut round: Vec<Fault> = Vec::new();
    (0..count)
        .map(|n| {
            if round.is_empty() {
                round = kinds.to_vec();
                rng.shuffle(&mut round);
            }
            let fault = round.pop().unwrap_or_else(|| kinds[0].clone());
            // Not in the slot's last fifth, so faults never pile up at a slot boundary.
            let offset = slot.mul_f64(rng.f64() * 0.8);
            (slot * n + offset, fault)
        })
        .collect()
}

/// Injects the faults of `plan` at their moments (measured from `start`), restarting any
/// process that exits on its own meanwhile; returns what was injected.
pub async fn inject(
    plan: Vec<(Duration, Fault)>,
    start: Instant,
    fleet: &mut Fleet,
    restart_command: &[String],
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<Injected>> {
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
            Fault::Restart(server) => {
                restart_server(restart_command, server).await?;
                began.elapsed()
            }
        };
        injected.push(Injected {
            at_seconds: began.duration_since(start).as_secs_f64(),
            fault: fault.to_string(),
            down_ms: down.as_millis(),
        });
    }
    Ok(injected)
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
    fn the_same_seed_gives_the_same_schedule() {
        let kinds = vec![Fault::Kill("a".into()), Fault::Restart("kinesis".into())];
        let plan = |seed| {
            schedule(
                &kinds,
                5,
                Duration::from_secs(50),
                &mut fastrand::Rng::with_seed(seed),
            )
        };
        assert_eq!(plan(9), plan(9));
    }
}
