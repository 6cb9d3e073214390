//! Integration tests against the real local stack (`scripts/stack up`): two shards, each a
//! Postgres primary with a streaming replica. Each test gets its own databases on every
//! server (see `helpers::TestApp`), so tests run in parallel and leave nothing behind.
//!
//! A new test: arrange with `TestApp::spawn()` and `app.register(..)` / `app.create_post(..)`,
//! act through the typed client (`app.users().get(id).await`, `app.posts().create(&user, ..)`,
//! `app.graphql(..)`; see `helpers`), assert with `assert_problem` or an insta inline snapshot
//! where the exact body is the contract. A test that stops or pauses a server goes in `chaos`.

mod helpers;
mod telemetry_harness;

mod api_keys;
mod auth;
mod batch_reads;
mod cache;
mod chaos;
mod compression;
mod directory;
mod graphql;
mod health;
mod idempotency;
mod leases;
mod limits;
mod loadtest;
mod login_limits;
mod observability;
mod openapi;
mod pagination;
mod ratelimit;
mod rolling_restart;
mod routing;
mod schemathesis;
mod security;
mod seed;
mod server;
mod server_timing;
mod sharding;
mod shedding;
mod shutdown;
mod staleness;
mod v2;
mod validation;
mod versioning;
