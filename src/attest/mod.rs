//! The `attest` stage: the facts of a run in, a signed, quote-bound, independently verifiable
//! DSSE envelope out; and the offline checks of one.
//!
//! OWNER: issue 4. The public items below are the interface other stages rely on; add freely,
//! rename none without telling the integrator.
//!
//! - [`statement`]: the in-toto Statement v1 and the predicate (field names are a contract).
//! - [`dsse`]: the envelope, PAE, signing and verification.
//! - [`keys`]: the Ed25519 [`keys::Signer`], key ids, key files.
//! - [`quote`]: the [`quote::QuoteProvider`] trait and its `simulated`, `dstack`, `none` providers.

pub mod dsse;
pub mod keys;
pub mod quote;
pub mod statement;
