//! Administration: what the CLI runs besides `serve`, never on the request path.
//!
//! - [`migrate`]: applies the migrations to the directory and every shard, and binds each
//!   shard's database to its id range.
//! - [`seed`]: loads the deterministic demo data set (bulk `COPY`, straight to the primaries).

pub mod migrate;
pub mod seed;
