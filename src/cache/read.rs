//! The one read path of the cache, for one key or many.
//!
//! 1. **L1** (two-tier): each key looked up in process; hits are done.
//! 2. **Redis**: every remaining key, with its version and fences, in one `MGET`.
//! 3. **Single flight per key**: each miss joins its key's flight. The flight's identity holds
//!    the version the miss saw and the request's consistency requirement, so a miss looked up
//!    after a write (a newer version) never takes a value loaded before it.
//! 4. **A second look** at the keys this request leads (one round trip): a flight that ended
//!    just before this request joined has filled its entry by now.
//! 5. **One database read for everything this request leads**: the loader gets all those
//!    keys at once and sends one statement per shard involved, reading past the highest
//!    fence of each shard (a replica that has replayed it, else the primary).
//! 6. **One fill**: a Lua script stores each loaded value unless its version moved since the
//!    lookup (an invalidation raced the load), in one round trip. Absent rows are stored too,
//!    as `null` with the short negative TTL.
//! 7. **Followers** wait for the flights others lead; if a leader went away (its request was
//!    cancelled), they load what it left for themselves.
//!
//! Redis being unusable (breaker open, timeout) makes every key a `bypass`: read from the
//! database through the same flights, never an error.
//!
//! The guarantee is the single-key one, per key (see `redis_tier.rs`): a fill is never older
//! than the last invalidated write, and never lands after an invalidation it raced.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    sync::Arc,
};

use futures_util::future::join_all;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Cache, Error,
    keys::Key,
    redis_tier::{Fill, Lookup},
    single_flight::{Flight, Leader},
};
use crate::{
    db::{self, Lsn, Session},
    telemetry::names,
};

/// What a flight shares with its followers: the JSON of the value (`null` for "none"), or
/// the load's error.
pub(super) type Loaded = Result<Arc<[u8]>, Arc<db::Error>>;

/// A key this request loads, and what its lookup saw.
struct Lead<'a, K> {
    id: K,
    key: Key,
    /// `None` when Redis was bypassed: load, but do not fill.
    miss: Option<(String, Vec<(u16, u64)>)>,
    leader: Leader<'a, Loaded>,
}

impl Cache {
    /// Reads the entries of `ids` (`key` names each id's entry; an id without one cannot
    /// exist and is skipped), loading the misses with `load`, which gets every id this
    /// request must load at once and returns the values it found (an absent id has no
    /// value). Returns the values found, by id.
    pub(super) async fn read<K, T, F, Fut>(
        &self,
        session: &Session,
        ids: &[K],
        key: impl Fn(K) -> Option<Key>,
        load: F,
    ) -> Result<HashMap<K, T>, Error>
    where
        K: Copy + Eq + Hash,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(Session, Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, db::Error>>,
    {
        let Some(redis) = &self.redis else {
            return Ok(load(session.clone(), ids.to_vec()).await?);
        };
        let mut distinct = HashSet::with_capacity(ids.len());
        let wanted = ids
            .iter()
            .filter(|id| distinct.insert(**id))
            .filter_map(|&id| Some((id, key(id)?)));
        let mut found = HashMap::with_capacity(ids.len());
        let mut remote = Vec::with_capacity(ids.len());
        for (id, key) in wanted {
            if let Some(l1) = &self.l1
                && let Some(value) = l1.get::<T>(key.as_str()).await
            {
                outcome(session, "l1", "hit");
                found.extend(value.map(|value| (id, value)));
            } else {
                remote.push((id, key));
            }
        }
        if remote.is_empty() {
            return Ok(found);
        }

        let keys: Vec<&Key> = remote.iter().map(|(_, key)| key).collect();
        let lookups = redis.lookup(session.timing(), &keys).await;
        let mut misses = Vec::with_capacity(remote.len());
        match lookups {
            Ok(lookups) => {
                for ((id, key), lookup) in remote.into_iter().zip(lookups) {
                    match lookup {
                        Lookup::Hit(json) => match decode::<T>(&json) {
                            Some(value) => {
                                outcome(session, "redis", "hit");
                                if let Some(l1) = &self.l1 {
                                    l1.insert(key.as_str(), value.clone()).await;
                                }
                                found.extend(value.map(|value| (id, value)));
                            }
                            // Another schema's entry: read, and leave it to be replaced.
                            None => misses.push((id, key, None)),
                        },
                        Lookup::Miss { version, fences } => {
                            outcome(session, "redis", "miss");
                            misses.push((id, key, Some((version, fences))));
                        }
                    }
                }
            }
            Err(_) => {
                for (id, key) in remote {
                    outcome(session, "redis", "bypass");
                    misses.push((id, key, None));
                }
            }
        }
        if misses.is_empty() {
            return Ok(found);
        }

        let mut leads = Vec::new();
        let mut follows = Vec::new();
        for (id, key, miss) in misses {
            let version = miss.as_ref().map_or("", |(version, _)| version.as_str());
            match self.flights.join(flight_id(&key, version, session)) {
                Flight::Lead(leader) => leads.push(Lead {
                    id,
                    key,
                    miss,
                    leader,
                }),
                Flight::Follow(follower) => follows.push((id, follower)),
            }
        }
        let leads = self.look_again(session, leads, &mut found).await;
        if !leads.is_empty() {
            found.extend(self.load_and_fill(session, leads, &load).await?);
        }

        let waited = join_all(
            follows
                .into_iter()
                .map(|(id, follower)| async move { (id, follower.wait().await) }),
        )
        .await;
        let mut abandoned = Vec::new();
        for (id, result) in waited {
            match result {
                Some(Ok(json)) => {
                    found.extend(decode::<T>(&json).flatten().map(|value| (id, value)));
                }
                Some(Err(err)) => return Err(Error(err)),
                None => abandoned.push(id),
            }
        }
        if !abandoned.is_empty() {
            found.extend(load(session.clone(), abandoned).await?);
        }
        Ok(found)
    }

    /// Looks the keys this request leads up once more, in one round trip: a flight that ended
    /// between this request's lookup and its joining (it had left the flight map) has filled
    /// its entry by now, and taking it saves a database read: this is what collapses a burst
    /// of misses on one key into one read. A key still missing takes the newest version and
    /// fences seen, which its fill is then checked against.
    async fn look_again<'a, K, T>(
        &self,
        session: &Session,
        leads: Vec<Lead<'a, K>>,
        found: &mut HashMap<K, T>,
    ) -> Vec<Lead<'a, K>>
    where
        K: Copy + Eq + Hash,
        T: DeserializeOwned,
    {
        let Some(redis) = &self.redis else {
            return leads;
        };
        let (checked, mut unchecked): (Vec<_>, Vec<_>) =
            leads.into_iter().partition(|lead| lead.miss.is_some());
        if checked.is_empty() {
            return unchecked;
        }
        let lookups = {
            let keys: Vec<&Key> = checked.iter().map(|lead| &lead.key).collect();
            redis.lookup(session.timing(), &keys).await
        };
        let Ok(lookups) = lookups else {
            unchecked.extend(checked);
            return unchecked;
        };
        for (mut lead, lookup) in checked.into_iter().zip(lookups) {
            match lookup {
                Lookup::Hit(json) => match decode::<T>(&json) {
                    Some(value) => {
                        found.extend(value.map(|value| (lead.id, value)));
                        lead.leader.finish(Ok(json.into()));
                    }
                    None => unchecked.push(lead),
                },
                Lookup::Miss { version, fences } => {
                    lead.miss = Some((version, fences));
                    unchecked.push(lead);
                }
            }
        }
        unchecked
    }

    /// Loads every key this request leads in one call, fills them in one round trip, and
    /// hands each flight its result.
    async fn load_and_fill<K, T, F, Fut>(
        &self,
        session: &Session,
        leads: Vec<Lead<'_, K>>,
        load: &F,
    ) -> Result<HashMap<K, T>, Error>
    where
        K: Copy + Eq + Hash,
        T: Serialize + Clone + Send + Sync + 'static,
        F: Fn(Session, Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, db::Error>>,
    {
        // One read for all: past the highest fence of each shard involved.
        let mut fenced = session.clone();
        for (_, fences) in leads.iter().filter_map(|lead| lead.miss.as_ref()) {
            for &(shard, lsn) in fences {
                fenced = fenced.at_least(shard, Lsn(lsn));
            }
        }
        let mut values = match load(fenced, leads.iter().map(|lead| lead.id).collect()).await {
            Ok(values) => values,
            Err(err) => {
                let err = Arc::new(err);
                for lead in leads {
                    lead.leader.finish(Err(err.clone()));
                }
                return Err(Error(err));
            }
        };
        let mut encoded = Vec::with_capacity(leads.len());
        for lead in &leads {
            let value = values.get(&lead.id);
            match serde_json::to_vec(&value) {
                Ok(json) => encoded.push((Arc::<[u8]>::from(json), value.is_none())),
                Err(err) => {
                    let err = Arc::new(db::Error::Query(sqlx::Error::Decode(err.into())));
                    for lead in leads {
                        lead.leader.finish(Err(err.clone()));
                    }
                    return Err(Error(err));
                }
            }
        }
        let (filled, fills): (Vec<usize>, Vec<Fill<'_>>) = leads
            .iter()
            .zip(&encoded)
            .enumerate()
            .filter_map(|(i, (lead, (json, negative)))| {
                let (version, _) = lead.miss.as_ref()?;
                Some((
                    i,
                    Fill {
                        key: &lead.key,
                        version,
                        json,
                        ttl: self.ttl(*negative),
                    },
                ))
            })
            .unzip();
        if let Some(redis) = &self.redis
            && !fills.is_empty()
        {
            let stored = redis.fill(session.timing(), &fills).await;
            for ((i, fill), stored) in filled.iter().zip(&fills).zip(stored) {
                if !stored {
                    continue;
                }
                count("redis", "fill");
                if let (Some(l1), Some(lead)) = (&self.l1, leads.get(*i)) {
                    l1.insert(fill.key.as_str(), values.get(&lead.id).cloned())
                        .await;
                }
            }
        }
        let mut found = HashMap::with_capacity(leads.len());
        for (lead, (json, _)) in leads.into_iter().zip(encoded) {
            lead.leader.finish(Ok(json));
            if let Some(value) = values.remove(&lead.id) {
                found.insert(lead.id, value);
            }
        }
        Ok(found)
    }
}

/// The identity of a key's flight: the key, the version its lookup saw, and what the request
/// requires of each shard the entry depends on. Only requests that would accept the same
/// load share it.
fn flight_id(key: &Key, version: &str, session: &Session) -> String {
    let mut id = format!("{key}@{version}");
    for &shard in key.shards() {
        id.push('@');
        id.push_str(&session.required(shard).unwrap_or_default().0.to_string());
    }
    id
}

/// `None` when the bytes do not decode (an entry of another schema): treated as a miss.
fn decode<T: DeserializeOwned>(json: &[u8]) -> Option<Option<T>> {
    match serde_json::from_slice(json) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(error = %err, "undecodable cache entry; treated as a miss");
            None
        }
    }
}

/// Counts a lookup's outcome and shows it in the request's debug trace.
fn outcome(session: &Session, tier: &'static str, result: &'static str) {
    count(tier, result);
    if let Some(trace) = session.trace() {
        trace.cache_outcome(result);
    }
}

fn count(tier: &'static str, result: &'static str) {
    metrics::counter!(names::CACHE_REQUESTS, "tier" => tier, "result" => result).increment(1);
}
