//! API keys and the roles they carry.

use chrono::{DateTime, Utc};

use crate::Error;
use crate::bead::string_enum;

string_enum!(
    /// What a key may do: viewers read, operators also change beads and projects, admins also
    /// manage keys.
    Role, "role" { Admin => "admin", Operator => "operator", Viewer => "viewer" }
);

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Operator => 1,
            Role::Admin => 2,
        }
    }

    /// Whether a key with this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }
}

/// A stored API key: the secret itself is never stored, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key name is 1–100 printable characters.
pub fn validate_key_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(Error::Invalid {
            field: "key name",
            reason: format!("{name:?} must be 1-100 printable characters"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator) && !Role::Operator.allows(Role::Admin));
        assert!(validate_key_name("ci").is_ok() && validate_key_name(" ").is_err());
    }
}
