//! `skill-verifier inspect` (OWNER: issue2).

use clap::Args;

use crate::config::Settings;

/// Arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {}

/// Runs the subcommand; returns the exit code.
pub fn run(args: InspectArgs, settings: &Settings) -> anyhow::Result<u8> {
    let _ = (args, settings);
    anyhow::bail!("not built yet (issue2)")
}
