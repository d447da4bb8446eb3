//! Webhook delivery: each queued message (see `store::webhooks`) is POSTed
//! to its webhook's URL, signed, until the receiver answers 2xx; retried
//! with doubling waits (10 s up to an hour, [`MAX_ATTEMPTS`] tries, about
//! a day) and kept across restarts. At least once: receivers de-duplicate
//! on `Starling-Delivery`.
//!
//! Signature: `Starling-Signature: t=<unix seconds>,v1=<hex>` where hex is
//! HMAC-SHA256 under the webhook's secret of `"<t>.<body>"` (check `t` is
//! recent to refuse replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::now_ms;
use crate::secrets::Sealer;
use crate::store::{Delivery, Store, StoreError};

/// Tries before a message is given up.
pub const MAX_ATTEMPTS: i64 = 15;
/// How long a receiver has to answer.
const TIMEOUT_MS: i64 = 10_000;

/// The `Starling-Signature` value of `body` at `t` (Unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &str) -> Result<String, String> {
    // HMAC takes keys of every length; the error type is the trait's.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|e| format!("webhook secret: {e}"))?;
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("t={t},v1={hex}"))
}

/// Wait before try `attempts + 1`.
fn backoff_ms(attempts: i64) -> i64 {
    (10_000i64 << attempts.clamp(0, 12)).min(3_600_000)
}

async fn send(http: &reqwest::Client, sealer: &Sealer, d: &Delivery) -> Result<(), String> {
    let secret = sealer.open(&d.webhook_id, &d.secret).map_err(|e| format!("the webhook's secret: {e}"))?;
    let t = now_ms() / 1000;
    let res = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("Starling-Webhooks/", env!("CARGO_PKG_VERSION")))
        .header("starling-event", &d.event)
        .header("starling-delivery", &d.id)
        .header("starling-signature", signature(&secret, t, &d.payload)?)
        .body(d.payload.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", res.status()))
    }
}

/// Send what is due; returns how many were delivered.
pub async fn deliver(store: &Store, sealer: &Sealer, http: &reqwest::Client) -> Result<usize, StoreError> {
    let due = store.due_deliveries(now_ms(), TIMEOUT_MS * 3, 50).await?;
    let sent = futures_util::future::join_all(due.iter().map(|d| send(http, sealer, d))).await;
    let mut delivered = 0;
    for (d, outcome) in due.iter().zip(sent) {
        match outcome {
            Ok(()) => {
                delivered += 1;
                store.delivery_done(&d.id, true, None, None).await?;
            }
            Err(why) => {
                let tries = d.attempts + 1;
                let next = (tries < MAX_ATTEMPTS).then(|| now_ms() + backoff_ms(tries - 1));
                tracing::warn!(delivery = %d.id, url = %d.url, tries, error = %why, "webhook not delivered");
                store.delivery_done(&d.id, false, next, Some(&why)).await?;
            }
        }
    }
    Ok(delivered)
}

/// The HTTP client webhooks are sent with.
pub fn client() -> Result<reqwest::Client, String> {
    crate::platforms::x::client_with_timeouts(std::time::Duration::from_millis(TIMEOUT_MS as u64), std::time::Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // Python's hmac: hmac.new(b"Jefe", b"0.what do ya want for nothing?", sha256).hexdigest().
        let sig = super::signature(b"Jefe", 0, "what do ya want for nothing?").expect("signed");
        assert_eq!(sig, "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc");
        assert_ne!(Ok(sig), super::signature(b"Jefe", 1, "what do ya want for nothing?"));
        assert_eq!(super::backoff_ms(0), 10_000);
        assert_eq!(super::backoff_ms(20), 3_600_000);
    }
}
