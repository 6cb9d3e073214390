//! Traffic control: what protects the service and its dependencies from too much work.
//! The circuit breaker and the distributed rate limiter (`ratelimit/`); load shedding joins
//! here.

mod breaker;
mod ratelimit;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Rejected};
pub use ratelimit::{
    Decision, LimiterUnavailable, Policy, RateLimitHeaders, RateLimiter, render_headers,
};
