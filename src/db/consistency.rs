//! Read-your-writes without server-side sessions: consistency tokens.
//!
//! After a request writes, the response carries `X-Consistency-Token`: for each shard it
//! wrote, the primary's WAL insert position after the commit (an LSN). A client that sends
//! the token back is served from a replica only once that replica has replayed past the LSN
//! (known from the health monitor), otherwise from the primary. No session state lives on
//! any instance, so any instance can serve the next request. This is GitLab's database load
//! balancer's scheme.
//!
//! Composition: a token names each shard once; merging keeps the larger LSN per shard. The
//! service answers a write with the merge of the token it received and its own writes, so a
//! client that keeps sending the latest token it got covers every shard it wrote to.
//!
//! Forgery cannot make anyone read older data, but a made-up LSN far ahead sends every read
//! of whoever sends it to the primaries for good: so the HTTP layer signs the tokens it
//! hands out and refuses any it did not (`src/http/session.rs`).
//!
//! Format: `0=0/3A3FB398, 1=0/1A2B3C` (shard id `=` LSN in Postgres' `hi/lo` hex notation);
//! on the wire, followed by `; sig=...`.

use std::{collections::BTreeMap, fmt, str::FromStr};

/// A WAL position, as `pg_lsn` prints it (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (hi, lo) = s.split_once('/').ok_or(())?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| ())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| ())?;
        Ok(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Per shard, the LSN a read must see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyToken(BTreeMap<u16, Lsn>);

impl ConsistencyToken {
    pub fn get(&self, shard: u16) -> Option<Lsn> {
        self.0.get(&shard).copied()
    }

    /// Raises shard's LSN to at least `lsn`.
    pub fn require(&mut self, shard: u16, lsn: Lsn) {
        let entry = self.0.entry(shard).or_default();
        *entry = (*entry).max(lsn);
    }

    pub fn merge(&mut self, other: &ConsistencyToken) {
        for (&shard, &lsn) in &other.0 {
            self.require(shard, lsn);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for ConsistencyToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut token = ConsistencyToken::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("`{part}` is not `shard=LSN` (e.g. `0=0/3A3FB398`)");
            let (shard, lsn) = part.split_once('=').ok_or_else(bad)?;
            let shard = shard.trim().parse::<u16>().map_err(|_| bad())?;
            let lsn = lsn.trim().parse::<Lsn>().map_err(|()| bad())?;
            token.require(shard, lsn);
        }
        if token.0.len() > 64 {
            return Err("a consistency token names at most 64 shards".into());
        }
        Ok(token)
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (shard, lsn)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{shard}={lsn}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_through_postgres_notation_and_order_numerically() {
        let lsn: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!(lsn > "9/FFFFFFFF".parse().expect("valid"));
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn tokens_compose_by_keeping_the_later_lsn_per_shard() {
        let mut a: ConsistencyToken = "0=0/10, 1=0/5".parse().expect("valid");
        let b: ConsistencyToken = "1=0/20,2=0/1".parse().expect("valid");
        a.merge(&b);
        assert_eq!(a.to_string(), "0=0/10, 1=0/20, 2=0/1");
    }

    #[test]
    fn malformed_tokens_are_rejected_with_the_bad_part_named() {
        let err = "0=0/10, banana"
            .parse::<ConsistencyToken>()
            .expect_err("malformed");
        assert!(err.contains("banana"), "{err}");
        assert!("70000=0/1".parse::<ConsistencyToken>().is_err());
    }
}
