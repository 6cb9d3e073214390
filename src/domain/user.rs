use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::{Checks, text};
use crate::error::{Error, FieldError};

/// A user as every API shows and the cache keeps it: the row without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub tier: Tier,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// The email as `viewer` (the authenticated user's id, if any) may see it: only the user
    /// themself does. An email is personal data, not a public profile field; every API
    /// renders it through here.
    pub fn email_for(&self, viewer: Option<i64>) -> Option<&str> {
        (viewer == Some(self.id)).then_some(self.email.as_str())
    }
}

/// What login needs of a user: the only type that carries a password hash. Read from the
/// primary by the login path alone, never cached, never rendered.
#[derive(Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub tier: Tier,
    /// Bumped by every password change; access tokens carry it (`src/auth/sessions.rs`).
    pub credentials_version: i32,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// Service tier; carried in the access token so rate limits need no database read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
        }
    }
}

text_column!(Tier, "tier", |raw| match raw {
    "free" => Some(Tier::Free),
    "pro" => Some(Tier::Pro),
    _ => None,
});

/// A normalised email address: trimmed, NFKC-normalised and lower-cased, so the directory's
/// uniqueness holds across case and across Unicode's look-alike forms (full-width
/// `ａｄａ＠ｅｘａｍｐｌｅ.ｃｏｍ` is `ada@example.com`). Invisible characters are refused rather
/// than dropped (see `unicode.rs`): an address that holds one was not typed by a person.
/// (Lower-casing the local part is not strictly RFC 5321, but no real provider distinguishes
/// case, and users do not expect it to matter.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if raw
            .chars()
            .any(|c| super::unicode::is_default_ignorable(c) || super::unicode::is_bidi_control(c))
        {
            return Err(FieldError::new(
                "email",
                "must not contain invisible or text-direction characters",
            ));
        }
        // Bounded before normalising: NFKC can expand a character up to 18 times.
        if raw.len() > 1024 {
            return Err(FieldError::new("email", "must be at most 254 bytes"));
        }
        let value = raw.nfkc().collect::<String>().to_lowercase();
        let invalid = || FieldError::new("email", "must be an address like name@example.com");
        if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.contains('@')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Trimmed, NFC-normalised (one form for what renders the same), without
    /// text-direction controls, which would make a name display as something else. Joiners
    /// stay: several scripts and emoji sequences need them.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.chars().any(super::unicode::is_bidi_control) {
            return Err(FieldError::new(
                "name",
                "must not contain text-direction control characters",
            ));
        }
        let name = text("name", raw, 1, 100, false)?;
        Ok(Self(name.nfc().collect()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plaintext password on its way to the hasher. Never logged, never stored.
#[derive(Debug)]
pub struct Password(pub SecretString);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if chars < 8 {
            return Err(FieldError::new("password", "must be at least 8 characters"));
        }
        // Bounded so a client cannot make the hasher chew on megabytes.
        if raw.len() > 256 {
            return Err(FieldError::new("password", "must be at most 256 bytes"));
        }
        Ok(Self(SecretString::from(raw)))
    }
}

/// A validated registration.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub name: UserName,
    pub password: Password,
}

impl NewUser {
    pub fn parse(email: &str, name: &str, password: &str) -> Result<Self, Error> {
        let mut checks = Checks::default();
        let email = checks.check(Email::parse(email));
        let name = checks.check(UserName::parse(name));
        let password = checks.check(Password::parse(password));
        checks.finish()?;
        match (email, name, password) {
            (Some(email), Some(name), Some(password)) => Ok(Self {
                email,
                name,
                password,
            }),
            _ => unreachable!("Checks::finish returns an error when any field failed"),
        }
    }
}

/// A validated partial update; at least one field is present.
#[derive(Debug)]
pub struct UserPatch {
    pub email: Option<Email>,
    pub name: Option<UserName>,
    pub password: Option<Password>,
}

impl UserPatch {
    pub fn parse(
        email: Option<&str>,
        name: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, Error> {
        if email.is_none() && name.is_none() && password.is_none() {
            return Err(Error::validation(
                "body",
                "give at least one of email, name, password",
            ));
        }
        let mut checks = Checks::default();
        let email = email.and_then(|e| checks.check(Email::parse(e)));
        let name = name.and_then(|n| checks.check(UserName::parse(n)));
        let password = password.and_then(|p| checks.check(Password::parse(p)));
        checks.finish()?;
        Ok(Self {
            email,
            name,
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_to_lower_case() {
        let email = Email::parse("  Ada@Example.COM ").expect("valid address");
        assert_eq!(email.as_str(), "ada@example.com");
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@ex..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn registration_reports_every_bad_field_at_once() {
        let Err(Error::Validation(errors)) = NewUser::parse("nope", "", "short") else {
            panic!("expected a validation error");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["email", "name", "password"]);
    }

    #[test]
    fn an_empty_patch_is_rejected() {
        assert!(matches!(
            UserPatch::parse(None, None, None),
            Err(Error::Validation(_))
        ));
    }

    #[test]
    fn look_alike_emails_normalise_to_one_address_or_are_refused() {
        let ascii = Email::parse("ada@example.com").expect("valid");
        for same in [
            "ＡＤＡ@example.com",
            "ａｄａ＠ｅｘａｍｐｌｅ．ｃｏｍ",
            " Ada@Example.COM ",
        ] {
            assert_eq!(Email::parse(same).expect(same), ascii, "{same}");
        }
        for invisible in [
            "ada\u{200B}@example.com",
            "ad\u{00AD}a@example.com",
            "ada@exa\u{200D}mple.com",
            "\u{FEFF}ada@example.com",
            "ada\u{202E}@example.com",
        ] {
            assert!(Email::parse(invisible).is_err(), "{invisible:?}");
        }
    }

    #[test]
    fn names_refuse_direction_controls_and_keep_one_normal_form() {
        assert!(UserName::parse("Ada \u{202E}reversed").is_err());
        assert!(UserName::parse("\u{2066}Ada\u{2069}").is_err());
        // "é" as e + combining acute is stored as the one precomposed character.
        let name = UserName::parse("Re\u{0301}ne").expect("valid");
        assert_eq!(name.as_str(), "R\u{00E9}ne");
        // Joiners stay: emoji sequences and several scripts need them.
        assert!(UserName::parse("\u{1F469}\u{200D}\u{1F4BB} Ada").is_ok());
    }
}
