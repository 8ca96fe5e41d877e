//! # skill-verifier
//!
//! Takes an agent-skill package, runs the tests it declares inside a locked-down Docker
//! container, and returns a signed, TEE-quote-bound in-toto attestation of what happened.
//!
//! Every module under `src/` is one stage of a job's life, and data flows one way:
//!
//! ```text
//! api ──► jobs ──► package ──► scan ──► sandbox ──► attest ──► store
//! (HTTP)  (queue,  (untrusted  (rules →  (container  (statement,  (SQLite rows,
//!          workers)  archive →   findings, spec →      verdict,     blobs)
//!                    tree +      policy)   Docker)     DSSE, keys,
//!                    manifest)                         quotes)
//! ```
//!
//! - [`package`]: hostile archive in, validated skill tree + manifest + digests out.
//! - [`scan`]: pure static analysis (YARA-X rule pack + native checks) → findings, network
//!   endpoints, and the verdict policy.
//! - [`sandbox`]: container spec as plain data, the bollard runner, runner images.
//! - [`attest`]: in-toto statement, DSSE envelope, Ed25519 keys, TEE quote providers.
//! - [`store`]: durable job rows (SQLite, WAL) and content-addressed blobs.
//! - [`jobs`]: the bounded queue, the worker pool and the typed job stages.
//! - [`api`]: the axum router and the server entry point.
//! - [`config`]: the one `Settings` struct (defaults < file < environment < flags).
//! - [`cli`]: the command line; `main.rs` only calls into it.
//! - [`digest`], [`ids`]: the `Sha256Digest` and `JobId` newtypes shared by every stage.
//! - [`fsutil`]: private files and directories, and their fsyncs.

pub mod api;
pub mod attest;
pub mod cli;
pub mod config;
pub mod deps;
pub mod digest;
pub mod fsutil;
pub mod ids;
pub mod jobs;
pub mod netguard;
pub mod package;
pub mod scan;

pub mod sandbox;
pub mod sink;
pub mod store;

/// The verifier's version, as recorded in every attestation.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
