//! Validated identifiers. Each `parse` is the single gate a string passes to become an id.

use std::fmt;

use crate::Error;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

string_id!(
    /// A project slug: `^[a-z0-9][a-z0-9_-]{0,62}$`. No dots, so it is safe in NATS subjects.
    ProjectId
);
string_id!(
    /// The prefix of a project's bead ids: 1–16 lowercase letters and digits, starting with a letter.
    BeadPrefix
);
string_id!(
    /// A bead id: `{prefix}-{base36}`, e.g. `loom-1z3`.
    BeadId
);
string_id!(
    /// An agent instance id: 1–128 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
    AgentId
);
string_id!(
    /// The fencing token of one dispatch of a bead: 1–64 of `[A-Za-z0-9_-]`.
    DispatchId
);

fn check_chars(
    field: &'static str,
    s: &str,
    max: usize,
    first: fn(u8) -> bool,
    rest: fn(u8) -> bool,
    rule: &str,
) -> Result<(), Error> {
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty() && bytes.len() <= max && first(bytes[0]) && bytes[1..].iter().all(|&b| rest(b));
    if ok {
        Ok(())
    } else if bytes.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else if bytes.len() > max {
        Err(Error::invalid(field, format!("{s:?} is longer than {max} characters")))
    } else {
        Err(Error::invalid(field, format!("{s:?} must match {rule}")))
    }
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl ProjectId {
    /// Validates a project slug.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check_chars(
            "project id",
            s,
            63,
            lower_alnum,
            |b| lower_alnum(b) || b == b'_' || b == b'-',
            "^[a-z0-9][a-z0-9_-]{0,62}$",
        )?;
        Ok(Self(s.to_owned()))
    }
}

impl BeadPrefix {
    /// Validates a bead prefix.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check_chars("bead prefix", s, 16, |b| b.is_ascii_lowercase(), lower_alnum, "^[a-z][a-z0-9]{0,15}$")?;
        Ok(Self(s.to_owned()))
    }

    /// Derives a prefix from a project id (its letters and digits, at most 16, starting with a letter).
    pub fn derive(project: &ProjectId) -> Self {
        let mut s: String = project.as_str().chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect();
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            s.insert(0, 'b');
            s.truncate(16);
        }
        Self(s)
    }
}

impl BeadId {
    /// Validates `{prefix}-{base36}`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let Some((prefix, num)) = s.rsplit_once('-') else {
            return Err(Error::invalid(
                "bead id",
                format!("{s:?} must look like {{prefix}}-{{base36}}, e.g. loom-1z3"),
            ));
        };
        BeadPrefix::parse(prefix).map_err(|_| {
            Error::invalid("bead id", format!("{s:?} has a bad prefix {prefix:?} (want ^[a-z][a-z0-9]{{0,15}}$)"))
        })?;
        if num.is_empty() || num.len() > 13 || !num.bytes().all(lower_alnum) {
            return Err(Error::invalid("bead id", format!("{s:?} must end in 1-13 base36 digits [0-9a-z]")));
        }
        Ok(Self(s.to_owned()))
    }

    /// Builds the id of the `seq`-th bead with this prefix.
    pub fn new(prefix: &BeadPrefix, seq: u64) -> Self {
        Self(format!("{prefix}-{}", base36(seq)))
    }

    /// The prefix part.
    pub fn prefix(&self) -> &str {
        self.0.rsplit_once('-').map_or("", |(p, _)| p)
    }
}

impl AgentId {
    /// Validates an agent instance id.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let rest = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        check_chars("agent id", s, 128, |b| b.is_ascii_alphanumeric(), rest, "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")?;
        Ok(Self(s.to_owned()))
    }
}

impl DispatchId {
    /// Validates a dispatch id.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
        check_chars("dispatch id", s, 64, ok, ok, "^[A-Za-z0-9_-]{1,64}$")?;
        Ok(Self(s.to_owned()))
    }
}

/// Formats `n` in lowercase base 36.
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        assert!(ProjectId::parse("loom").is_ok());
        assert!(ProjectId::parse("a").is_ok());
        assert!(ProjectId::parse("web-app_2").is_ok());
        for bad in ["", "Loom", "-x", "_x", "a.b", "a b", "a*", "a>", &"a".repeat(64)] {
            let err = ProjectId::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid project id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bead_ids() {
        let id = BeadId::parse("loom-1z3").unwrap();
        assert_eq!(id.prefix(), "loom");
        assert_eq!(BeadId::new(&BeadPrefix::parse("bd").unwrap(), 36 * 36).as_str(), "bd-100");
        for bad in ["loom", "loom-", "-12", "Loom-1", "loom-1Z", "lo.om-1", "loom-12345678901234"] {
            assert!(BeadId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base36_round_trips() {
        for n in [0u64, 1, 35, 36, 1295, 1296, u64::MAX] {
            assert_eq!(u64::from_str_radix(&base36(n), 36).unwrap(), n);
        }
    }

    #[test]
    fn derived_prefixes_are_valid() {
        for p in ["loom", "9lives", "web-app_2", "x"] {
            let prefix = BeadPrefix::derive(&ProjectId::parse(p).unwrap());
            assert!(BeadPrefix::parse(prefix.as_str()).is_ok(), "{p} -> {prefix}");
        }
    }
}
