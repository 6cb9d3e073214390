//! Logs (and, later, metrics and traces).
//!
//! Dev: human-readable lines. Production: one JSON object per line, for a log pipeline.
//! `RUST_LOG` overrides the default filter.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::Config;

pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init`: a second initialisation (tests, embedding) is not an error worth dying for.
    let _ = if config.is_dev() {
        registry.with(fmt::layer().compact()).try_init()
    } else {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init()
    };
}
