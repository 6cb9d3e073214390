//! The distributed rate limiter: per-principal limits that every instance enforces together,
//! because the usage lives in Redis and each decision is one atomic script there.
//!
//! A per-process limiter (tower_governor) lets each of N instances admit the whole limit, so
//! a client spread over them gets N times its quota; and a limit kept in a database would
//! cost a transaction per request. Here a decision is one `EVALSHA` round trip (~0.1-0.3 ms
//! on loopback) that reads the usage, decides and charges in one step on Redis's own clock,
//! so two instances can never both admit the last unit (`scripts.rs`).
//!
//! - [`RateLimiter::check`]`(key, policy, cost)` -> [`Decision`] (`limiter.rs`). The
//!   algorithm comes from `ratelimit.algorithm` ([`crate::config::LimiterAlgorithm`]); what
//!   [`Policy`]'s fields mean for each is in `policy.rs`.
//! - [`RateLimiter::check_leased`]: the same, spending from a local lease of units charged
//!   ahead of time when it can (`lease.rs`): the route limits use it, the login limits do not.
//! - [`render_headers`] turns a decision into `RateLimit-Policy`, `RateLimit` and
//!   `Retry-After` (`headers.rs`).
//!
//! # When Redis is unusable: the caller decides
//!
//! Each decision is bounded by `ratelimit.command_timeout`, and a circuit breaker
//! (`circuit_breaker_state{breaker="ratelimit"}`) opens after consecutive failures, so a dead
//! Redis costs `failure_threshold` timeouts, then nothing. Meanwhile `check` returns
//! [`LimiterUnavailable`] and never guesses: failing open (admit everyone) invites exactly the
//! abuse the limit exists for, failing closed turns a Redis outage into a full outage. The
//! caller picks per route class, typically a local per-instance limit as the fallback for
//! reads and refusal (503 with `Retry-After`) for expensive or abuse-prone routes.
//!
//! Trade-off: one Redis round trip per limited request (per lease, with leases on), and a shared Redis as a
//! dependency of admission; the per-address shield in front (local, in memory) is what keeps
//! a flood from reaching it.

mod fallback;
mod headers;
mod lease;
mod limiter;
mod policy;
mod routes;
mod scripts;

pub use headers::{RateLimitHeaders, render_headers};
pub use limiter::RateLimiter;
pub use policy::{Decision, LimiterUnavailable, Policy, QuotaUsage};
pub use routes::{GraphqlCharge, RouteLimits, Verdict};
