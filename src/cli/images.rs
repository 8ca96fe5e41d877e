//! `skill-verifier images ...` (OWNER: issue3).

use clap::Subcommand;

use crate::config::Settings;

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Placeholder until issue3 lands.
    Todo,
}

/// Runs the subcommand; returns the exit code.
pub fn run(cmd: ImagesCommand, settings: &Settings) -> anyhow::Result<u8> {
    let _ = (cmd, settings);
    anyhow::bail!("not built yet (issue3)")
}
