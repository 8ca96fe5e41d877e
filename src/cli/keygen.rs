//! `skill-verifier keygen` (OWNER: issue4).

use clap::Args;

use crate::config::Settings;

/// Arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {}

/// Runs the subcommand; returns the exit code.
pub fn run(args: KeygenArgs, settings: &Settings) -> anyhow::Result<u8> {
    let _ = (args, settings);
    anyhow::bail!("not built yet (issue4)")
}
