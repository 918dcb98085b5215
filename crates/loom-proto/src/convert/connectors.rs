//! Connector records (the connectors service's configuration as the store keeps it).

use loom_domain::Error;
use loom_store::{ConnectorRecord, NewConnector};

use super::domain::time;
use super::{FromProto, IntoProto, json};
use crate::v1;

impl IntoProto<v1::ConnectorRecord> for ConnectorRecord {
    fn into_proto(self) -> v1::ConnectorRecord {
        v1::ConnectorRecord {
            id: self.id,
            kind: self.kind,
            config_json: self.config.to_string(),
            sealed_secrets: self.sealed_secrets,
            version: self.version,
            created_at: Some(self.created_at.into_proto()),
            updated_at: Some(self.updated_at.into_proto()),
        }
    }
}

impl FromProto<v1::ConnectorRecord> for ConnectorRecord {
    fn from_proto(c: v1::ConnectorRecord) -> Result<Self, Error> {
        Ok(ConnectorRecord {
            config: json(&c.config_json, "config_json")?,
            created_at: time(c.created_at, "created_at")?,
            updated_at: time(c.updated_at, "updated_at")?,
            id: c.id,
            kind: c.kind,
            sealed_secrets: c.sealed_secrets,
            version: c.version,
        })
    }
}

impl IntoProto<v1::NewConnectorRecord> for NewConnector {
    fn into_proto(self) -> v1::NewConnectorRecord {
        v1::NewConnectorRecord {
            id: self.id,
            kind: self.kind,
            config_json: self.config.to_string(),
            sealed_secrets: self.sealed_secrets,
        }
    }
}

impl FromProto<v1::NewConnectorRecord> for NewConnector {
    fn from_proto(c: v1::NewConnectorRecord) -> Result<Self, Error> {
        let connector = NewConnector {
            config: json(&c.config_json, "config_json")?,
            id: c.id,
            kind: c.kind,
            sealed_secrets: c.sealed_secrets,
        };
        connector.validate()?;
        Ok(connector)
    }
}
