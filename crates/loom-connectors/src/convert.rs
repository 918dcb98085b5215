//! `loom.connectors.v1` messages ⇄ this crate's types. Inbound values are validated here or by
//! `Spec::validate`; an unknown enum value is `INVALID_ARGUMENT` naming the field.

use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_proto::connectors as pb;

use crate::Error;
use crate::model::{
    Connector, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Health, HealthChange, Kind, LlmEndpoint, Mode, Spec, Status,
};
use crate::registry::redacted;

pub(crate) fn kind_to(k: Kind) -> pb::ConnectorKind {
    match k {
        Kind::LlmProvider => pb::ConnectorKind::LlmProvider,
        Kind::Prometheus => pb::ConnectorKind::Prometheus,
        Kind::Grafana => pb::ConnectorKind::Grafana,
        Kind::Jaeger => pb::ConnectorKind::Jaeger,
        Kind::GitHost => pb::ConnectorKind::GitHost,
        Kind::Webhook => pb::ConnectorKind::Webhook,
        Kind::Http => pb::ConnectorKind::Http,
    }
}

pub(crate) fn kind_from(k: i32) -> Result<Kind, Error> {
    Ok(match pb::ConnectorKind::try_from(k) {
        Ok(pb::ConnectorKind::LlmProvider) => Kind::LlmProvider,
        Ok(pb::ConnectorKind::Prometheus) => Kind::Prometheus,
        Ok(pb::ConnectorKind::Grafana) => Kind::Grafana,
        Ok(pb::ConnectorKind::Jaeger) => Kind::Jaeger,
        Ok(pb::ConnectorKind::GitHost) => Kind::GitHost,
        Ok(pb::ConnectorKind::Webhook) => Kind::Webhook,
        Ok(pb::ConnectorKind::Http) => Kind::Http,
        _ => return Err(Error::invalid("kind", format!("{k} is not a connector kind"))),
    })
}

fn mode_to(m: Mode) -> pb::ConnectorMode {
    match m {
        Mode::Enabled => pb::ConnectorMode::Enabled,
        Mode::Disabled => pb::ConnectorMode::Disabled,
    }
}

fn mode_from(m: i32) -> Result<Mode, Error> {
    match pb::ConnectorMode::try_from(m) {
        // Unset means the default, enabled.
        Ok(pb::ConnectorMode::Unspecified | pb::ConnectorMode::Enabled) => Ok(Mode::Enabled),
        Ok(pb::ConnectorMode::Disabled) => Ok(Mode::Disabled),
        Err(_) => Err(Error::invalid("mode", format!("{m} is not a connector mode"))),
    }
}

pub(crate) fn status_to(s: Status) -> pb::ConnectorStatus {
    match s {
        Status::Unknown => pb::ConnectorStatus::Unknown,
        Status::Healthy => pb::ConnectorStatus::Healthy,
        Status::Unhealthy => pb::ConnectorStatus::Unhealthy,
    }
}

pub(crate) fn status_from(s: i32) -> Status {
    match pb::ConnectorStatus::try_from(s) {
        Ok(pb::ConnectorStatus::Healthy) => Status::Healthy,
        Ok(pb::ConnectorStatus::Unhealthy) => Status::Unhealthy,
        _ => Status::Unknown,
    }
}

fn time_to(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn time_from(t: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

fn duration_to(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn duration_from(d: Option<prost_types::Duration>, field: &str, default: Duration) -> Result<Duration, Error> {
    match d {
        None => Ok(default),
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(Error::invalid(field, "must not be negative")),
        Some(d) => Ok(Duration::new(d.seconds as u64, d.nanos as u32)),
    }
}

pub(crate) fn spec_from(s: pb::ConnectorSpec) -> Result<Spec, Error> {
    Ok(Spec {
        kind: kind_from(s.kind)?,
        mode: mode_from(s.mode)?,
        check_interval: duration_from(s.check_interval, "check_interval", DEFAULT_INTERVAL)?,
        check_timeout: duration_from(s.check_timeout, "check_timeout", DEFAULT_TIMEOUT)?,
        id: s.id,
        url: s.url,
        description: s.description,
        settings: s.settings,
        secrets: s.secrets,
        event_types: s.event_types,
    })
}

pub(crate) fn spec_to(s: Spec) -> pb::ConnectorSpec {
    pb::ConnectorSpec {
        kind: kind_to(s.kind) as i32,
        mode: mode_to(s.mode) as i32,
        check_interval: Some(duration_to(s.check_interval)),
        check_timeout: Some(duration_to(s.check_timeout)),
        id: s.id,
        url: s.url,
        description: s.description,
        settings: s.settings,
        secrets: s.secrets,
        event_types: s.event_types,
    }
}

pub(crate) fn connector_to(c: Connector) -> pb::Connector {
    pb::Connector {
        kind: kind_to(c.kind) as i32,
        mode: mode_to(c.mode) as i32,
        secrets: redacted(&c.secret_names),
        check_interval: Some(duration_to(c.check_interval)),
        check_timeout: Some(duration_to(c.check_timeout)),
        created_at: Some(time_to(c.created_at)),
        updated_at: Some(time_to(c.updated_at)),
        health: Some(health_to(c.health)),
        id: c.id,
        url: c.url,
        description: c.description,
        settings: c.settings,
        event_types: c.event_types,
        version: c.version,
    }
}

pub(crate) fn connector_from(c: pb::Connector) -> Result<Connector, Error> {
    Ok(Connector {
        kind: kind_from(c.kind)?,
        mode: mode_from(c.mode)?,
        secret_names: c.secrets.into_keys().collect(),
        check_interval: duration_from(c.check_interval, "check_interval", DEFAULT_INTERVAL)?,
        check_timeout: duration_from(c.check_timeout, "check_timeout", DEFAULT_TIMEOUT)?,
        created_at: time_from(c.created_at).unwrap_or_default(),
        updated_at: time_from(c.updated_at).unwrap_or_default(),
        health: c.health.map(health_from).unwrap_or_else(|| Health::unknown(&c.id, "")),
        id: c.id,
        url: c.url,
        description: c.description,
        settings: c.settings,
        event_types: c.event_types,
        version: c.version,
    })
}

pub(crate) fn health_to(h: Health) -> pb::Health {
    pb::Health {
        status: status_to(h.status) as i32,
        checked_at: h.checked_at.map(time_to),
        latency: Some(duration_to(h.latency)),
        connector_id: h.connector_id,
        message: h.message,
        models: h.models,
    }
}

pub(crate) fn health_from(h: pb::Health) -> Health {
    Health {
        status: status_from(h.status),
        checked_at: time_from(h.checked_at),
        latency: h.latency.and_then(|d| duration_from(Some(d), "latency", Duration::ZERO).ok()).unwrap_or_default(),
        connector_id: h.connector_id,
        message: h.message,
        models: h.models,
    }
}

pub(crate) fn change_to(c: HealthChange) -> pb::HealthChange {
    pb::HealthChange {
        connector_id: c.health.connector_id.clone(),
        previous: status_to(c.previous) as i32,
        health: Some(health_to(c.health)),
    }
}

pub(crate) fn change_from(c: pb::HealthChange) -> HealthChange {
    HealthChange {
        previous: status_from(c.previous),
        health: c.health.map(health_from).unwrap_or_else(|| Health::unknown(&c.connector_id, "")),
    }
}

pub(crate) fn endpoint_to(e: LlmEndpoint) -> pb::LlmEndpoint {
    pb::LlmEndpoint {
        status: status_to(e.status) as i32,
        connector_id: e.connector_id,
        url: e.url,
        api_key: e.api_key.unwrap_or_default(),
        default_model: e.default_model,
        version: e.version,
    }
}

pub(crate) fn endpoint_from(e: pb::LlmEndpoint) -> LlmEndpoint {
    LlmEndpoint {
        status: status_from(e.status),
        connector_id: e.connector_id,
        url: e.url,
        api_key: (!e.api_key.is_empty()).then_some(e.api_key),
        default_model: e.default_model,
        version: e.version,
    }
}
