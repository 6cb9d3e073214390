//! Operations: every read and every write a client may make, once for all transports.
//!
//! REST v1 and GraphQL (and v2 later) differ only in how they read input and render output:
//! their handlers and resolvers parse, call an operation, render. The rules in between live
//! here once: which domain parser validates the input, who may change what (owner-only
//! accounts, author-only posts), which reads go through the cache, which writes invalidate
//! what, and what each outcome means as an [`Error`](crate::Error) (so a 403 in REST is a
//! `FORBIDDEN` in GraphQL, by construction). Each function takes the raw input, the caller's
//! identity and the request's [`Session`](crate::db::Session); none knows about HTTP or
//! GraphQL, and nothing above this layer touches the cache or the database.

pub mod accounts;
pub mod api_keys;
mod audit;
pub mod posts;
pub mod users;
