//! `skill-verifier keygen --out DIR`: writes a new Ed25519 key pair.
//!
//! `DIR/signing.key` is the private key (PKCS#8 PEM, mode 0600), `DIR/signing.pub` the public
//! key (SubjectPublicKeyInfo PEM). An existing `signing.key` is never overwritten. The key id
//! printed is the lowercase hex SHA-256 of the DER public key (see [`crate::attest::keys`]).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::attest::keys::Signer;
use crate::config::Settings;

use super::EXIT_OK;

/// Arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write `signing.key` (0600) and `signing.pub` into (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: KeygenArgs, settings: &Settings) -> anyhow::Result<u8> {
    let _ = settings;
    let signer = Signer::generate();
    let (private, public) = signer
        .write_to(&args.out)
        .with_context(|| format!("writing a key pair into {}", args.out.display()))?;
    println!("private key: {} (PKCS#8 PEM, mode 0600)", private.display());
    println!("public key:  {} (SPKI PEM)", public.display());
    println!("key id:      {}", signer.key_id());
    Ok(EXIT_OK)
}
