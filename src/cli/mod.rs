//! The command line. `main.rs` parses nothing itself: it calls [`main`].
//!
//! Exit codes (DESIGN.md, "Users and their flows"): 0 passed / valid, 1 tests failed /
//! attestation invalid, 2 invalid package / unreadable input, 3 the verifier could not do
//! its job.

pub mod attestation;
pub mod images;
pub mod inspect;
pub mod keygen;
pub mod quote;
pub mod scan;
pub mod serve;
pub mod submit;
pub mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Exit code: passed (or valid).
pub const EXIT_OK: u8 = 0;
/// Exit code: tests failed (or attestation invalid).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid package (or unreadable input).
pub const EXIT_INVALID: u8 = 2;
/// Exit code: the verifier could not do its job.
pub const EXIT_ERROR: u8 = 3;

/// skill-verifier: runs an agent skill's tests in a locked-down sandbox and signs what happened.
#[derive(Debug, Parser)]
#[command(name = "skill-verifier", version, about, long_about = None)]
pub struct Cli {
    /// A TOML config file (defaults < file < SKILL_VERIFIER_* environment < flags).
    #[arg(long, global = true, env = "SKILL_VERIFIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data dir (keys, database, blobs).
    #[arg(long, global = true, env = "SKILL_VERIFIER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (HTTP API, queue, workers).
    Serve(serve::ServeArgs),
    /// Validate a package and print its facts as JSON (exit 2 if invalid).
    Inspect(inspect::InspectArgs),
    /// Verify a package locally, without a daemon: unpack, scan, run in Docker, attest.
    Verify(verify::VerifyArgs),
    /// Scan a package statically (rules + native checks + verdict policy); no Docker.
    Scan(scan::ScanArgs),
    /// Upload a package to a daemon and (with --wait) follow it to the end.
    Submit(submit::SubmitArgs),
    /// Attestation tools.
    #[command(subcommand)]
    Attestation(attestation::AttestationCommand),
    /// Generate an Ed25519 signing key pair.
    Keygen(keygen::KeygenArgs),
    /// Runner image tools.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// TEE quote tools (offline DCAP verification).
    #[command(subcommand)]
    Quote(quote::QuoteCommand),
    /// Internal: the network sink a test's container joins; runs inside the sink image.
    #[command(hide = true)]
    Sink(SinkArgs),
}

/// Arguments of the internal `sink` command.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// The namespace has a way out (allowlist mode): allowed names are forwarded.
    #[arg(long)]
    pub egress: bool,
}

/// Parses the command line, runs the subcommand, returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The sink runs inside its own container: no settings, no logging set-up.
    if let Command::Sink(args) = &cli.command {
        return crate::sink::main(args.egress);
    }
    init_tracing();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(EXIT_ERROR);
        }
    };
    if let Some(dir) = cli.data_dir {
        settings.data_dir = Some(dir);
    }
    let code = match run(cli.command, settings) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    };
    std::process::ExitCode::from(code)
}

fn run(command: Command, settings: Settings) -> anyhow::Result<u8> {
    match command {
        Command::Serve(args) => serve::run(args, settings),
        Command::Inspect(args) => inspect::run(args, &settings),
        Command::Verify(args) => verify::run(args, settings),
        Command::Scan(args) => scan::run(args, &settings),
        Command::Submit(args) => submit::run(args, &settings),
        Command::Attestation(cmd) => attestation::run(cmd, &settings),
        Command::Keygen(args) => keygen::run(args, &settings),
        Command::Images(cmd) => images::run(cmd, &settings),
        Command::Quote(cmd) => quote::run(cmd, &settings),
        Command::Sink(args) => Ok(match crate::sink::main(args.egress) {
            c if c == std::process::ExitCode::SUCCESS => 0,
            _ => EXIT_ERROR,
        }),
    }
}

/// Logs go to stderr; `RUST_LOG` filters (default `info`), `SKILL_VERIFIER_LOG_FORMAT=json`
/// switches to JSON lines.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("SKILL_VERIFIER_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
