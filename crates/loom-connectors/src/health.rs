//! One health check per kind, each an HTTP request under the connector's timeout: an LLM
//! provider's `GET /v1/models` (its model list kept), prometheus `/-/healthy`, grafana
//! `/api/health`, jaeger `/`, a git host's `GET /user` with its token, a webhook's `HEAD` (any
//! answer below 500 means it is there), a generic endpoint's `GET {health_path}`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::{Method, RequestBuilder};

use crate::model::{Health, Kind, Spec, Status};

/// Checks `spec` once; never longer than its `check_timeout` (plus scheduling).
pub(crate) async fn check(http: &reqwest::Client, spec: &Spec) -> Health {
    let (started, at) = (Instant::now(), Utc::now());
    let outcome = tokio::time::timeout(spec.check_timeout, probe(http, spec)).await;
    let latency = started.elapsed();
    let (status, message, models) = match outcome {
        Err(_) => (Status::Unhealthy, format!("timed out after {}", human(spec.check_timeout)), Vec::new()),
        Ok(Err(why)) => (Status::Unhealthy, why, Vec::new()),
        Ok(Ok(models)) => (Status::Healthy, String::new(), models),
    };
    // `checked_at` is when the check began, so a slow check never overrides a later one's outcome.
    Health { connector_id: spec.id.clone(), status, message, checked_at: Some(at), latency, models }
}

/// The request of each kind; `Ok` with the models an LLM provider listed (empty for others).
async fn probe(http: &reqwest::Client, spec: &Spec) -> Result<Vec<String>, String> {
    let base = spec.url.trim_end_matches('/');
    let request = match spec.kind {
        Kind::LlmProvider => {
            let url = if base.ends_with("/v1") { format!("{base}/models") } else { format!("{base}/v1/models") };
            bearer(http.get(url), &spec.secrets, "api_key")
        }
        Kind::Prometheus => http.get(format!("{base}/-/healthy")),
        Kind::Grafana => http.get(format!("{base}/api/health")),
        Kind::Jaeger => http.get(format!("{base}/")),
        Kind::GitHost => bearer(http.get(format!("{base}/user")), &spec.secrets, "token"),
        Kind::Webhook => http.request(Method::HEAD, &spec.url),
        Kind::Http => {
            let path = spec.settings.get("health_path").map_or("", String::as_str);
            bearer(http.get(format!("{base}{path}")), &spec.secrets, "bearer_token")
        }
    };
    let response = request.send().await.map_err(|e| format!("unreachable: {}", without_url(e)))?;
    let code = response.status();
    let reachable = spec.kind == Kind::Webhook && code.as_u16() < 500;
    if !code.is_success() && !reachable {
        return Err(format!("HTTP {}", code.as_u16()));
    }
    if spec.kind != Kind::LlmProvider {
        return Ok(Vec::new());
    }
    let body: serde_json::Value =
        response.json().await.map_err(|e| format!("/v1/models is not JSON: {}", without_url(e)))?;
    let models = body["data"].as_array().ok_or("/v1/models has no data list")?;
    Ok(models.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect())
}

fn bearer(request: RequestBuilder, secrets: &BTreeMap<String, String>, name: &str) -> RequestBuilder {
    match secrets.get(name) {
        Some(secret) => request.bearer_auth(secret),
        None => request,
    }
}

/// A reqwest error without its URL (a URL may carry a token in its query), with its causes.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// "5s", "1.5s", "250ms".
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
