//! Scopes (a bitset with a textual form) and key kinds.

use std::fmt;
use std::str::FromStr;

/// A set of scopes (SPEC §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const AGENTS_RUN: Scopes = Scopes(1 << 0);
    pub const AGENTS_STREAM: Scopes = Scopes(1 << 1);
    pub const CONVERSATIONS_READ: Scopes = Scopes(1 << 2);
    pub const CONVERSATIONS_WRITE: Scopes = Scopes(1 << 3);
    pub const TEAMS_RUN: Scopes = Scopes(1 << 4);
    pub const USAGE_READ: Scopes = Scopes(1 << 5);
    pub const NONE: Scopes = Scopes(0);
    pub const ALL: Scopes = Scopes(0b11_1111);

    const NAMES: [(Scopes, &'static str); 6] = [
        (Scopes::AGENTS_RUN, "agents:run"),
        (Scopes::AGENTS_STREAM, "agents:stream"),
        (Scopes::CONVERSATIONS_READ, "conversations:read"),
        (Scopes::CONVERSATIONS_WRITE, "conversations:write"),
        (Scopes::TEAMS_RUN, "teams:run"),
        (Scopes::USAGE_READ, "usage:read"),
    ];

    /// True when every scope of `other` is in `self`.
    pub const fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scope names in this set, in canonical order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(s, _)| self.contains(*s))
            .map(|(_, n)| n)
    }
}

impl std::ops::BitOr for Scopes {
    type Output = Scopes;
    fn bitor(self, rhs: Scopes) -> Scopes {
        self.union(rhs)
    }
}

/// A scope name that is not one of SPEC §3's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (expected agents:run, agents:stream, conversations:read, conversations:write, teams:run, usage:read or *)")]
pub struct UnknownScope(pub String);

impl FromStr for Scopes {
    type Err = UnknownScope;
    /// Comma- or space-separated scope names; `*` means all of them; empty means none.
    fn from_str(s: &str) -> Result<Scopes, UnknownScope> {
        s.split([',', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .try_fold(Scopes::NONE, |acc, name| {
                if name == "*" {
                    return Ok(Scopes::ALL);
                }
                Self::NAMES
                    .iter()
                    .find(|(_, n)| *n == name)
                    .map(|(s, _)| acc | *s)
                    .ok_or_else(|| UnknownScope(name.to_owned()))
            })
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// Master keys may do everything their account may; agent keys only their scopes and agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Master,
    Agent,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Master => "master",
            KeyKind::Agent => "agent",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key kind other than `master` or `agent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key kind `{0}` (expected master or agent)")]
pub struct UnknownKind(pub String);

impl FromStr for KeyKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<KeyKind, UnknownKind> {
        match s {
            "master" => Ok(KeyKind::Master),
            "agent" => Ok(KeyKind::Agent),
            other => Err(UnknownKind(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        let s: Scopes = "agents:run, usage:read".parse().expect("parses");
        assert!(s.contains(Scopes::AGENTS_RUN) && s.contains(Scopes::USAGE_READ));
        assert!(!s.contains(Scopes::AGENTS_STREAM));
        assert_eq!(s.to_string(), "agents:run,usage:read");
        assert_eq!(s.to_string().parse::<Scopes>(), Ok(s));
        assert_eq!("*".parse::<Scopes>(), Ok(Scopes::ALL));
        assert_eq!("".parse::<Scopes>(), Ok(Scopes::NONE));
        assert_eq!(Scopes::ALL.names().count(), 6);
        assert!("agents:fly".parse::<Scopes>().is_err());
        assert_eq!("agent".parse::<KeyKind>(), Ok(KeyKind::Agent));
        assert!("root".parse::<KeyKind>().is_err());
    }
}
