//! The harness of the integration tests.
//!
//! - [`TestApp`] (`app.rs`): the real service on port 0 over this test's own databases on the
//!   shared stack, and the arrange steps that assert they worked: `app.register(..)`,
//!   `app.login(..)`, `app.create_post(..)`, `app.rename(..)`, `app.create_api_key(..)`;
//!   `app.another_instance()` for a second instance over the same databases and Redis.
//! - The typed client (`client.rs`): `app.users()`, `app.posts()`, `app.auth()`,
//!   `app.api_keys()`, `app.graphql(..)` for the act step; each route method returns a
//!   request that is sent by awaiting it, after optional `.bearer(..)`, `.api_key(..)`,
//!   `.header(..)` or `.raw_body(..)`.
//! - The error contract (`problem.rs`): [`assert_problem`], [`assert_problem_mentioning`],
//!   and [`pretty`] for insta inline snapshots of exact bodies.
//! - Direct database access (`db.rs`): `app.primary(i)`, `app.replica(i)`,
//!   `app.directory()`, `app.wait_for_replicas()`, and statement counts per server.
//! - The service as a process (`process.rs`): `app.launch(dir).start(name, addr)` runs the
//!   built `scalable-api serve` over the test's databases, to be signalled and restarted.

mod app;
mod client;
mod db;
mod problem;
mod process;
mod silent;

pub use app::{Instance, PASSWORD, Stack, TestApp, TestUser};
pub use client::{Anonymous, Request, ResponseExt};
pub use db::{all_statement_calls, connect, statement_calls};
pub use problem::{assert_problem, assert_problem_mentioning, detail_of, pretty};
pub use process::free_addr;
pub use silent::SilentServer;
