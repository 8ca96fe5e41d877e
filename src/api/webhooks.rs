//! Signed webhooks: on each terminal status a job's callbacks get a POST of the job JSON (the
//! `GET /verify/{id}` object), delivered from the store's outbox by any daemon, at least once,
//! with retries and exponential backoff.
//!
//! **Signature** (Standard Webhooks, <https://www.standardwebhooks.com/>): headers
//! `webhook-id` (the outbox row's id: the same on every retry, the receiver's idempotency
//! key), `webhook-timestamp` (Unix seconds of this try) and `webhook-signature`, a
//! space-separated list over the bytes `{id}.{timestamp}.{body}`:
//! - `v1a,<base64 Ed25519 signature>` always, by the daemon's signing key (the one in
//!   `GET /keys`, so a receiver needs no shared secret);
//! - `v1,<base64 HMAC-SHA256>` as well when `[webhooks] secret = "whsec_<base64 key>"` is set.
//!
//! **SSRF guard.** A callback URL must be `http(s)` and every address its host resolves to must
//! be public: loopback, private (RFC 1918, ULA), link-local (cloud metadata at
//! 169.254.169.254), CGNAT, unspecified, multicast, broadcast, documentation and reserved
//! ranges are refused, unless `[webhooks] allow_private = true`. The check runs when the
//! callback is registered (`POST /verify` answers 400 `callback_refused`) and again before
//! every delivery, and the request goes to the address that was checked (no second DNS
//! answer) with redirects off, so DNS rebinding or a redirect cannot reach inside.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::attest::keys::Signer;
use crate::config::WebhookSettings;
use crate::jobs::Scheduler;
use crate::store::WebhookDelivery;

/// How often an idle daemon looks at the outbox.
const POLL: Duration = Duration::from_millis(500);
/// Deliveries taken per look.
const BATCH: u32 = 8;
/// First retry delay; doubled per failed try (capped by the store at ten minutes).
const RETRY_BASE: Duration = Duration::from_secs(1);

/// Why a callback URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// Not an absolute http(s) URL with a host.
    #[error("{0:?} is not an absolute http(s) URL")]
    NotHttp(String),
    /// The host did not resolve.
    #[error("resolving {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The host resolves to a non-public address.
    #[error("{host} resolves to {addr}, a loopback, private, link-local or reserved address; callbacks there are refused")]
    NotPublic {
        /// The host.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
}

/// The address guard callbacks share with the network sink's allowlist.
pub use crate::netguard::is_public;

/// A callback that passed the guard: the URL and the address requests must go to.
#[derive(Debug, Clone)]
pub struct CheckedCallback {
    /// The URL.
    pub url: reqwest::Url,
    /// The checked address (the request is pinned to it).
    pub addr: SocketAddr,
}

/// Parses and resolves a callback URL, refusing non-public addresses unless `allow_private`.
pub async fn check_callback(
    url: &str,
    allow_private: bool,
) -> Result<CheckedCallback, CallbackError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| CallbackError::NotHttp(url.into()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.username() != "" {
        return Err(CallbackError::NotHttp(url.into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| CallbackError::NotHttp(url.into()))?
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| CallbackError::NotHttp(url.into()))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((bare, port)),
        )
        .await
        .map_err(|_| CallbackError::Resolve {
            host: host.clone(),
            reason: "no answer within 5s".into(),
        })?
        .map_err(|e| CallbackError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .collect(),
    };
    let first = *addrs.first().ok_or_else(|| CallbackError::Resolve {
        host: host.clone(),
        reason: "no addresses".into(),
    })?;
    if !allow_private {
        // Every answer must be public: a host with one public and one private address could
        // otherwise be steered to the private one.
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(CallbackError::NotPublic {
                host,
                addr: bad.ip(),
            });
        }
    }
    Ok(CheckedCallback {
        url: parsed,
        addr: first,
    })
}

/// HMAC-SHA256 (RFC 2104), over sha2's SHA-256 (the `hmac` crate in the tree is built for a
/// newer `digest` than the `sha2` this crate uses).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `webhook-signature` header value for `id.timestamp.body`.
pub fn signature_header(
    signer: &Signer,
    hmac_key: Option<&[u8]>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut header = format!("v1a,{}", b64.encode(signer.sign(&signed).to_bytes()));
    if let Some(key) = hmac_key {
        header = format!("v1,{} {header}", b64.encode(hmac_sha256(key, &signed)));
    }
    header
}

/// The delivery loop: takes due deliveries from the outbox and POSTs them, until aborted.
pub fn spawn_worker(
    scheduler: Scheduler,
    settings: WebhookSettings,
) -> tokio::task::JoinHandle<()> {
    let settings = Arc::new(settings);
    tokio::spawn(async move {
        let lease = Duration::from_secs(settings.timeout_secs.saturating_add(30));
        loop {
            let due = match scheduler.store().claim_webhooks(BATCH, lease).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "reading the webhook outbox failed");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            let mut tries = tokio::task::JoinSet::new();
            for delivery in due {
                let (scheduler, settings) = (scheduler.clone(), settings.clone());
                tries.spawn(async move { deliver(&scheduler, &settings, delivery).await });
            }
            while let Some(r) = tries.join_next().await {
                if let Err(e) = r {
                    tracing::error!(error = %e, "a webhook delivery task failed");
                }
            }
        }
    })
}

#[tracing::instrument(skip_all, fields(webhook_id = %delivery.id, job_id = %delivery.job_id, attempt = delivery.attempts + 1))]
async fn deliver(scheduler: &Scheduler, settings: &WebhookSettings, delivery: WebhookDelivery) {
    let outcome = try_deliver(scheduler, settings, &delivery).await;
    let metrics = scheduler.metrics();
    let recorded = match outcome {
        Ok(()) => {
            metrics.webhooks_delivered.inc();
            tracing::info!("webhook delivered");
            Ok(())
        }
        Err(reason) => {
            metrics.webhooks_failed.inc();
            let tries = delivery.attempts + 1;
            let retry = (tries < settings.max_attempts)
                .then(|| RETRY_BASE.saturating_mul(1u32 << (tries - 1).min(10)));
            tracing::warn!(%reason, given_up = retry.is_none(), "webhook delivery failed");
            Err((reason, retry))
        }
    };
    if let Err(e) = scheduler
        .store()
        .webhook_outcome(&delivery.id, recorded)
        .await
    {
        tracing::error!(error = %e, "recording the webhook outcome failed; it will be retried");
    }
}

async fn try_deliver(
    scheduler: &Scheduler,
    settings: &WebhookSettings,
    delivery: &WebhookDelivery,
) -> Result<(), String> {
    let job = scheduler
        .store()
        .get_job(delivery.job_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the job was deleted")?;
    let body =
        serde_json::to_vec(&super::views::JobView::from_record(&job)).map_err(|e| e.to_string())?;
    let target = check_callback(&delivery.url, settings.allow_private)
        .await
        .map_err(|e| e.to_string())?;
    let host = target.url.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(settings.timeout_secs))
        .resolve(&host, target.addr)
        .build()
        .map_err(|e| e.to_string())?;
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = signature_header(
        &scheduler.verifier().signer,
        settings.hmac_key().as_deref(),
        &delivery.id,
        timestamp,
        &body,
    );
    let resp = client
        .post(target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("sending: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_matches_the_standard_webhooks_reference_signature() {
        // The example from the Standard Webhooks specification's reference libraries.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signed = br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, signed)),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn callbacks_to_private_ranges_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://localhost/hook",
        ] {
            let err = check_callback(url, false).await.unwrap_err();
            assert!(
                matches!(err, CallbackError::NotPublic { .. }),
                "{url}: {err}"
            );
        }
        for url in ["ftp://example.com/", "not a url", "http://user:pw@1.1.1.1/"] {
            assert!(matches!(
                check_callback(url, false).await,
                Err(CallbackError::NotHttp(_))
            ));
        }
        let ok = check_callback("http://127.0.0.1:9/hook", true)
            .await
            .unwrap();
        assert_eq!(ok.addr, "127.0.0.1:9".parse().unwrap());
        let public = check_callback("https://1.1.1.1/hook", false).await.unwrap();
        assert_eq!(public.addr.port(), 443);
    }
}
