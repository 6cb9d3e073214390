//! Traffic control: what protects the service and its dependencies from too much work.
//! The circuit breaker, the distributed rate limiter (`ratelimit/`) with the limits routes
//! apply per tier and route class, the login limits built on it (`login.rs`), and load
//! shedding with an adaptive concurrency limit (`shed/`).

mod address;
mod breaker;
pub mod login;
mod ratelimit;
mod redis_pool;
mod shed;

pub use address::limit_key;
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Rejected};
pub use ratelimit::{
    Decision, GraphqlCharge, LimiterUnavailable, Policy, QuotaUsage, RateLimitHeaders, RateLimiter,
    RouteLimits, Verdict, render_headers,
};
pub use redis_pool::{SharedConnection, redis_pool};
pub use shed::{LoadShedder, Permit, Priority, Shed};
