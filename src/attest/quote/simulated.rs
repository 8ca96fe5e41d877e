//! The `simulated` quote provider (the default) and its quote format.
//!
//! A quote laid out like an Intel TDX quote v4, so tooling and tests exercise the real shape,
//! but signed by a **simulator key** instead of Intel's quoting enclave. It proves nothing
//! about hardware and says so everywhere: `tee.provider = "simulated"`, `tee.simulated = true`,
//! the quote header's QE vendor id reads `SV-SIMULATED-TDX`, and `attestation verify` prints
//! `quote: SIMULATED`. All integers little-endian:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 2 | version | 4 |
//! | 2 | 2 | attestation key type | `0xED25` (not a TDX value: "simulator, Ed25519") |
//! | 4 | 4 | TEE type | `0x81` (TDX) |
//! | 8 | 2+2 | QE SVN, PCE SVN | 0 |
//! | 12 | 16 | QE vendor id | ASCII `SV-SIMULATED-TDX` |
//! | 28 | 20 | user data | ASCII `skill-verifier`, zero-padded |
//! | 48 | 584 | TD report body | as TDX 1.0, zeros except: |
//! | 184 | 48 | └ MRTD | SHA-384 of the verifier binary (`/proc/self/exe`) |
//! | 232 | 48 | └ MRCONFIGID | SHA-384 of the attest settings as JSON |
//! | 376 | 48 | └ RTMR0 | SHA-384 of `skill-verifier <version>` |
//! | 568 | 64 | └ REPORTDATA | the 64-byte report_data |
//! | 632 | 4 | signature data length | 96 |
//! | 636 | 64 | Ed25519 signature over bytes `0..632` | |
//! | 700 | 32 | simulator public key | |
//!
//! The simulator key is derived from a published seed, `SHA-256("skill-verifier simulated
//! TDX quoting key v1")` ([`simulator_verifying_key`]): anyone can recompute it, so a verifier
//! checks the quote was not altered after the simulator produced it, and that is all. The
//! trust in a simulated attestation rests on the DSSE signature alone.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use async_trait::async_trait;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256, Sha384};

use super::tdx::TEE_TYPE_TDX;
use super::{QuoteError, QuoteProvider, PROVIDER_SIMULATED};
use crate::attest::statement::Tee;
use crate::config::AttestSettings;

/// Seed of the published simulator key (see module docs).
const SIMULATOR_SEED_LABEL: &[u8] = b"skill-verifier simulated TDX quoting key v1";

/// Length of a simulated quote.
pub const SIMULATED_QUOTE_LEN: usize = 732;
const SIGNED_LEN: usize = 632;
const SIM_ATT_KEY_TYPE: u16 = 0xED25;
pub(crate) const SIM_QE_VENDOR: &[u8; 16] = b"SV-SIMULATED-TDX";
const OFF_MRTD: usize = 184;
const OFF_MRCONFIGID: usize = 232;
const OFF_RTMR0: usize = 376;
const OFF_REPORT_DATA_V4: usize = 568;

/// The measurements a simulated quote carries (48-byte SHA-384 values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedMeasurements {
    /// MRTD: SHA-384 of the verifier binary.
    pub mr_td: [u8; 48],
    /// MRCONFIGID: SHA-384 of the verifier's attest configuration.
    pub mr_config_id: [u8; 48],
    /// RTMR0: SHA-384 of `skill-verifier <version>`.
    pub rtmr0: [u8; 48],
}

impl SimulatedMeasurements {
    /// Measurements from the given binary bytes and configuration bytes.
    pub fn of(binary: &[u8], config: &[u8]) -> Self {
        SimulatedMeasurements {
            mr_td: Sha384::digest(binary).into(),
            mr_config_id: Sha384::digest(config).into(),
            rtmr0: version_measurement(),
        }
    }
}

fn version_measurement() -> [u8; 48] {
    Sha384::digest(format!("skill-verifier {}", crate::VERSION)).into()
}

/// The simulator's signing key, derived from the published seed (module docs).
fn simulator_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&Sha256::digest(SIMULATOR_SEED_LABEL).into()))
}

/// The simulator's public key: every simulated quote must carry and verify under it.
pub fn simulator_verifying_key() -> VerifyingKey {
    simulator_key().verifying_key()
}

/// SHA-384 of this process's binary, hashed once per process (it does not change while we
/// run, and hashing a large binary on every quote would be waste).
static MR: OnceLock<Result<[u8; 48], (PathBuf, std::io::ErrorKind, String)>> = OnceLock::new();

fn this_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// The binary's measurement ([`MR`]). Concurrent callers wait for the one hash in progress,
/// so [`prewarm_measurement`] started early overlaps it with other work.
fn binary_measurement() -> Result<[u8; 48], QuoteError> {
    let measured = MR.get_or_init(|| {
        let path = this_binary();
        let hash = || -> std::io::Result<[u8; 48]> {
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = Sha384::new();
            std::io::copy(&mut file, &mut hasher)?;
            Ok(hasher.finalize().into())
        };
        hash().map_err(|e| (path.clone(), e.kind(), e.to_string()))
    });
    measured
        .clone()
        .map_err(|(path, kind, message)| QuoteError::Measure {
            path,
            source: std::io::Error::new(kind, message),
        })
}

/// Where the measurement of the binary at `path` is kept in `cache_dir`: named by the
/// file's identity (device, inode, size, modification and change times to the
/// nanosecond), so a replaced, rewritten or touched binary is hashed again. The change time
/// cannot be set back from user space.
fn measurement_file(cache_dir: &Path, path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let identity = format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    );
    let name = hex::encode(&Sha256::digest(identity.as_bytes())[..16]);
    Some(cache_dir.join(format!("measurement-{name}")))
}

/// Starts measuring this binary on a background thread, so a one-shot process (the CLI's
/// `verify`) has the measurement ready by the time it signs. With `cache_dir` (the CLI's
/// private cache under the data dir) a measurement of the same binary file is read from
/// there instead of hashing tens of MB again, which on a 2-core machine takes a core from
/// the container engine for ~100 ms; a fresh one is stored there.
pub fn prewarm_measurement(cache_dir: Option<&Path>) {
    let cache = cache_dir.and_then(|dir| measurement_file(dir, &this_binary()));
    std::thread::spawn(move || {
        if let Some(file) = &cache {
            if let Ok(bytes) = std::fs::read(file) {
                if let Ok(mr) = <[u8; 48]>::try_from(bytes.as_slice()) {
                    let _ = MR.set(Ok(mr));
                    return;
                }
            }
        }
        if let (Ok(mr), Some(file)) = (binary_measurement(), &cache) {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
            if std::fs::write(&tmp, mr).is_ok() && std::fs::rename(&tmp, file).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    });
}

/// A TDX-shaped quote signed by the published simulator key. Labelled simulated everywhere.
#[derive(Debug, Clone)]
pub struct SimulatedQuoteProvider {
    measurements: SimulatedMeasurements,
}

impl SimulatedQuoteProvider {
    /// A provider with explicit measurements (tests, benchmarks).
    pub fn new(measurements: SimulatedMeasurements) -> Self {
        SimulatedQuoteProvider { measurements }
    }

    /// Measures this process's binary and `settings` (module docs).
    pub fn for_this_binary(settings: &AttestSettings) -> Result<Self, QuoteError> {
        let config = serde_json::to_vec(settings).unwrap_or_default();
        Ok(SimulatedQuoteProvider {
            measurements: SimulatedMeasurements {
                mr_td: binary_measurement()?,
                mr_config_id: Sha384::digest(&config).into(),
                rtmr0: version_measurement(),
            },
        })
    }

    /// The measurements this provider puts into its quotes.
    pub fn measurements(&self) -> &SimulatedMeasurements {
        &self.measurements
    }

    /// Builds and signs the quote bytes (layout in the module docs).
    pub fn quote_bytes(&self, report_data: &[u8; 64]) -> Vec<u8> {
        let mut q = vec![0u8; SIMULATED_QUOTE_LEN];
        q[0..2].copy_from_slice(&4u16.to_le_bytes());
        q[2..4].copy_from_slice(&SIM_ATT_KEY_TYPE.to_le_bytes());
        q[4..8].copy_from_slice(&TEE_TYPE_TDX.to_le_bytes());
        q[12..28].copy_from_slice(SIM_QE_VENDOR);
        q[28..28 + 14].copy_from_slice(b"skill-verifier");
        q[OFF_MRTD..OFF_MRTD + 48].copy_from_slice(&self.measurements.mr_td);
        q[OFF_MRCONFIGID..OFF_MRCONFIGID + 48].copy_from_slice(&self.measurements.mr_config_id);
        q[OFF_RTMR0..OFF_RTMR0 + 48].copy_from_slice(&self.measurements.rtmr0);
        q[OFF_REPORT_DATA_V4..OFF_REPORT_DATA_V4 + 64].copy_from_slice(report_data);
        q[SIGNED_LEN..SIGNED_LEN + 4].copy_from_slice(&96u32.to_le_bytes());
        let sig = simulator_key().sign(&q[..SIGNED_LEN]);
        q[636..700].copy_from_slice(&sig.to_bytes());
        q[700..732].copy_from_slice(simulator_key().verifying_key().as_bytes());
        q
    }
}

#[async_trait]
impl QuoteProvider for SimulatedQuoteProvider {
    fn kind(&self) -> &'static str {
        PROVIDER_SIMULATED
    }

    fn bound_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        extra.insert("simulated".into(), true.into());
        extra.insert(
            "simulator_key".into(),
            hex::encode(simulator_verifying_key().as_bytes()).into(),
        );
        extra.insert(
            "note".into(),
            "SIMULATED quote: not produced by TEE hardware; it proves nothing about the host"
                .into(),
        );
        extra
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<Tee, QuoteError> {
        let quote = self.quote_bytes(report_data);
        Ok(Tee {
            provider: PROVIDER_SIMULATED.into(),
            quote: hex::encode(quote),
            report_data: hex::encode(report_data),
            extra: self.bound_fields(),
        })
    }
}

/// What a verified simulated quote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedQuote {
    /// The measurements it carries.
    pub measurements: SimulatedMeasurements,
    /// Its report_data.
    pub report_data: [u8; 64],
}

/// Parses a simulated quote and checks its simulator signature (strict Ed25519 under the
/// published simulator key; a quote carrying any other key is refused).
pub fn verify_simulated_quote(quote: &[u8]) -> Result<SimulatedQuote, QuoteError> {
    if quote.len() != SIMULATED_QUOTE_LEN {
        return Err(QuoteError::Malformed(format!(
            "simulated quote is {} bytes, want {SIMULATED_QUOTE_LEN}",
            quote.len()
        )));
    }
    let u16_at = |o: usize| u16::from_le_bytes([quote[o], quote[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(quote[o..o + 4].try_into().expect("4 bytes"));
    if u16_at(0) != 4 || u32_at(4) != TEE_TYPE_TDX || u16_at(2) != SIM_ATT_KEY_TYPE {
        return Err(QuoteError::Malformed(
            "header is not a simulated TDX v4 header".into(),
        ));
    }
    if &quote[12..28] != SIM_QE_VENDOR || u32_at(SIGNED_LEN) != 96 {
        return Err(QuoteError::Malformed(
            "not labelled as a simulated quote".into(),
        ));
    }
    if quote[700..732] != *simulator_verifying_key().as_bytes() {
        return Err(QuoteError::SignatureInvalid(
            "carries a key other than the published simulator key",
        ));
    }
    let sig = Signature::from_slice(&quote[636..700])
        .map_err(|_| QuoteError::SignatureInvalid("signature bytes malformed"))?;
    simulator_verifying_key()
        .verify_strict(&quote[..SIGNED_LEN], &sig)
        .map_err(|_| QuoteError::SignatureInvalid("signature does not match the quote"))?;
    let arr48 = |o: usize| -> [u8; 48] { quote[o..o + 48].try_into().expect("48 bytes") };
    Ok(SimulatedQuote {
        measurements: SimulatedMeasurements {
            mr_td: arr48(OFF_MRTD),
            mr_config_id: arr48(OFF_MRCONFIGID),
            rtmr0: arr48(OFF_RTMR0),
        },
        report_data: quote[OFF_REPORT_DATA_V4..OFF_REPORT_DATA_V4 + 64]
            .try_into()
            .expect("64 bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::quote::tdx_report_data;

    #[test]
    fn a_cached_measurement_is_named_by_the_files_identity() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"one").unwrap();
        let first = measurement_file(dir.path(), &bin).unwrap();
        assert_eq!(first, measurement_file(dir.path(), &bin).unwrap());
        assert!(first.starts_with(dir.path()));
        // Rewritten in place (same size): its modification and change times move on.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&bin, b"two").unwrap();
        assert_ne!(first, measurement_file(dir.path(), &bin).unwrap());
        // Replaced by another file (another inode): another name too.
        let other = dir.path().join("other");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &bin).unwrap();
        assert_ne!(first, measurement_file(dir.path(), &bin).unwrap());
        assert!(measurement_file(dir.path(), &dir.path().join("missing")).is_none());
    }

    fn provider() -> SimulatedQuoteProvider {
        SimulatedQuoteProvider::new(SimulatedMeasurements::of(b"binary", b"config"))
    }

    #[test]
    fn simulated_quote_has_the_documented_layout_and_verifies() {
        let rd = [7u8; 64];
        let q = provider().quote_bytes(&rd);
        assert_eq!(q.len(), SIMULATED_QUOTE_LEN);
        assert_eq!(&q[0..2], &[4, 0]);
        assert_eq!(&q[4..8], &[0x81, 0, 0, 0]);
        assert_eq!(&q[12..28], b"SV-SIMULATED-TDX");
        assert_eq!(&q[568..632], &rd);
        let mr: [u8; 48] = Sha384::digest(b"binary").into();
        assert_eq!(&q[184..232], &mr);
        let parsed = verify_simulated_quote(&q).unwrap();
        assert_eq!(parsed.report_data, rd);
        assert_eq!(parsed.measurements, *provider().measurements());
        // The generic TDX reader finds the same report_data.
        assert_eq!(tdx_report_data(&q).unwrap(), rd);
    }

    #[test]
    fn any_changed_byte_of_a_simulated_quote_is_detected() {
        let q = provider().quote_bytes(&[1u8; 64]);
        for i in [0usize, 30, 200, 570, 631, 640, 710] {
            let mut bad = q.clone();
            bad[i] ^= 0x01;
            assert!(verify_simulated_quote(&bad).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn a_quote_re_signed_with_another_key_is_refused() {
        let mut q = provider().quote_bytes(&[1u8; 64]);
        let other = SigningKey::from_bytes(&[9u8; 32]);
        let sig = other.sign(&q[..SIGNED_LEN]);
        q[636..700].copy_from_slice(&sig.to_bytes());
        q[700..732].copy_from_slice(other.verifying_key().as_bytes());
        assert!(matches!(
            verify_simulated_quote(&q),
            Err(QuoteError::SignatureInvalid(_))
        ));
    }
}
