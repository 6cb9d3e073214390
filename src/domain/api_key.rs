//! API keys as their owner sees them: a name, a scope, a tier. The key's secret and its hash
//! are not here: `src/auth/api_key.rs` makes and checks them.

use chrono::{DateTime, Utc};

use super::{Checks, text};
use crate::error::{Error, FieldError};

/// What an API key may do: `Read` keys are refused on every write; `Write` keys may do
/// whatever their owner may, except manage keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            _ => Err(FieldError::new("scope", "must be `read` or `write`")),
        }
    }
}

text_column!(Scope, "API key scope", |raw| Scope::parse(raw).ok());

/// An API key's public description, as its owner lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scope: Scope,
    /// The rate-limit tier its requests are sized by (`service` unless an operator moved it).
    pub tier: String,
    pub created_at: DateTime<Utc>,
}

/// A key to create: a validated name and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: String,
    pub scope: Scope,
}

impl NewApiKey {
    /// Checks every field at once (a 422 names each bad one).
    pub fn parse(name: &str, scope: &str) -> Result<Self, Error> {
        let mut checks = Checks::default();
        let name = checks.check(text("name", name, 1, 100, false));
        let scope = checks.check(Scope::parse(scope));
        checks.finish()?;
        match (name, scope) {
            (Some(name), Some(scope)) => Ok(Self { name, scope }),
            _ => unreachable!("Checks::finish returns an error when any field failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_needs_a_name_and_a_known_scope_and_hears_about_both() {
        let Err(Error::Validation(fields)) = NewApiKey::parse("  ", "admin") else {
            panic!("both fields are invalid");
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field).collect();
        assert_eq!(names, ["name", "scope"]);
        let key = NewApiKey::parse(" export ", "read").expect("valid");
        assert_eq!((key.name.as_str(), key.scope), ("export", Scope::Read));
    }
}
