//! `skill-verifier serve` (OWNER: issue5).

use clap::Args;

use crate::config::Settings;

/// Arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs the subcommand; returns the exit code.
pub fn run(args: ServeArgs, settings: Settings) -> anyhow::Result<u8> {
    let _ = (args, settings);
    anyhow::bail!("not built yet (issue5)")
}
