//! Intel TDX (and SGX) quotes: reading the header and the TD report body (v4, and v5 with a
//! TD report body) by layout ([`tdx_report_data`], [`tdx_measurements`]: no signature
//! checked), and verifying them offline with dcap-qvl ([`verify_dcap`]: PCK chain to a
//! pinned root, CRLs, QE report, quote signature, TCB info and QE identity) under a
//! [`TcbPolicy`].
//!
//! dcap-qvl is used with its `rustcrypto` backend and no `report` feature: no network client
//! and no `ring` in the verification path. Its errors are text (anyhow); they are carried as
//! [`QuoteError::ChainInvalid`] and never matched on. The collateral's own validity window
//! (TCB info, QE identity) is checked here first, so an outdated pair fails as *expired* with
//! the item and date named.

use super::QuoteError;

/// Length of the quote header (v4 and v5).
pub(crate) const HEADER_LEN: usize = 48;
/// `tee_type` of a TDX quote.
pub(crate) const TEE_TYPE_TDX: u32 = 0x81;

/// Reads the REPORTDATA field of a TDX quote (v4, or v5 with a TD report body). Checks the
/// shape only: the quote's signature chain (Intel PCS collateral) is not checked here.
pub fn tdx_report_data(quote: &[u8]) -> Result<[u8; 64], QuoteError> {
    if quote.len() < HEADER_LEN + 6 {
        return Err(QuoteError::Malformed(format!(
            "{} bytes is too short for a TDX quote",
            quote.len()
        )));
    }
    let version = u16::from_le_bytes([quote[0], quote[1]]);
    let tee_type = u32::from_le_bytes(quote[4..8].try_into().expect("4 bytes"));
    if tee_type != TEE_TYPE_TDX {
        return Err(QuoteError::Malformed(format!(
            "TEE type {tee_type:#x} is not TDX (0x81)"
        )));
    }
    // v4: the TD report body follows the 48-byte header. v5: a 2-byte body type and a
    // 4-byte body size come first; types 2 (TDX 1.0) and 3 (TDX 1.5) both start with the
    // TDX 1.0 layout, so REPORTDATA sits 520 bytes into the body either way.
    let body = match version {
        4 => HEADER_LEN,
        5 => {
            let body_type = u16::from_le_bytes([quote[48], quote[49]]);
            if body_type != 2 && body_type != 3 {
                return Err(QuoteError::Malformed(format!(
                    "v5 body type {body_type} is not a TD report"
                )));
            }
            HEADER_LEN + 6
        }
        v => return Err(QuoteError::Malformed(format!("quote version {v}"))),
    };
    let start = body + 520;
    quote
        .get(start..start + 64)
        .map(|s| s.try_into().expect("64 bytes"))
        .ok_or_else(|| QuoteError::Malformed("quote ends before REPORTDATA".into()))
}

// ---------------------------------------------------------------------------------------
// DCAP verification

/// Offset of the QE vendor id in the quote header.
const OFF_QE_VENDOR: usize = 12;

/// The TCB statuses Intel's TCB info can assign, by their Intel names (what `tcbStatus`
/// holds and what `[attest] tcb_policy` lists).
pub const TCB_STATUSES: [&str; 9] = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
    "Revoked",
];

/// The TCB statuses a relying party accepts. `UpToDate` alone by default: any other status
/// means Intel knows of a fix the platform has not applied. `Revoked` is never accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbPolicy {
    allowed: Vec<String>,
}

impl Default for TcbPolicy {
    fn default() -> Self {
        TcbPolicy {
            allowed: vec!["UpToDate".into()],
        }
    }
}

impl TcbPolicy {
    /// A policy accepting exactly `names` (Intel status names, see [`TCB_STATUSES`]).
    /// Unknown names, `Revoked` and an empty list are refused.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, QuoteError> {
        if names.is_empty() {
            return Err(QuoteError::TcbPolicy(
                "the list is empty: no quote could pass".into(),
            ));
        }
        let mut allowed = Vec::new();
        for name in names {
            let name = name.as_ref();
            if name == "Revoked" {
                return Err(QuoteError::TcbPolicy(
                    "\"Revoked\" can never be accepted".into(),
                ));
            }
            if !TCB_STATUSES.contains(&name) {
                return Err(QuoteError::TcbPolicy(format!(
                    "unknown TCB status {name:?}; known: {}",
                    TCB_STATUSES.join(", ")
                )));
            }
            if !allowed.iter().any(|a| a == name) {
                allowed.push(name.to_string());
            }
        }
        Ok(TcbPolicy { allowed })
    }

    /// The accepted statuses, in the order given.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// Whether `status` passes.
    pub fn allows(&self, status: &str) -> bool {
        self.allowed.iter().any(|a| a == status)
    }

    /// `Ok` when the verified quote's TCB status passes, else [`QuoteError::TcbRefused`].
    pub fn check(&self, report: &DcapReport) -> Result<(), QuoteError> {
        if self.allows(&report.tcb_status) {
            Ok(())
        } else {
            Err(QuoteError::TcbRefused {
                status: report.tcb_status.clone(),
                advisory_ids: report.advisory_ids.clone(),
                allowed: self.allowed.clone(),
            })
        }
    }
}

/// The collateral a DCAP quote is verified with: Intel's TCB info, QE identity, CRLs and
/// their issuer chains, in dcap-qvl's JSON layout (`QuoteCollateralV3`; byte fields as hex).
pub type Collateral = dcap_qvl::QuoteCollateralV3;

/// Parses collateral JSON (dcap-qvl's `QuoteCollateralV3` layout).
pub fn parse_collateral(json: &[u8]) -> Result<Collateral, QuoteError> {
    serde_json::from_slice(json).map_err(|e| QuoteError::Collateral(e.to_string()))
}

/// Reads a root CA certificate (PEM `CERTIFICATE` or DER) into DER.
pub fn parse_root_ca(bytes: &[u8]) -> Result<Vec<u8>, QuoteError> {
    let text = std::str::from_utf8(bytes).ok();
    match text.filter(|t| t.contains("-----BEGIN")) {
        Some(t) => {
            let begin = "-----BEGIN CERTIFICATE-----";
            let end = "-----END CERTIFICATE-----";
            let start = t
                .find(begin)
                .ok_or_else(|| QuoteError::RootCa("no CERTIFICATE block in the PEM".into()))?;
            let rest = &t[start + begin.len()..];
            let stop = rest
                .find(end)
                .ok_or_else(|| QuoteError::RootCa("unterminated PEM block".into()))?;
            let b64: String = rest[..stop].split_whitespace().collect();
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| QuoteError::RootCa(format!("PEM body is not base64: {e}")))
        }
        None if bytes.first() == Some(&0x30) => Ok(bytes.to_vec()),
        None => Err(QuoteError::RootCa(
            "neither a PEM certificate nor DER".into(),
        )),
    }
}

/// Which TEE produced a verified quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TeeType {
    /// Intel TDX (a TD report).
    #[serde(rename = "TDX")]
    Tdx,
    /// Intel SGX (an enclave report).
    #[serde(rename = "SGX")]
    Sgx,
}

/// What a DCAP-verified quote says. Measurements are hex in JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DcapReport {
    /// TDX or SGX.
    pub tee_type: TeeType,
    /// Intel's TCB status of the platform (`UpToDate`, `SWHardeningNeeded`, ...).
    pub tcb_status: String,
    /// Intel security advisories that apply (`INTEL-SA-...`).
    pub advisory_ids: Vec<String>,
    /// MRTD (TDX): the initial TD measurement, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_td: Option<String>,
    /// RTMR0-3 (TDX), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmr: Option<[String; 4]>,
    /// MRENCLAVE (SGX).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_enclave: Option<String>,
    /// MRSIGNER (SGX).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_signer: Option<String>,
    /// REPORTDATA, hex.
    pub report_data: String,
}

impl DcapReport {
    /// RTMR `index` (0-3) as bytes, for a TDX quote.
    pub fn rtmr_bytes(&self, index: usize) -> Option<[u8; 48]> {
        let hex_text = self.rtmr.as_ref()?.get(index)?;
        hex::decode(hex_text).ok()?.try_into().ok()
    }
}

/// Whether `quote` is one of our simulated quotes (by its QE vendor id).
pub fn is_simulated(quote: &[u8]) -> bool {
    quote.get(OFF_QE_VENDOR..OFF_QE_VENDOR + 16) == Some(&super::simulated::SIM_QE_VENDOR[..])
}

/// Parses an RFC 3339 date of the collateral into Unix seconds.
fn unix_of(item: &'static str, field: &str, text: &str) -> Result<i64, QuoteError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| QuoteError::Collateral(format!("{item} {field} {text:?}: {e}")))
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn format_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Checks that `at` lies inside the validity of the collateral's TCB info and QE identity
/// (`issueDate` ..= `nextUpdate`), so an out-of-date pair fails as *expired* with the item
/// and date named. dcap-qvl checks the same again, plus the CRLs' own update window.
pub fn check_collateral_time(collateral: &Collateral, at: i64) -> Result<(), QuoteError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Dates {
        issue_date: String,
        next_update: String,
    }
    for (item, json) in [
        ("TCB info", &collateral.tcb_info),
        ("QE identity", &collateral.qe_identity),
    ] {
        let dates: Dates = serde_json::from_str(json)
            .map_err(|e| QuoteError::Collateral(format!("{item}: {e}")))?;
        let issued = unix_of(item, "issueDate", &dates.issue_date)?;
        let next = unix_of(item, "nextUpdate", &dates.next_update)?;
        if at < issued {
            return Err(QuoteError::CollateralNotYetValid {
                item,
                issued: dates.issue_date,
                at: format_rfc3339(at),
            });
        }
        if at > next {
            return Err(QuoteError::CollateralExpired {
                item,
                next_update: dates.next_update,
                at: format_rfc3339(at),
            });
        }
    }
    Ok(())
}

/// Verifies a TDX or SGX quote with dcap-qvl at Unix time `at`: the PCK certificate chain
/// up to `root_ca_der` (Intel's SGX root CA when `None`), the CRLs, the QE report and its
/// signature, the quote signature, the TCB info and QE identity signatures and validity, and
/// the TD attributes (a debug TD is refused). Returns what the quote says, including its TCB
/// status; apply a [`TcbPolicy`] to that. No network.
pub fn verify_dcap(
    quote: &[u8],
    collateral: &Collateral,
    at: i64,
    root_ca_der: Option<&[u8]>,
) -> Result<DcapReport, QuoteError> {
    if is_simulated(quote) {
        return Err(QuoteError::NotIntelSigned);
    }
    // Parse first: a quote that is not a quote is "malformed", not "badly signed".
    dcap_qvl::quote::Quote::parse(quote).map_err(|e| QuoteError::Malformed(format!("{e:#}")))?;
    check_collateral_time(collateral, at)?;
    let now = u64::try_from(at).map_err(|_| QuoteError::Collateral("time before 1970".into()))?;
    use dcap_qvl::configs::RustCryptoConfig;
    use dcap_qvl::verify::QuoteVerifier;
    let verifier = match root_ca_der {
        Some(der) => QuoteVerifier::<RustCryptoConfig>::new_with_config(der.to_vec()),
        None => QuoteVerifier::new_prod().with_config::<RustCryptoConfig>(),
    };
    let verified = verifier
        .verify(quote, collateral, now)
        .map_err(|e| QuoteError::ChainInvalid(format!("{e:#}")))?;
    let report = &verified.report;
    let (tee_type, mr_td, rtmr, mr_enclave, mr_signer, report_data) = match report {
        dcap_qvl::quote::Report::SgxEnclave(r) => (
            TeeType::Sgx,
            None,
            None,
            Some(hex::encode(r.mr_enclave)),
            Some(hex::encode(r.mr_signer)),
            hex::encode(r.report_data),
        ),
        other => {
            let td = other
                .as_td10()
                .ok_or_else(|| QuoteError::Malformed("unknown report body".into()))?;
            (
                TeeType::Tdx,
                Some(hex::encode(td.mr_td)),
                Some([
                    hex::encode(td.rt_mr0),
                    hex::encode(td.rt_mr1),
                    hex::encode(td.rt_mr2),
                    hex::encode(td.rt_mr3),
                ]),
                None,
                None,
                hex::encode(td.report_data),
            )
        }
    };
    Ok(DcapReport {
        tee_type,
        tcb_status: verified.status,
        advisory_ids: verified.advisory_ids,
        mr_td,
        rtmr,
        mr_enclave,
        mr_signer,
        report_data,
    })
}

/// MRTD and RTMR0-3 read from a TDX quote's TD report body (v4, or v5 with a TD report),
/// without checking any signature: use [`verify_dcap`] for facts you rely on.
pub fn tdx_measurements(quote: &[u8]) -> Result<([u8; 48], [[u8; 48]; 4]), QuoteError> {
    // tdx_report_data checks the shape up to the end of REPORTDATA (body + 584), so every
    // field before it is in bounds. In the body: MRTD at 136, RTMR0-3 at 328 + 48 * i.
    tdx_report_data(quote)?;
    let body = match u16::from_le_bytes([quote[0], quote[1]]) {
        4 => HEADER_LEN,
        _ => HEADER_LEN + 6,
    };
    let at = |o: usize| -> [u8; 48] {
        quote[body + o..body + o + 48]
            .try_into()
            .expect("48 bytes inside the checked body")
    };
    Ok((at(136), [at(328), at(376), at(424), at(472)]))
}
