//! argon2id password hashing.
//!
//! Hashing is deliberately slow (that is its defence against offline guessing) and CPU-bound,
//! so it runs on tokio's blocking pool: on the async workers it would stall every other
//! request on that thread for tens of milliseconds.

use std::sync::LazyLock;

use anyhow::Context;
use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use secrecy::{ExposeSecret, SecretString};

/// The password every seeded demo user shares (documented in the README).
pub const DEMO_PASSWORD: &str = "demo-password";

/// A real hash of a random password, checked against when an email is unknown so that a
/// login for a missing account costs as much as one with a wrong password: response time
/// must not tell an attacker which emails are registered.
static DECOY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_blocking("decoy-password-never-matches").ok());

/// Hashes with argon2id and the crate's default parameters (OWASP's recommended minimum:
/// 19 MiB memory, 2 passes); the PHC string carries the salt and parameters.
pub async fn hash(password: &SecretString) -> anyhow::Result<String> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || hash_blocking(password.expose_secret()))
        .await
        .context("Failed to join the hashing task")?
}

pub fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("Failed to hash a password: {err}"))
}

/// Verifies `password` against a stored PHC hash; `None` checks against the decoy and
/// always fails.
pub async fn verify(password: &SecretString, stored: Option<String>) -> anyhow::Result<bool> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let Some(stored) = stored.or_else(|| DECOY_HASH.clone()) else {
            return false;
        };
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .context("Failed to join the verification task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let password = SecretString::from("correct horse battery");
        let stored = hash(&password).await.expect("hashing works");
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify(&password, Some(stored.clone()))
                .await
                .expect("joins")
        );
        let wrong = SecretString::from("wrong horse battery");
        assert!(!verify(&wrong, Some(stored)).await.expect("joins"));
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let password = SecretString::from("decoy-password-never-matches");
        assert!(!verify(&password, None).await.expect("joins"));
    }
}
