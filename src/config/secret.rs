//! Secrets in the configuration: the JWT secret ([`SecretString`]) and the URLs that may
//! carry a password ([`SecretUrl`]).
//!
//! Both serialise in the clear, because figment layers the defaults by serialising them and
//! reading them back; nothing else serialises a [`Config`](super::Config) except
//! [`Config::redacted`](super::Config::redacted), which masks them first. `Debug` never shows
//! a password, so a config in a log line or a panic message leaks nothing.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a masked secret reads as.
pub(super) const REDACTED: &str = "<redacted>";

/// A database or Redis URL, which may carry a password (`postgres://user:pw@host/db`).
///
/// Only the code that connects calls [`expose`](Self::expose). [`redacted`](Self::redacted)
/// keeps what helps debugging (scheme, user, host, port, database) and masks the password,
/// whether in the user info or in a `password` query parameter (libpq style). A value that
/// does not parse as a URL is masked whole: where its password is cannot be known.
#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    /// The URL as configured, password included: for connecting, and nothing else.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The same URL with its password masked as `***`.
    pub fn redacted(&self) -> Self {
        Self::from(mask_password(self.expose()))
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url.into())
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(url.into())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretUrl")
            .field(&mask_password(self.expose()))
            .finish()
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // In the clear for figment's round trip (see the module doc).
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// `serialize_with` for a [`SecretString`] field: in the clear, for figment's round trip.
pub(super) fn serialize_secret<S: Serializer>(
    secret: &SecretString,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// `raw` with the password masked, parsed the way sqlx and redis parse their URLs.
fn mask_password(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return REDACTED.to_owned();
    }
    let secret_key = |key: &str| key.to_ascii_lowercase().contains("password");
    if url.query_pairs().any(|(key, _)| secret_key(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret_key(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(raw: &str) -> String {
        SecretUrl::from(raw).redacted().expose().to_owned()
    }

    #[test]
    fn a_url_keeps_user_host_port_and_database_but_not_its_password() {
        assert_eq!(
            masked("postgres://user:pw@db.internal:5432/scalable_api"),
            "postgres://user:***@db.internal:5432/scalable_api"
        );
        assert_eq!(
            masked("redis://:hunter3@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            masked("postgres://postgres@127.0.0.1:55410/scalable_api"),
            "postgres://postgres@127.0.0.1:55410/scalable_api",
            "nothing to hide"
        );
    }

    #[test]
    fn a_password_in_the_query_is_masked_too() {
        let shown = masked("postgres://db/app?user=u&password=hunter2&sslmode=require");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
    }

    #[test]
    fn what_does_not_parse_as_a_url_is_masked_whole() {
        assert_eq!(masked("host=db password=hunter2"), REDACTED);
    }

    #[test]
    fn debug_shows_no_password_and_serialisation_round_trips() {
        let url = SecretUrl::from("postgres://u:hunter2@h/db");
        assert_eq!(format!("{url:?}"), r#"SecretUrl("postgres://u:***@h/db")"#);
        let json = serde_json::to_value(&url).expect("serialises");
        let back: SecretUrl = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back.expose(), "postgres://u:hunter2@h/db");
    }
}
