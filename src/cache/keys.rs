//! Cache keys: one entry per row (a user, a post) and per user's first page of posts, shared
//! by every API version: the cache holds data, each API renders it.
//!
//! Layout: `{prefix}:v1:{user:42}`. `v1` is the schema version of the cached value: a deploy
//! that changes a cached type bumps it, and old entries are never decoded as the new shape
//! (they just expire). The braces are a Redis Cluster hash tag, so an entry and its fence
//! keys (`...:ver`, `...:lsn`) live in one slot and one Lua script can touch all three.

use std::fmt;

/// Bump when a cached type changes shape.
const SCHEMA: &str = "v1";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    pub fn user(prefix: &str, id: i64) -> Self {
        Self(format!("{prefix}:{SCHEMA}:{{user:{id}}}"))
    }

    pub fn post(prefix: &str, id: i64) -> Self {
        Self(format!("{prefix}:{SCHEMA}:{{post:{id}}}"))
    }

    /// A user's first page of posts (newest first).
    pub fn posts_page(prefix: &str, user_id: i64) -> Self {
        Self(format!("{prefix}:{SCHEMA}:{{posts-of:{user_id}}}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version counter bumped by every invalidation (the lease a fill must still hold).
    pub fn version(&self) -> String {
        format!("{}:ver", self.0)
    }

    /// The commit LSN of the latest invalidation (the fence a fill must read past).
    pub fn fence(&self) -> String {
        format!("{}:lsn", self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_and_its_fences_share_a_cluster_hash_tag() {
        let key = Key::user("app", 42);
        assert_eq!(key.as_str(), "app:v1:{user:42}");
        assert!(key.version().contains("{user:42}") && key.fence().contains("{user:42}"));
    }
}
