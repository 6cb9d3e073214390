//! Operations: what a client may do, with its rules, whatever the API it came through.
//!
//! REST v1 and GraphQL (and v2 later) differ only in how they read input and render output;
//! the rules in between live here once: which domain parser validates the input, who may
//! change what (owner-only accounts, author-only posts), and what each outcome means as an
//! [`Error`](crate::Error) (so a 403 in REST is a `FORBIDDEN` in GraphQL, by construction).
//! Each function takes the raw input, the caller's identity and the request's [`Scope`](crate::db::Scope),
//! and calls the data layer; none knows about HTTP or GraphQL.

pub mod accounts;
pub mod posts;
