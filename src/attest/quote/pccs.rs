//! A client of a PCCS (Intel's Provisioning Certificate Caching Service, or Intel's PCS
//! itself): fetches the collateral a quote is verified with, at signing time, so the
//! attestation carries it and verifies offline later.
//!
//! For a quote whose certification data holds its PCK chain (type 5, what TDX and current
//! SGX quote generation produce), the FMSPC and the PCK CA (`processor` / `platform`) come
//! from the PCK leaf certificate. Then, under `<base>/{sgx|tdx}/certification/v4/`:
//!
//! | request | answer | issuer chain header |
//! |---|---|---|
//! | `sgx/.../pckcrl?ca=<ca>&encoding=der` | the PCK CRL (DER) | `SGX-PCK-CRL-Issuer-Chain` |
//! | `<tee>/.../tcb?fmspc=<FMSPC>` | `{"tcbInfo": ..., "signature": hex}` | `TCB-Info-Issuer-Chain` (or `SGX-TCB-Info-Issuer-Chain`) |
//! | `<tee>/.../qe/identity` | `{"enclaveIdentity": ..., "signature": hex}` | `SGX-Enclave-Identity-Issuer-Chain` |
//! | `sgx/.../rootcacrl` | the root CA CRL (hex from a PCCS, DER from the PCS) | |
//!
//! Issuer chains arrive URL-encoded (PEM). The signed JSON objects are kept byte-exact (the
//! TCB info and QE identity signatures cover those bytes). Every request runs under one
//! deadline and a size cap. Nothing fetched is trusted: the quote is verified against it
//! with [`super::verify_dcap`], and the chain ends in the pinned root.

use std::time::Duration;

use serde_json::Value;

use super::{Collateral, QuoteError};

/// Deadline of one collateral fetch (all requests).
pub const PCCS_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest answer read per request (collateral pieces are a few KiB).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

fn err(message: impl std::fmt::Display) -> QuoteError {
    QuoteError::Pccs(message.to_string())
}

/// Decodes `%XX` escapes (issuer chain headers are URL-encoded PEM).
fn percent_decode(text: &str) -> Result<String, QuoteError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex_pair = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| err("bad %-escape in an issuer chain header"))?;
            out.push(hex_pair);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err("issuer chain header is not UTF-8"))
}

struct Answer {
    body: Vec<u8>,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn header(&self, names: &[&str]) -> Result<String, QuoteError> {
        names
            .iter()
            .find_map(|n| self.headers.get(*n))
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| err(format!("answer lacks the {} header", names.join(" / "))))
            .and_then(percent_decode)
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Answer, QuoteError> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(format!("GET {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(err(format!("GET {url}: HTTP {}", response.status())));
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| err(format!("GET {url}: {e}")))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(err(format!(
                "GET {url}: answer over {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { body, headers })
}

/// Splits `{"<field>": {...}, "signature": "<hex>"}` into the signed JSON text and the
/// signature bytes.
fn signed_json(body: &[u8], field: &str) -> Result<(String, Vec<u8>), QuoteError> {
    // serde_json keeps key order here (dcap-qvl switches on `preserve_order`), and Intel's
    // answers are compact, so the object serializes back to the bytes that were signed.
    let value: Value =
        serde_json::from_slice(body).map_err(|e| err(format!("{field}: not JSON: {e}")))?;
    let inner = value
        .get(field)
        .ok_or_else(|| err(format!("answer has no {field}")))?;
    let signature = value
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| err(format!("{field}: signature is not hex")))?;
    Ok((inner.to_string(), signature))
}

/// Fetches the collateral for `quote` from the PCCS at `base_url`.
pub async fn fetch_collateral(base_url: &str, quote: &[u8]) -> Result<Collateral, QuoteError> {
    let parsed = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| QuoteError::Malformed(format!("{e:#}")))?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&parsed)
        .map_err(|e| err(format!("reading the FMSPC from the PCK certificate: {e:#}")))?;
    let ca = dcap_qvl::intel::quote_ca(&parsed).map_err(|e| {
        err(format!(
            "reading the PCK CA from the PCK certificate: {e:#}"
        ))
    })?;
    let tee = if parsed.header.is_sgx() { "sgx" } else { "tdx" };
    let base = base_url
        .trim_end_matches('/')
        .trim_end_matches("/sgx/certification/v4")
        .trim_end_matches("/tdx/certification/v4");
    let client = reqwest::Client::builder()
        .timeout(PCCS_TIMEOUT)
        .build()
        .map_err(err)?;
    let fetch = async {
        let pck = get(
            &client,
            &format!(
                "{base}/sgx/certification/v4/pckcrl?ca={}&encoding=der",
                ca.as_id_str()
            ),
        )
        .await?;
        let tcb = get(
            &client,
            &format!(
                "{base}/{tee}/certification/v4/tcb?fmspc={}",
                hex::encode_upper(fmspc)
            ),
        )
        .await?;
        let qe = get(
            &client,
            &format!("{base}/{tee}/certification/v4/qe/identity"),
        )
        .await?;
        let root = get(&client, &format!("{base}/sgx/certification/v4/rootcacrl")).await?;
        let (tcb_info, tcb_info_signature) = signed_json(&tcb.body, "tcbInfo")?;
        let (qe_identity, qe_identity_signature) = signed_json(&qe.body, "enclaveIdentity")?;
        // A PCCS answers the root CA CRL as hex text, Intel's PCS as DER.
        let root_ca_crl = match std::str::from_utf8(&root.body) {
            Ok(text) if text.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                hex::decode(text.trim()).map_err(|_| err("root CA CRL: odd hex"))?
            }
            _ => root.body,
        };
        Ok::<_, QuoteError>(Collateral {
            pck_crl_issuer_chain: pck.header(&["SGX-PCK-CRL-Issuer-Chain"])?,
            root_ca_crl,
            pck_crl: pck.body,
            tcb_info_issuer_chain: tcb
                .header(&["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"])?,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain: qe.header(&["SGX-Enclave-Identity-Issuer-Chain"])?,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        })
    };
    tokio::time::timeout(PCCS_TIMEOUT, fetch)
        .await
        .map_err(|_| err(format!("no collateral within {} s", PCCS_TIMEOUT.as_secs())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_issuer_chains() {
        assert_eq!(
            percent_decode("-----BEGIN%20CERT%0A").unwrap(),
            "-----BEGIN CERT\n"
        );
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
    }
}
