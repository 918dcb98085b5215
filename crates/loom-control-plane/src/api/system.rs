//! Readiness, status, agents and API keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use loom_api::{CreateKey, KeyDto, status_counts};
use loom_domain::Role;
use serde_json::{Value, json};

use super::ApiJson;
use crate::{Error, Shared, generate_key, hash_key};

/// `/readyz` and `/api/v1/health`: 200 when the store and the bus answer, 503 otherwise.
pub(crate) async fn readiness(State(s): State<Arc<Shared>>) -> (StatusCode, Json<Value>) {
    let store = s.store.last_event_seq().await.map(|_| ()).map_err(|e| e.to_string());
    let bus = s.bus.health().await;
    let bus_ok = bus.connected && bus.jetstream;
    let ok = store.is_ok() && bus_ok;
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "bus": if bus_ok { "ok".to_string() } else { format!("{bus:?}") },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

pub(crate) async fn status(State(s): State<Arc<Shared>>) -> Result<Json<Value>, Error> {
    let projects = s.store.list_projects().await?;
    let counts = s.counts.get(&*s.store).await?;
    let agents = s.bus.list_agents().await.map(|a| a.len()).unwrap_or(0);
    let usage = super::attempts::usage_of(&*s.store, None).await?;
    Ok(Json(json!({ "projects": projects.len(), "beads": status_counts(&counts), "agents": agents, "usage": usage })))
}

pub(crate) async fn agents(State(s): State<Arc<Shared>>) -> Result<Json<Value>, Error> {
    let live = s.bus.list_agents().await?;
    Ok(Json(serde_json::to_value(&live).unwrap_or_default()))
}

pub(crate) async fn list_keys(State(s): State<Arc<Shared>>) -> Result<Json<Vec<KeyDto>>, Error> {
    Ok(Json(s.store.list_api_keys().await?.iter().map(KeyDto::from).collect()))
}

pub(crate) async fn create_key(
    State(s): State<Arc<Shared>>,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<KeyDto>), Error> {
    let role: Role = req.role.parse()?;
    let secret = generate_key();
    let key = s.store.create_api_key(&req.name, role, &hash_key(&secret)).await?;
    let mut dto = KeyDto::from(&key);
    dto.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(dto)))
}

pub(crate) async fn revoke_key(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<StatusCode, Error> {
    s.store.revoke_api_key(&id).await?;
    s.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Prometheus text format; bead gauges are at most `counts::TTL` old, agents are read live.
/// The longest one bus call of a scrape may take.
const SCRAPE_CALL: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) async fn metrics(State(s): State<Arc<Shared>>) -> Result<String, Error> {
    for (status, n) in s.counts.get(&*s.store).await? {
        metrics::gauge!("loom_beads", "status" => status.as_str()).set(n as f64);
    }
    // Each bus figure is bounded: a scrape answers with what it has within Prometheus's scrape
    // timeout even when the bus is slow or restarting (a stale gauge keeps its last value).
    if let Ok(Ok(agents)) = tokio::time::timeout(SCRAPE_CALL, s.bus.list_agents()).await {
        metrics::gauge!("loom_agents_live").set(agents.len() as f64);
        for status in ["idle", "busy", "draining", "offline"] {
            let n = agents.iter().filter(|a| a.status.as_str() == status).count();
            metrics::gauge!("loom_agents", "status" => status).set(n as f64);
        }
    }
    let (running, reserved, advertised) = s.slots().totals();
    metrics::gauge!("loom_dispatch_slots", "state" => "in_use").set(f64::from(running));
    metrics::gauge!("loom_dispatch_slots", "state" => "reserved").set(f64::from(reserved));
    metrics::gauge!("loom_dispatch_slots", "state" => "advertised").set(f64::from(advertised));
    metrics::gauge!("loom_leader").set(if s.is_leader() { 1.0 } else { 0.0 });
    // Queue depth and dead letters: the stream sizes (one cheap server call each).
    for kind in [loom_bus::StreamKind::Tasks, loom_bus::StreamKind::Dlq] {
        if let Ok(Ok(n)) = tokio::time::timeout(SCRAPE_CALL, s.bus.stream_messages(kind)).await {
            metrics::gauge!("loom_bus_stream_messages", "stream" => kind.token()).set(n as f64);
        }
    }
    let consumers = tokio::time::timeout(SCRAPE_CALL, s.bus.health()).await.map(|h| h.consumers).unwrap_or_default();
    for c in consumers {
        metrics::gauge!("loom_bus_consumer_pending", "consumer" => c.consumer.clone()).set(c.num_pending as f64);
        metrics::gauge!("loom_bus_consumer_ack_pending", "consumer" => c.consumer).set(c.num_ack_pending as f64);
    }
    Ok(loom_telemetry::prometheus().render())
}
