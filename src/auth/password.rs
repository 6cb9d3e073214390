//! argon2id password hashing, bounded.
//!
//! Hashing is deliberately slow (that is its defence against offline guessing) and CPU-bound,
//! so it runs on tokio's blocking pool: on the async workers it would stall every other
//! request on that thread for tens of milliseconds.
//!
//! The blocking pool alone is no bound: it grows to 512 threads, and each argon2 run holds
//! 19 MiB and a core for its duration, so a burst of a few hundred logins (a credential-
//! stuffing run, or one GraphQL request full of `login` aliases) would take every core and
//! gigabytes of memory from everything else. The [`Hasher`] admits at most
//! `auth.max_concurrent_hashes` runs at once (default: one per core). Up to
//! `auth.max_queued_hashes` more wait for a slot (a burst of sign-ins is normal), each for at
//! most `auth.hash_wait`; past the queue a request gets a 503 with `Retry-After` at once:
//! refusing a login is cheaper than queueing it behind a thousand others.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::{config::AuthConfig, error::Error};

/// The password every seeded demo user shares (documented in the README).
pub const DEMO_PASSWORD: &str = "demo-password";

/// A real hash of a random password, checked against when an email is unknown so that a
/// login for a missing account costs as much as one with a wrong password: response time
/// must not tell an attacker which emails are registered.
static DECOY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_blocking("decoy-password-never-matches").ok());

/// Password hashing and checking behind a bound on concurrent argon2 runs (module doc).
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Requests waiting for a slot now.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    wait: Duration,
}

/// The answer when every hashing slot is busy and the queue is full, or stays busy for
/// `auth.hash_wait`.
const BUSY: Error = Error::Unavailable {
    detail: "too many password checks are in progress; try again shortly",
    retry_after: Duration::from_secs(1),
};

impl Hasher {
    pub fn new(config: &AuthConfig) -> Self {
        let slots = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Self {
            permits: Arc::new(Semaphore::new(slots)),
            queued: Arc::default(),
            max_queued: config.max_queued_hashes,
            wait: config.hash_wait,
        }
    }

    /// Hashes with argon2id and the crate's default parameters (OWASP's recommended minimum:
    /// 19 MiB memory, 2 passes); the PHC string carries the salt and parameters.
    pub async fn hash(&self, password: &SecretString) -> Result<String, Error> {
        let password = password.clone();
        self.run(move || hash_blocking(password.expose_secret()))
            .await?
            .map_err(Error::Internal)
    }

    /// Verifies `password` against a stored PHC hash; `None` checks against the decoy and
    /// always fails (in the same time as a wrong password).
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let password = password.clone();
        self.run(move || verify_blocking(password.expose_secret(), stored))
            .await
    }

    /// Runs `work` on the blocking pool once a slot is free: at once, or after waiting in a
    /// queue of bounded length for at most `hash_wait`.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _queued = Queued::join(&self.queued, self.max_queued).ok_or(BUSY)?;
                tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(BUSY)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work()
        })
        .await
        .context("Failed to join the hashing task")
        .map_err(Error::Internal)
    }
}

pub fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("Failed to hash a password: {err}"))
}

/// A place in the hashing queue, given back when dropped (slot taken, timed out, or the
/// request cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    /// A place, unless `max` are already taken.
    fn join(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(queued))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn verify_blocking(password: &str, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let Some(stored) = stored.or_else(|| DECOY_HASH.clone()) else {
        return false;
    };
    let Ok(parsed) = PasswordHash::new(&stored) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(&AuthConfig::default())
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = hasher();
        let password = SecretString::from("correct horse battery");
        let stored = hasher.hash(&password).await.expect("hashing works");
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify(&password, Some(stored.clone()))
                .await
                .expect("joins")
        );
        let wrong = SecretString::from("wrong horse battery");
        assert!(!hasher.verify(&wrong, Some(stored)).await.expect("joins"));
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let password = SecretString::from("decoy-password-never-matches");
        assert!(!hasher().verify(&password, None).await.expect("joins"));
    }

    #[tokio::test]
    async fn with_every_slot_busy_and_the_queue_full_a_check_is_refused_at_once() {
        let hasher = Hasher::new(&AuthConfig {
            max_concurrent_hashes: 1,
            hash_wait: Duration::from_millis(10),
            ..AuthConfig::default()
        });
        let held = hasher
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("a slot");
        let started = std::time::Instant::now();
        let refused = hasher.verify(&SecretString::from("x"), None).await;
        assert!(
            matches!(refused, Err(Error::Unavailable { .. })),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused without queueing"
        );
        drop(held);
        assert!(matches!(
            hasher.verify(&SecretString::from("x"), None).await,
            Ok(false)
        ));
    }
}
