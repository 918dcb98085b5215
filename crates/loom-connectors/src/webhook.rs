//! Outgoing webhooks, signed per Standard Webhooks 1.0: headers `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` = `v1,` + base64 of
//! HMAC-SHA256(`{id}.{timestamp}.{body}`) under the secret (`whsec_` + base64 of its bytes).
//! A delivery is retried with exponential backoff and jitter; `410 Gone` stops it and disables
//! the connector (the receiver asked for no more).

use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;
use ring::hmac;

use crate::Error;
use crate::model::Spec;

const PREFIX: &str = "whsec_";

/// The key bytes of a `whsec_…` secret; refuses anything else, naming the rule.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::invalid("signing_secret", "must be whsec_ followed by base64 of 24 to 64 bytes");
    let b64 = secret.strip_prefix(PREFIX).ok_or_else(bad)?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
    if !(24..=64).contains(&key.len()) {
        return Err(bad());
    }
    Ok(key)
}

/// The `webhook-signature` value of one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref()))
}

/// How one delivery ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    /// `410 Gone`: the connector is to be disabled.
    Gone,
    /// Every attempt failed; the last reason.
    Failed(String),
}

/// Attempts and backoff of a delivery (a connector's `max_attempts` setting overrides).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 5, first_backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(30) }
    }
}

/// Sends `body` (the JSON of `{type, timestamp, data}`) to the webhook as message `id`, retrying
/// failures; each attempt is signed afresh (its own timestamp) and limited by the check timeout.
pub(crate) async fn deliver(http: &reqwest::Client, spec: &Spec, id: &str, body: &[u8], retry: Retry) -> Delivery {
    let Some(key) = spec.secrets.get("signing_secret").and_then(|s| decode_secret(s).ok()) else {
        return Delivery::Failed("the webhook has no usable signing_secret".into());
    };
    let attempts = spec.settings.get("max_attempts").and_then(|n| n.parse().ok()).unwrap_or(retry.attempts).max(1);
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(backoff(retry, attempt)).await;
        }
        let timestamp = chrono::Utc::now().timestamp();
        let request = http
            .post(&spec.url)
            .timeout(spec.check_timeout)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(&key, id, timestamp, body))
            .body(body.to_vec());
        match request.send().await {
            Ok(r) if r.status().is_success() => return Delivery::Delivered,
            Ok(r) if r.status().as_u16() == 410 => return Delivery::Gone,
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = format!("unreachable: {}", e.without_url()),
        }
        tracing::debug!(connector = %spec.id, attempt, error = %last, "webhook delivery failed");
    }
    Delivery::Failed(last)
}

/// `first · 2^(attempt-1)`, capped, with ±25 % jitter.
fn backoff(retry: Retry, attempt: u32) -> Duration {
    let base = retry.first_backoff.saturating_mul(1 << (attempt - 1).min(16)).min(retry.max_backoff);
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specs_example() {
        // The example of the Standard Webhooks specification (and its reference libraries).
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_AAAA").is_err(), "too short");
    }
}
