//! Ed25519 keys: the [`Signer`], key ids, key files.
//!
//! # Files
//! - `signing.key`: the private key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), mode
//!   0600. [`Signer::load`] refuses a file any group or other bit is set on, so a key that
//!   someone else could have read is never used to sign.
//! - `signing.pub`: the public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`),
//!   mode 0644; the same form `openssl pkey -pubout` writes. [`load_public_key`] also accepts
//!   the bare 32-byte key in standard base64 or hex on one line.
//!
//! # Key id
//! The key id is the lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (the bytes inside
//! the public PEM). It can be recomputed with standard tools:
//! `openssl pkey -pubin -in signing.pub -outform DER | sha256sum`.
//!
//! # Secrets
//! The private key lives only inside [`ed25519_dalek::SigningKey`] (zeroized on drop); the
//! PEM text is held in a [`Zeroizing`] buffer while it is read or written. `Debug` shows the
//! key id only, and no error carries key material.

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// File name of the private key inside a key dir.
pub const PRIVATE_KEY_FILE: &str = "signing.key";
/// File name of the public key inside a key dir.
pub const PUBLIC_KEY_FILE: &str = "signing.pub";

/// Key files are tiny; anything larger is not one of ours (and is not read into memory).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why a key could not be created, read or written. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading a key file failed.
    #[error("reading key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing a key file (or creating its dir) failed.
    #[error("writing key file {path}: {source}")]
    Write {
        /// The file or dir.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The private key file is readable by group or others.
    #[error(
        "refusing private key {path}: mode {mode:04o} lets group/others read it (run `chmod 600`)"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key path is not a regular file (or is too large to be a key).
    #[error("{path} is not a key file: {reason}")]
    NotAKeyFile {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The private key file is not a PKCS#8 PEM Ed25519 key.
    #[error("{path} is not a PKCS#8 PEM Ed25519 private key")]
    ParsePrivate {
        /// The file.
        path: PathBuf,
    },
    /// The public key file is not an Ed25519 public key in a supported encoding.
    #[error("{path} is not an Ed25519 public key (SPKI PEM, or 32 bytes as base64/hex): {reason}")]
    ParsePublic {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        reason: String,
    },
    /// The private key already exists where a new one was to be written.
    #[error("{path} already exists; refusing to overwrite a signing key")]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// Encoding a key failed (should not happen for Ed25519).
    #[error("encoding key: {0}")]
    Encode(String),
}

/// The Ed25519 signing key of a verifier. `Debug` shows only the key id.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Signer {
        Signer::from_signing_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Wraps an existing key (tests, benchmarks, callers holding one already).
    pub fn from_signing_key(key: SigningKey) -> Signer {
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    /// Loads a PKCS#8 PEM private key. Refuses a file that is not a regular file or whose
    /// mode has any group/other bit set (`mode & 0o077 != 0`): a key others could read is
    /// not a secret any more. The mode is taken from the opened file, not the path, so a
    /// swap between check and read does not slip through.
    pub fn load(path: &Path) -> Result<Signer, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotAKeyFile {
                path: path.to_path_buf(),
                reason: "not a regular file",
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::NotAKeyFile {
                path: path.to_path_buf(),
                reason: "too large",
            });
        }
        let mut pem = Zeroizing::new(String::new());
        file.read_to_string(&mut pem).map_err(read_err)?;
        // The pkcs8 error is dropped on purpose: we do not want any part of a secret file
        // echoed into an error message.
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::ParsePrivate {
            path: path.to_path_buf(),
        })?;
        Ok(Signer::from_signing_key(key))
    }

    /// The daemon's key: loads `dir/signing.key` if it exists, otherwise creates `dir`
    /// (0700) and a new key there (`signing.key` 0600, `signing.pub` 0644). Also rewrites
    /// a missing `signing.pub`. Safe against two processes racing on first start: the key
    /// is written to a temporary file and hard-linked into place, so exactly one key wins
    /// and nobody reads a half-written file.
    pub fn load_or_create(dir: &Path) -> Result<Signer, KeyError> {
        let key_path = dir.join(PRIVATE_KEY_FILE);
        let signer = match Signer::load(&key_path) {
            Ok(s) => s,
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let fresh = Signer::generate();
                match fresh.write_private(dir) {
                    Ok(()) => fresh,
                    // Lost the race to another process: use its key.
                    Err(KeyError::AlreadyExists { .. }) => Signer::load(&key_path)?,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let pub_path = dir.join(PUBLIC_KEY_FILE);
        let current = fs::read_to_string(&pub_path).ok();
        if current.as_deref() != Some(signer.public_key_pem().as_str()) {
            write_atomically(&pub_path, signer.public_key_pem().as_bytes(), 0o644)?;
        }
        Ok(signer)
    }

    /// Writes a new key pair into `dir` (created 0700 if missing): `signing.key` (0600) and
    /// `signing.pub` (0644). Refuses to overwrite an existing `signing.key`.
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        self.write_private(dir)?;
        let pub_path = dir.join(PUBLIC_KEY_FILE);
        write_atomically(&pub_path, self.public_key_pem().as_bytes(), 0o644)?;
        Ok((dir.join(PRIVATE_KEY_FILE), pub_path))
    }

    fn write_private(&self, dir: &Path) -> Result<(), KeyError> {
        create_dir_private(dir)?;
        let key_path = dir.join(PRIVATE_KEY_FILE);
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let tmp = temp_path(dir, PRIVATE_KEY_FILE);
        write_new_file(&tmp, pem.as_bytes(), 0o600)?;
        // link(2) fails if the target exists: an atomic "create if absent".
        let linked = fs::hard_link(&tmp, &key_path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(KeyError::AlreadyExists { path: key_path })
            }
            Err(source) => Err(KeyError::Write {
                path: key_path,
                source,
            }),
        }
    }

    /// The key id: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (see module docs).
    pub fn key_id(&self) -> String {
        self.key_id.clone()
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as SubjectPublicKeyInfo PEM (what `signing.pub` holds and `GET /keys`
    /// can publish).
    pub fn public_key_pem(&self) -> String {
        public_key_pem(&self.key.verifying_key())
    }

    /// Signs `message` (Ed25519, RFC 8032, deterministic).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }
}

/// The key id of a public key: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(spki_der(key)))
}

/// A public key as SubjectPublicKeyInfo PEM.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("encoding an Ed25519 SPKI cannot fail")
}

fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    key.to_public_key_der()
        .expect("encoding an Ed25519 SPKI cannot fail")
        .into_vec()
}

/// Loads a public key: SubjectPublicKeyInfo PEM, or the raw 32 bytes as standard base64 or
/// hex on one line. Rejects weak (small-order) points.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    parse_public_key(&text).map_err(|reason| KeyError::ParsePublic {
        path: path.to_path_buf(),
        reason,
    })
}

/// Largest key-set file read (a `/keys` answer of a big cluster is a few KiB).
const MAX_KEY_SET_BYTES: u64 = 1024 * 1024;

/// Loads a key set: a file with one or more public keys as PEM blocks, the JSON answer of
/// `GET /keys` (`{"keys": [{"keyid", "algorithm", "public_key_pem"}]}`), or one key in any
/// form [`load_public_key`] accepts.
pub fn load_key_set(path: &Path) -> Result<Vec<VerifyingKey>, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_KEY_SET_BYTES)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    parse_key_set(&text).map_err(|reason| KeyError::ParsePublic {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses a key set from text (the forms [`load_key_set`] accepts). Every key must parse;
/// in a `/keys` answer, a `keyid` that is not the key's own id is refused (the file is not
/// what it claims to be).
pub fn parse_key_set(text: &str) -> Result<Vec<VerifyingKey>, String> {
    let trimmed = text.trim();
    let keys = if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct KeyView {
            #[serde(default)]
            keyid: String,
            #[serde(default)]
            algorithm: String,
            public_key_pem: String,
        }
        #[derive(serde::Deserialize)]
        struct Keys {
            keys: Vec<KeyView>,
        }
        let set: Keys =
            serde_json::from_str(trimmed).map_err(|e| format!("not a /keys answer: {e}"))?;
        let mut keys = Vec::new();
        for (i, view) in set.keys.iter().enumerate() {
            if !view.algorithm.is_empty() && !view.algorithm.eq_ignore_ascii_case("ed25519") {
                return Err(format!(
                    "keys[{i}]: algorithm {:?} is not ed25519",
                    view.algorithm
                ));
            }
            let key =
                parse_public_key(&view.public_key_pem).map_err(|e| format!("keys[{i}]: {e}"))?;
            if !view.keyid.is_empty() && view.keyid != key_id(&key) {
                return Err(format!(
                    "keys[{i}]: keyid {} is not the key's id {}",
                    view.keyid,
                    key_id(&key)
                ));
            }
            keys.push(key);
        }
        keys
    } else if trimmed.matches("-----BEGIN").count() > 1 {
        let mut keys = Vec::new();
        for (i, block) in trimmed
            .split_inclusive("-----END PUBLIC KEY-----")
            .filter(|b| b.contains("-----BEGIN"))
            .enumerate()
        {
            keys.push(parse_public_key(block).map_err(|e| format!("key {}: {e}", i + 1))?);
        }
        keys
    } else {
        vec![parse_public_key(trimmed)?]
    };
    if keys.is_empty() {
        return Err("no public key in the key set".into());
    }
    Ok(keys)
}

/// Parses a public key from text (the forms [`load_public_key`] accepts).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let trimmed = text.trim();
    let key = if trimmed.starts_with("-----BEGIN") {
        VerifyingKey::from_public_key_pem(trimmed).map_err(|e| e.to_string())?
    } else {
        let raw = if trimmed.len() == 64 {
            hex::decode(trimmed).map_err(|e| e.to_string())?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .map_err(|e| e.to_string())?
        };
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("{} bytes, want 32", v.len()))?;
        VerifyingKey::from_bytes(&raw).map_err(|e| e.to_string())?
    };
    // A small-order point verifies forged signatures under some verifiers; never trust one.
    if key.is_weak() {
        return Err("weak (small-order) public key".into());
    }
    Ok(key)
}

fn create_dir_private(dir: &Path) -> Result<(), KeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Creates `path` (which must not exist) with `mode` from the start, writes and syncs it.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    crate::fsutil::write_new_file(path, bytes, mode).map_err(|source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_path(dir, &name);
    write_new_file(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        KeyError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_key_id_but_no_secret() {
        let signer = Signer::generate();
        let debug = format!("{signer:?}");
        assert!(debug.contains(&signer.key_id()));
        let secret_hex = hex::encode(signer.key.to_bytes());
        assert!(!debug.contains(&secret_hex));
        assert!(!debug.to_lowercase().contains("signing_key"));
    }

    #[test]
    fn key_id_is_sha256_of_spki_der() {
        let signer = Signer::generate();
        let der = signer.verifying_key().to_public_key_der().unwrap();
        assert_eq!(signer.key_id(), hex::encode(Sha256::digest(der.as_bytes())));
        assert_eq!(signer.key_id().len(), 64);
    }

    #[test]
    fn public_key_parses_from_pem_base64_and_hex() {
        let signer = Signer::generate();
        let vk = signer.verifying_key();
        assert_eq!(parse_public_key(&signer.public_key_pem()).unwrap(), vk);
        let b64 = base64::engine::general_purpose::STANDARD.encode(vk.as_bytes());
        assert_eq!(parse_public_key(&format!("{b64}\n")).unwrap(), vk);
        assert_eq!(parse_public_key(&hex::encode(vk.as_bytes())).unwrap(), vk);
        assert!(parse_public_key("not a key").is_err());
        // The identity point is small-order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_public_key(&hex::encode(identity)).is_err());
    }
}
