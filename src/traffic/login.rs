//! Login protection: how many password tries an account and a client address get.
//!
//! Online guessing is the attack left once hashes are slow and tokens are signed: try one
//! account's password over and over (brute force), or one common password over many accounts
//! from one place (spraying). Two limits answer them, both counted in the distributed limiter
//! ([`RateLimiter`], Redis), so that every instance enforces one budget together:
//!
//! - **per account**: `auth.login_limits.account_tries` per `window`, keyed by the
//!   normalised email, *whether or not it is registered*: a limit that only applied to real
//!   accounts would answer 429 for them alone and tell an attacker which emails exist.
//!   Another account is untouched by one account's exhausted budget.
//! - **per client address** (`ClientAddr`: the peer, or the right-most untrusted
//!   `X-Forwarded-For` hop): `address_tries` per `window`, higher than per account because
//!   many people can share an address. IPv6 clients are counted per /64, the block one
//!   subscriber usually gets: per /128, a single client could rotate through 2^64 addresses.
//!
//! Login and registration are counted apart (`login:…`, `register:…`), with the same
//! numbers. Every attempt that reaches the check counts, successful or not, and is charged
//! *before* the password is checked: one atomic step in Redis, so concurrent guesses cannot
//! overshoot the budget. (Counting failures only would need a look before the check and a
//! charge after it, and every guess in flight between the two passes; argon2's queue lets
//! dozens be in flight.) A person logging in never meets 10 tries in 15 minutes.
//!
//! A refused attempt is a 429 problem with `Retry-After`, and runs no argon2 at all.
//!
//! The key holds no email in clear: it is a keyed BLAKE2b MAC of the address (keyed with the
//! JWT secret, which every instance shares), so someone reading the limiter's Redis cannot
//! even confirm a guessed email. Rotating that secret starts every count afresh.
//!
//! # When Redis is unavailable: refuse (503)
//!
//! A per-instance fallback would let each instance grant the whole budget on its own: behind
//! a load balancer with N instances, N times the guesses. Login and registration answer 503
//! with `Retry-After` until the limiter is back (its breaker bounds what a dead Redis costs).
//! That makes Redis a dependency of logging in; existing tokens and API keys keep working.
//!
//! The cost of the per-account limit: anyone can spend a victim's tries and keep them from
//! logging in by password for a while (the budget returns gradually, one try per
//! `window / account_tries`). Their tokens and keys still work; a service that must resist that
//! lockout adds a second factor or a CAPTCHA past the limit rather than a bigger budget.

use std::net::IpAddr;

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::{Blake2bMac, digest::Mac, digest::consts::U16};
use secrecy::ExposeSecret;

use super::{LimiterUnavailable, Policy, RateLimiter};
use crate::{Config, error::Error, telemetry::names::LOGIN_LIMIT_DECISIONS};

/// The kind of password-checking request; each has its own counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Login,
    Register,
}

impl Attempt {
    fn as_str(self) -> &'static str {
        match self {
            Attempt::Login => "login",
            Attempt::Register => "register",
        }
    }
}

/// The two limits of the module doc, over the shared limiter.
pub struct LoginLimits<'a> {
    limiter: &'a RateLimiter,
    config: &'a Config,
}

impl<'a> LoginLimits<'a> {
    pub fn new(limiter: &'a RateLimiter, config: &'a Config) -> Self {
        Self { limiter, config }
    }

    /// Charges one try of `attempt` to `client` and, when the email parsed, to `account` (its
    /// normalised form). `Ok` when both had one left; else a 429, or a 503 when the limiter
    /// cannot decide.
    pub async fn admit(
        &self,
        attempt: Attempt,
        account: Option<&str>,
        client: IpAddr,
    ) -> Result<(), Error> {
        let limits = &self.config.auth.login_limits;
        let kind = attempt.as_str();
        // The address first: a client over its budget is refused without spending the
        // budget of the account it aimed at.
        let address = format!("{kind}:address:{}", address_key(client));
        let policy = Policy::new(limits.address_tries, limits.window);
        let verdict = async {
            self.charge(&address, &policy, attempt, Limit::Address)
                .await?;
            if let Some(account) = account {
                let key = format!("{kind}:account:{}", self.account_key(account));
                let policy = Policy::new(limits.account_tries, limits.window);
                self.charge(&key, &policy, attempt, Limit::Account).await?;
            }
            Ok(())
        }
        .await;
        let decision = match &verdict {
            Ok(()) => "allowed",
            Err((decision, _)) => *decision,
        };
        metrics::counter!(LOGIN_LIMIT_DECISIONS, "attempt" => kind, "decision" => decision)
            .increment(1);
        verdict.map_err(|(_, err)| err)
    }

    async fn charge(
        &self,
        key: &str,
        policy: &Policy,
        attempt: Attempt,
        limit: Limit,
    ) -> Result<(), (&'static str, Error)> {
        match self.limiter.check(key, policy, 1).await {
            Ok(decision) if decision.allowed => Ok(()),
            Ok(decision) => Err((
                limit.decision(),
                Error::TooManyRequests {
                    detail: limit.detail(attempt),
                    retry_after: decision.retry_after.unwrap_or(policy.window),
                },
            )),
            Err(unavailable) => Err(("unavailable", self.unavailable(unavailable))),
        }
    }

    fn unavailable(&self, why: LimiterUnavailable) -> Error {
        tracing::warn!(error = %why, "login refused: the login limits cannot be checked");
        Error::Unavailable {
            detail: "login and registration are paused: the limiter that bounds password guesses cannot be reached",
            retry_after: self.config.ratelimit.breaker.open,
        }
    }

    /// A keyed MAC of the normalised email (module doc), base64url.
    fn account_key(&self, email: &str) -> String {
        let secret = self.config.auth.jwt_secret.expose_secret().as_bytes();
        // BLAKE2b takes keys of up to 64 bytes; the JWT secret is at least 32.
        let key = &secret[..secret.len().min(64)];
        let mut mac = Blake2bMac::<U16>::new_from_slice(key)
            .expect("BLAKE2b accepts any key of at most 64 bytes");
        mac.update(email.as_bytes());
        Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes())
    }
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Address,
    Account,
}

impl Limit {
    /// The `decision` label of [`LOGIN_LIMIT_DECISIONS`] when this limit refuses.
    fn decision(self) -> &'static str {
        match self {
            Limit::Address => "limited_address",
            Limit::Account => "limited_account",
        }
    }

    fn detail(self, attempt: Attempt) -> &'static str {
        match (attempt, self) {
            (Attempt::Login, Limit::Account) => {
                "too many login attempts for this account; try again after Retry-After seconds"
            }
            (Attempt::Login, Limit::Address) => {
                "too many login attempts from this address; try again after Retry-After seconds"
            }
            (Attempt::Register, Limit::Account) => {
                "too many registration attempts for this email; try again after Retry-After seconds"
            }
            (Attempt::Register, Limit::Address) => {
                "too many registration attempts from this address; try again after Retry-After seconds"
            }
        }
    }
}

/// An IPv4 address as it is (IPv4-mapped IPv6 too); an IPv6 address by its /64.
fn address_key(addr: IpAddr) -> String {
    match super::limit_key(addr) {
        net @ IpAddr::V6(_) => format!("{net}/64"),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(address_key(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(address_key(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn the_account_key_hides_the_email_and_depends_on_the_secret() {
        let config = Config::default();
        let limiter = RateLimiter::new(&config.ratelimit).expect("builds without connecting");
        let limits = LoginLimits::new(&limiter, &config);
        let key = limits.account_key("ada@example.com");
        assert!(!key.contains("ada"), "{key}");
        assert_eq!(key, limits.account_key("ada@example.com"), "stable");
        assert_ne!(key, limits.account_key("bob@example.com"));
        let mut other = Config::default();
        other.auth.jwt_secret = "another-secret-of-at-least-32-bytes!!".to_owned().into();
        assert_ne!(
            key,
            LoginLimits::new(&limiter, &other).account_key("ada@example.com")
        );
    }
}
