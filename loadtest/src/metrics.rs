//! The service's own counters around a measured window: SQL statements and cache lookups.
//!
//! Read from its Prometheus `/metrics` before and after the window; the difference over the
//! requests answered in between is "SQL per request" and "cache hit ratio". The scrapes
//! happen while the load runs, so a few requests in flight at either edge are counted on
//! one side only: with thousands of requests per window that is well under 1 %.
//!
//! The text format is parsed by hand: we need two counter families summed over their
//! labels, a few lines of code, where a parser crate would bring its own dependency tree.

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::target::Target;

/// Counter totals at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// `db_queries_total`, every shard, role and op: data-layer calls, one statement each
    /// except a few rare paths (see the service's `src/db/cluster/instrument.rs`); the directory's
    /// statements (login, registration) are not in it.
    pub sql: f64,
    /// `cache_requests_total` lookups that found the entry (`result="hit"`, any tier).
    pub cache_hits: f64,
    /// Lookups that did not: Redis `miss` and `bypass` (an L1 miss goes on to Redis and is
    /// counted there).
    pub cache_misses: f64,
}

impl Counters {
    pub fn parse(text: &str) -> Self {
        let mut counters = Self::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "db_queries_total" => counters.sql += value,
                "cache_requests_total" => {
                    if labels.contains("result=\"hit\"") {
                        counters.cache_hits += value;
                    } else if labels.contains("result=\"miss\"")
                        || labels.contains("result=\"bypass\"")
                    {
                        counters.cache_misses += value;
                    }
                }
                _ => {}
            }
        }
        counters
    }

    /// Scrapes `path` on `target`; `None` when there is no such endpoint (the hello-world
    /// baseline) or it does not answer 200.
    pub async fn scrape(target: &Target, path: &str) -> Option<Self> {
        match target.fetch(Method::GET, path, None, None).await {
            Ok((StatusCode::OK, body)) => Some(Self::parse(&String::from_utf8_lossy(&body))),
            _ => None,
        }
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            sql: self.sql - before.sql,
            cache_hits: self.cache_hits - before.cache_hits,
            cache_misses: self.cache_misses - before.cache_misses,
        }
    }

    /// Hits over lookups; `None` without lookups (no cache).
    pub fn hit_ratio(self) -> Option<f64> {
        let lookups = self.cache_hits + self.cache_misses;
        (lookups > 0.0).then(|| self.cache_hits / lookups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_their_families_over_labels_and_skip_the_rest() {
        let text = "\
# HELP db_queries_total SQL statements
# TYPE db_queries_total counter
db_queries_total{shard=\"0\",role=\"replica\",op=\"select\"} 10
db_queries_total{shard=\"1\",role=\"primary\",op=\"insert\"} 5
db_query_duration_seconds_count{shard=\"0\"} 99
cache_requests_total{tier=\"l1\",result=\"hit\"} 30
cache_requests_total{tier=\"redis\",result=\"hit\"} 7
cache_requests_total{tier=\"redis\",result=\"miss\"} 2
cache_requests_total{tier=\"redis\",result=\"bypass\"} 1
cache_requests_total{tier=\"redis\",result=\"fill\"} 2
garbage line
";
        let c = Counters::parse(text);
        assert_eq!(c.sql, 15.0);
        assert_eq!(c.cache_hits, 37.0);
        assert_eq!(c.cache_misses, 3.0);
        assert_eq!(c.hit_ratio(), Some(0.925));
        let later = Counters {
            sql: 25.0,
            cache_hits: 40.0,
            cache_misses: 3.0,
        };
        assert_eq!(later.since(c).sql, 10.0);
        assert_eq!(later.since(c).hit_ratio(), Some(1.0));
        assert_eq!(Counters::default().hit_ratio(), None);
    }
}
