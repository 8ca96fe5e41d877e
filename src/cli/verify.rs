//! `skill-verifier verify` (OWNER: issue6).

use clap::Args;

use crate::config::Settings;

/// Arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {}

/// Runs the subcommand; returns the exit code.
pub fn run(args: VerifyArgs, settings: Settings) -> anyhow::Result<u8> {
    let _ = (args, settings);
    anyhow::bail!("not built yet (issue6)")
}
