//! What every binary's command line shares.

use std::path::{Path, PathBuf};

/// `--config FILE` (or `ORDERPIPE_CONFIG`): a TOML settings file layered over the binary's
/// built-in defaults and under its `ORDERPIPE_*` variables (flattened into each binary's
/// arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsFile {
    /// A TOML settings file layered over the defaults.
    #[arg(long, global = true, env = "ORDERPIPE_CONFIG")]
    config: Option<PathBuf>,
}

impl SettingsFile {
    /// The file, if one was given.
    pub fn path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}
