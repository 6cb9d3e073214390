//! Integration tests against the real local stack (`scripts/stack up`): two shards, each a
//! Postgres primary with a streaming replica. Each test gets its own databases on every
//! server (see `helpers::TestApp`), so tests run in parallel and leave nothing behind.

mod helpers;
mod telemetry_harness;

mod auth;
mod batch_reads;
mod cache;
mod chaos;
mod directory;
mod graphql;
mod loadtest;
mod observability;
mod pagination;
mod routing;
mod sharding;
mod shutdown;
mod validation;
