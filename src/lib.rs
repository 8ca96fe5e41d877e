//! # skill-verifier
//!
//! Takes an agent-skill package, runs the tests it declares inside a locked-down Docker
//! container, and returns a signed, TEE-quote-bound in-toto attestation of what happened.
//!
//! Every module under `src/` is one stage of a job's life, and data flows one way:
//!
//! ```text
//! api ──► jobs ──► package ──► sandbox ──► attest ──► store
//! (HTTP)  (queue,  (untrusted  (container  (statement,  (SQLite rows,
//!          workers)  archive →   spec →      DSSE, keys,  blobs)
//!                    tree +      Docker)     quotes)
//!                    manifest)
//! ```
//!
//! - [`package`]: hostile archive in, validated skill tree + manifest + digests out.
//! - [`sandbox`]: container spec as plain data, the bollard runner, runner images.
//! - [`attest`]: in-toto statement, DSSE envelope, Ed25519 keys, TEE quote providers.
//! - [`store`]: durable job rows (SQLite, WAL) and content-addressed blobs.
//! - [`jobs`]: the bounded queue, the worker pool and the typed job stages.
//! - [`api`]: the axum router and the server entry point.
//! - [`config`]: the one `Settings` struct (defaults < file < environment < flags).
//! - [`cli`]: the command line; `main.rs` only calls into it.
//! - [`digest`], [`ids`]: the `Sha256Digest` and `JobId` newtypes shared by every stage.

pub mod api;
pub mod attest;
pub mod cli;
pub mod config;
pub mod digest;
pub mod ids;
pub mod jobs;
pub mod package;

pub mod sandbox;
pub mod store;

/// The verifier's version, as recorded in every attestation.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
