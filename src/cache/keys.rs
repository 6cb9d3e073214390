//! Cache keys: one entry per row (a user, a post), per user's first page of posts, and per
//! page of the user list, shared by every API: the cache holds data, each API renders it.
//!
//! Layout: `{prefix}:v2:{user:42}`. `v2` is the schema version of the cached values: a deploy
//! that changes a cached type bumps it, and old entries are never decoded as the new shape
//! (they just expire). The braces are a Redis Cluster hash tag, so an entry and its
//! bookkeeping keys live in one slot and one Lua script can touch them all.
//!
//! Every entry has a *base*: its version counter (`{base}:ver`, bumped by each invalidation)
//! and its fences (`{base}:lsn:{shard}`, the commit position of the last invalidating write
//! on each shard it depends on) hang off the base. For a row the base is the entry itself and
//! depends on the row's shard. A page of the user list belongs to the *family* `{users}`:
//! every page shape (`{users}:o0l100`, `{users}:a42l51`) is its own entry, but they share the
//! family's version and fences, so one invalidation (a registration or a deletion, on any
//! shard) retires every cached page at once without knowing which pages exist.

use std::fmt;

/// Bump when a cached type (or the stored format, see `redis_tier.rs`) changes shape.
const SCHEMA: &str = "v2";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    value: String,
    /// Length of the base within `value` (the whole of it for a row).
    base_len: usize,
    /// The shards whose writes can change this entry (the fences to read past).
    shards: Shards,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shards {
    One(u16),
    All(Vec<u16>),
}

impl Key {
    pub fn user(prefix: &str, id: i64, shard: u16) -> Self {
        Self::row(format!("{prefix}:{SCHEMA}:{{user:{id}}}"), shard)
    }

    pub fn post(prefix: &str, id: i64, shard: u16) -> Self {
        Self::row(format!("{prefix}:{SCHEMA}:{{post:{id}}}"), shard)
    }

    /// A user's first page of posts (newest first).
    pub fn posts_page(prefix: &str, user_id: i64, shard: u16) -> Self {
        Self::row(format!("{prefix}:{SCHEMA}:{{posts-of:{user_id}}}"), shard)
    }

    /// One page of the user list (`shape` names it, e.g. `o0l100`), in the `{users}` family
    /// that depends on every shard.
    pub fn users_page(prefix: &str, shape: &str, shards: Vec<u16>) -> Self {
        let base = Self::users_family(prefix, shards);
        let value = format!("{}:{shape}", base.value);
        Self { value, ..base }
    }

    /// The `{users}` family itself: what a registration or deletion invalidates.
    pub fn users_family(prefix: &str, shards: Vec<u16>) -> Self {
        let value = format!("{prefix}:{SCHEMA}:{{users}}");
        Self {
            base_len: value.len(),
            value,
            shards: Shards::All(shards),
        }
    }

    fn row(value: String, shard: u16) -> Self {
        Self {
            base_len: value.len(),
            value,
            shards: Shards::One(shard),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The key the version counter and fences hang off (the family, for a list page).
    pub fn base(&self) -> &str {
        self.value.get(..self.base_len).unwrap_or(&self.value)
    }

    /// Whether this key names a whole family (invalidating it retires every page of it).
    pub fn is_family(&self) -> bool {
        matches!(self.shards, Shards::All(_)) && self.value.len() == self.base_len
    }

    /// The version counter bumped by every invalidation (the lease a fill must still hold).
    pub fn version(&self) -> String {
        format!("{}:ver", self.base())
    }

    /// The commit position of the latest invalidating write on `shard` (the fence a fill
    /// must read past).
    pub fn fence(&self, shard: u16) -> String {
        format!("{}:lsn:{shard}", self.base())
    }

    /// The shards whose fences a fill of this entry reads past.
    pub fn shards(&self) -> &[u16] {
        match &self.shards {
            Shards::One(shard) => std::slice::from_ref(shard),
            Shards::All(shards) => shards,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_and_its_bookkeeping_share_a_cluster_hash_tag() {
        let key = Key::user("app", 42, 0);
        assert_eq!(key.as_str(), "app:v2:{user:42}");
        assert_eq!(key.version(), "app:v2:{user:42}:ver");
        assert_eq!(key.fence(0), "app:v2:{user:42}:lsn:0");
        assert_eq!(key.shards(), [0]);
        assert!(!key.is_family());
    }

    #[test]
    fn list_pages_share_their_family_version_and_fences() {
        let page = Key::users_page("app", "o0l100", vec![0, 1]);
        assert_eq!(page.as_str(), "app:v2:{users}:o0l100");
        assert_eq!(page.base(), "app:v2:{users}");
        assert_eq!(
            page.version(),
            Key::users_family("app", vec![0, 1]).version()
        );
        assert_eq!(page.fence(1), "app:v2:{users}:lsn:1");
        assert_eq!(page.shards(), [0, 1]);
        assert!(!page.is_family() && Key::users_family("app", vec![0]).is_family());
    }
}
