//! Traffic control: what protects the service and its dependencies from too much work.
//! Today the circuit breaker; rate limits and load shedding join here.

mod breaker;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Rejected};
