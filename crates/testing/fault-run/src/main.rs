//! `fault-run`: the soak-and-fault run. Normally started by `scripts/fault-run.sh`, which brings
//! up the run's own PostgreSQL cluster and emulators first; see `fault-run --help`.

use clap::Parser;
use fault_run::{Run, RunSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = RunSettings::parse();
    let report = Run::build(settings).await?.run().await?;
    println!("{}", report.to_markdown());
    if !report.nothing_lost() {
        anyhow::bail!("the fault run found lost, doubled or diverging data (see above)");
    }
    Ok(())
}
