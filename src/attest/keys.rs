//! Ed25519 keys: the signer, key ids, key files.
