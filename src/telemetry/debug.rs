//! What a request did, for the learner's debug headers (`X-Db-Route`, `X-Cache`).
//!
//! The data layer and the cache report where each statement went and what each cache lookup
//! found through this trait; the HTTP layer owns the implementation and turns it into
//! headers (see `src/http/session.rs`). Defined here, in the leaf every layer may import, so
//! that reporting goes down-to-up without the lower layers knowing about HTTP. Production
//! leaves it out and pays one `Option` check per statement.

use std::fmt;

pub trait DebugTrace: Send + Sync + fmt::Debug {
    /// A statement ran on `shard`'s `role` (`primary` | `replica`).
    fn db_route(&self, shard: u16, role: &'static str);
    /// A cache lookup ended as `outcome` (`hit` | `miss` | `bypass`).
    fn cache_outcome(&self, outcome: &'static str);
}
