//! `skill-verifier attestation ...` (OWNER: issue4).

use clap::Subcommand;

use crate::config::Settings;

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Placeholder until issue4 lands.
    Todo,
}

/// Runs the subcommand; returns the exit code.
pub fn run(cmd: AttestationCommand, settings: &Settings) -> anyhow::Result<u8> {
    let _ = (cmd, settings);
    anyhow::bail!("not built yet (issue4)")
}
