//! `/api/v1/connectors`: the REST façade of the connectors service (in process or over gRPC).
//! Secrets are accepted, never returned; writes need the admin role (they hold secrets), a check
//! the operator role. Without a connectors service every route answers 503, naming the setting.
//! While the service cannot be reached, reads answer the connectors as last read (their last
//! known health) with `X-Loom-Stale: <why>`, and writes a clear 503; it recovers by itself.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use loom_api::{ConnectorDto, ConnectorHealthDto, ConnectorRequest, UpdateConnector};
use loom_connectors::{Api, Connector, Health, Kind, Mode, Spec};

use super::ApiJson;
use crate::{Error, Shared};

fn service(s: &Shared) -> Result<&Arc<dyn Api>, Error> {
    s.config.connectors.as_ref().ok_or_else(|| {
        Error::Connectors(loom_connectors::Error::Unavailable(
            "no connectors service: set [connectors] service_url, or encryption_key_file to run it in process".into(),
        ))
    })
}

/// The last list read from the connectors service.
#[derive(Debug, Default)]
pub(crate) struct LastConnectors(std::sync::Mutex<Option<Vec<ConnectorDto>>>);

pub(crate) type Read<T> = Result<(HeaderMap, Json<T>), Error>;

pub(crate) async fn list(State(s): State<Arc<Shared>>) -> Read<Vec<ConnectorDto>> {
    match service(&s)?.list().await {
        Ok(list) => {
            let list: Vec<ConnectorDto> = list.into_iter().map(dto).collect();
            *s.connectors_seen.0.lock().expect("not poisoned") = Some(list.clone());
            Ok((HeaderMap::new(), Json(list)))
        }
        Err(e) if e.is_transient() => match s.connectors_seen.0.lock().expect("not poisoned").clone() {
            Some(last) => Ok((stale(&e), Json(last))),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn get(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Read<ConnectorDto> {
    match service(&s)?.get(&id).await {
        Ok(c) => Ok((HeaderMap::new(), Json(dto(c)))),
        Err(e) if e.is_transient() => {
            let last = s.connectors_seen.0.lock().expect("not poisoned").clone().unwrap_or_default();
            match last.into_iter().find(|c| c.id == id) {
                Some(c) => Ok((stale(&e), Json(c))),
                None => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// `X-Loom-Stale`: why the answer is the last known one.
fn stale(e: &loom_connectors::Error) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let why = e.to_string().replace(['\r', '\n'], " ");
    let value = HeaderValue::from_str(&why).unwrap_or(HeaderValue::from_static("connectors service unavailable"));
    headers.insert("x-loom-stale", value);
    tracing::warn!(error = %e, "connectors service unavailable: answering the connectors as last read");
    headers
}

pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    ApiJson(req): ApiJson<ConnectorRequest>,
) -> Result<(StatusCode, Json<ConnectorDto>), Error> {
    let spec = spec(req.id, &req.kind, req.mode.as_deref(), req.url, req.check_interval_ms, req.check_timeout_ms)?;
    let spec = Spec {
        description: req.description,
        settings: req.settings,
        secrets: req.secrets,
        event_types: req.event_types,
        ..spec
    };
    Ok((StatusCode::CREATED, Json(dto(service(&s)?.register(spec).await?))))
}

pub(crate) async fn update(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateConnector>,
) -> Result<Json<ConnectorDto>, Error> {
    let spec = spec(id, &req.kind, req.mode.as_deref(), req.url, req.check_interval_ms, req.check_timeout_ms)?;
    let spec = Spec {
        description: req.description,
        settings: req.settings,
        secrets: req.secrets,
        event_types: req.event_types,
        ..spec
    };
    Ok(Json(dto(service(&s)?.update(req.expected_version, spec, &req.remove_secrets).await?)))
}

pub(crate) async fn remove(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<StatusCode, Error> {
    service(&s)?.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn check(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<ConnectorHealthDto>, Error> {
    Ok(Json(health(service(&s)?.check(&id).await?)))
}

fn spec(
    id: String,
    kind: &str,
    mode: Option<&str>,
    url: String,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
) -> Result<Spec, Error> {
    let mut spec = Spec::new(id, Kind::parse(kind)?, url);
    spec.mode = mode.map(Mode::parse).transpose()?.unwrap_or_default();
    if let Some(ms) = interval_ms {
        spec.check_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = timeout_ms {
        spec.check_timeout = Duration::from_millis(ms);
    }
    Ok(spec)
}

fn dto(c: Connector) -> ConnectorDto {
    ConnectorDto {
        kind: c.kind.as_str().into(),
        mode: c.mode.as_str().into(),
        secrets: loom_connectors::redacted(&c.secret_names),
        check_interval_ms: c.check_interval.as_millis() as u64,
        check_timeout_ms: c.check_timeout.as_millis() as u64,
        health: health(c.health),
        id: c.id,
        url: c.url,
        description: c.description,
        settings: c.settings,
        event_types: c.event_types,
        version: c.version,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn health(h: Health) -> ConnectorHealthDto {
    ConnectorHealthDto {
        status: h.status.as_str().into(),
        latency_ms: h.latency.as_millis() as u64,
        connector_id: h.connector_id,
        message: h.message,
        checked_at: h.checked_at,
        models: h.models,
    }
}
