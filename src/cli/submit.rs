//! `skill-verifier submit` (OWNER: issue6).

use clap::Args;

use crate::config::Settings;

/// Arguments.
#[derive(Debug, Args)]
pub struct SubmitArgs {}

/// Runs the subcommand; returns the exit code.
pub fn run(args: SubmitArgs, settings: &Settings) -> anyhow::Result<u8> {
    let _ = (args, settings);
    anyhow::bail!("not built yet (issue6)")
}
