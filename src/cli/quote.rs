//! `skill-verifier quote verify QUOTE --collateral FILE [--at RFC3339] [--json] [--root-ca FILE]`:
//! the offline DCAP check of a TDX (or SGX) quote with dcap-qvl (see
//! [`crate::attest::quote::verify_dcap`] for what is checked).
//!
//! - **QUOTE** is the raw quote bytes, or the same as hex text (what dstack returns).
//! - **Collateral** is dcap-qvl's `QuoteCollateralV3` JSON (what a PCCS serves, gathered; the
//!   `tee.collateral` of a dstack attestation has the same shape).
//! - **Time.** `--at` (RFC 3339) pins the verification time; default now. Collateral is valid
//!   for about a month, so archived quotes need `--at`.
//! - **Root.** Intel's SGX Root CA, built in; `--root-ca FILE` (PEM or DER) trusts another
//!   root instead (dstack's seeded simulator signs under such a development root), and the
//!   output says it is not Intel's.
//! - **TCB policy.** `[attest] tcb_policy` (default `UpToDate` only); `--allow-tcb STATUS`
//!   (repeatable) replaces it for this run.
//!
//! Exit codes: 0 valid; 1 invalid (bad signature or chain, expired or revoked collateral, a
//! TCB status the policy refuses, a simulated quote: not Intel-signed), with the reason;
//! 2 an input cannot be read (quote, collateral, root, time, policy).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use crate::attest::quote::{self, DcapReport, QuoteError, TcbPolicy};
use crate::config::Settings;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// Quotes are ~5 KiB, collateral ~16 KiB; refuse anything absurd before reading it.
const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum QuoteCommand {
    /// Verify a TDX/SGX quote offline against Intel's root: signature chain, CRLs, TCB
    /// status. Exit 0 valid, 1 invalid, 2 unreadable input.
    Verify(QuoteVerifyArgs),
}

/// `quote verify` arguments.
#[derive(Debug, Args)]
pub struct QuoteVerifyArgs {
    /// The quote: raw bytes or hex text.
    #[arg(value_name = "QUOTE")]
    pub quote: PathBuf,
    /// The collateral (dcap-qvl QuoteCollateralV3 JSON).
    #[arg(long, value_name = "FILE")]
    pub collateral: PathBuf,
    /// Verify as of this time (RFC 3339, e.g. 2025-06-19T11:16:03Z); default now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Trust this root CA certificate (PEM or DER) instead of Intel's.
    #[arg(long, value_name = "FILE")]
    pub root_ca: Option<PathBuf>,
    /// Accept this TCB status (repeatable; replaces `[attest] tcb_policy`).
    #[arg(long = "allow-tcb", value_name = "STATUS")]
    pub allow_tcb: Vec<String>,
}

/// Runs the subcommand; returns the exit code.
pub fn run(cmd: QuoteCommand, settings: &Settings) -> anyhow::Result<u8> {
    match cmd {
        QuoteCommand::Verify(args) => Ok(verify(&args, settings)),
    }
}

/// Reads a file of at most [`MAX_INPUT_BYTES`].
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "{} is larger than {MAX_INPUT_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Quote bytes from a file holding them raw or as hex text (optional `0x`, whitespace).
pub(crate) fn read_quote(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_bounded(path)?;
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = text.strip_prefix(b"0x").unwrap_or(&text);
    if !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
        return hex::decode(text).map_err(|e| format!("{}: odd hex: {e}", path.display()));
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(bytes)
}

/// Parses an RFC 3339 time into Unix seconds.
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("--at {text:?} is not an RFC 3339 time: {e}"))
}

/// Formats Unix seconds as RFC 3339.
pub(crate) fn format_time(unix: i64) -> String {
    quote::format_rfc3339(unix)
}

/// Everything `quote verify` needs, read; or the message for exit 2.
struct Inputs {
    quote: Vec<u8>,
    collateral: quote::Collateral,
    at: i64,
    root_ca: Option<Vec<u8>>,
    policy: TcbPolicy,
}

fn read_inputs(args: &QuoteVerifyArgs, settings: &Settings) -> Result<Inputs, String> {
    let quote = read_quote(&args.quote)?;
    let collateral = quote::parse_collateral(&read_bounded(&args.collateral)?)
        .map_err(|e| format!("{}: {e}", args.collateral.display()))?;
    let at = match &args.at {
        Some(text) => parse_time(text)?,
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    let root_ca = match &args.root_ca {
        Some(path) => Some(
            quote::parse_root_ca(&read_bounded(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let policy = if args.allow_tcb.is_empty() {
        TcbPolicy::parse(&settings.attest.tcb_policy)
    } else {
        TcbPolicy::parse(&args.allow_tcb)
    }
    .map_err(|e| e.to_string())?;
    Ok(Inputs {
        quote,
        collateral,
        at,
        root_ca,
        policy,
    })
}

fn verify(args: &QuoteVerifyArgs, settings: &Settings) -> u8 {
    let inputs = match read_inputs(args, settings) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let simulated = quote::is_simulated(&inputs.quote);
    let root = match &args.root_ca {
        Some(path) => format!(
            "{} (a development root given with --root-ca, NOT Intel's)",
            path.display()
        ),
        None => "Intel SGX Root CA (built in)".to_string(),
    };
    let verified = quote::verify_dcap(
        &inputs.quote,
        &inputs.collateral,
        inputs.at,
        inputs.root_ca.as_deref(),
    );
    // The TCB policy applies to a quote whose chain verified; its report is shown either way.
    let (report, outcome) = match verified {
        Ok(report) => {
            let policy = inputs.policy.check(&report);
            (Some(report), policy)
        }
        Err(e) => (None, Err(e)),
    };
    if args.json {
        let out = json!({
            "valid": outcome.is_ok(),
            "simulated": simulated,
            "reason": outcome.as_ref().err().map(ToString::to_string),
            "at": format_time(inputs.at),
            "root": if args.root_ca.is_some() { "custom" } else { "intel" },
            "tcb_policy": inputs.policy.allowed(),
            "report": report,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON values serialize")
        );
    } else {
        print_text(&outcome, report.as_ref(), &inputs, &root, simulated);
    }
    match outcome {
        Ok(()) => EXIT_OK,
        Err(_) => EXIT_FAILED,
    }
}

fn print_text(
    outcome: &Result<(), QuoteError>,
    report: Option<&DcapReport>,
    inputs: &Inputs,
    root: &str,
    simulated: bool,
) {
    match outcome {
        Ok(()) => println!("quote: VALID"),
        Err(_) if simulated => println!("quote: INVALID (SIMULATED: not Intel-signed)"),
        Err(_) => println!("quote: INVALID"),
    }
    if let Err(reason) = outcome {
        println!("  reason: {reason}");
    }
    println!("  verified at: {}", format_time(inputs.at));
    println!("  root: {root}");
    println!("  tcb policy: [{}]", inputs.policy.allowed().join(", "));
    if let Some(r) = report {
        print_report(r, "  ");
    }
}

/// Prints a verified quote's facts, one per line.
pub(crate) fn print_report(r: &DcapReport, indent: &str) {
    let tee = match r.tee_type {
        quote::TeeType::Tdx => "TDX",
        quote::TeeType::Sgx => "SGX",
    };
    println!("{indent}tee: {tee}");
    println!("{indent}tcb status: {}", r.tcb_status);
    println!(
        "{indent}advisory ids: {}",
        if r.advisory_ids.is_empty() {
            "none".to_string()
        } else {
            r.advisory_ids.join(", ")
        }
    );
    if let Some(mr_td) = &r.mr_td {
        println!("{indent}mrtd: {mr_td}");
    }
    if let Some(rtmr) = &r.rtmr {
        for (i, v) in rtmr.iter().enumerate() {
            println!("{indent}rtmr{i}: {v}");
        }
    }
    if let Some(v) = &r.mr_enclave {
        println!("{indent}mrenclave: {v}");
    }
    if let Some(v) = &r.mr_signer {
        println!("{indent}mrsigner: {v}");
    }
    println!("{indent}report_data: {}", r.report_data);
}
