//! The one read path of the cache, for one key or many.
//!
//! 1. **L1** (two-tier): each key looked up in process; hits are done.
//! 2. **Redis**: every remaining key, with its version and fences, in one `MGET`.
//! 3. **Single flight per key**: each miss joins its key's flight. The flight's identity holds
//!    the version the miss saw and the request's consistency requirement, so a miss looked up
//!    after a write (a newer version) never takes a value loaded before it.
//!    A flight whose value is already there (its fill is on its way to Redis) answers at
//!    once: counted as a hit, since no database read is waited for.
//! 4. **A second look**, only where it can find something: at the keys this request leads
//!    whose entry saw a flight end after this request's lookup began (one round trip for
//!    all of them). That flight's fill has been tried by then, and finding it saves a
//!    database read: this is what collapses a burst of misses on one key into one read.
//!    Any other key skips it: a flight that ended before the lookup began had its fill in
//!    Redis before the lookup read it. (The single-flight map remembers end instants in a
//!    fixed lossy table, where a collision can only cause a needless look.)
//! 5. **One database read for everything this request leads**: the loader gets all those
//!    keys at once and sends one statement per shard involved, reading past the highest
//!    fence of each shard (a replica that has replayed it, else the primary).
//! 6. **The fill, off the request's path**: each loaded value goes, with its flight, to the
//!    cache's background filler (`filler.rs`), which stores all the fills queued meanwhile
//!    with one script call, each unless its version moved since the lookup (an invalidation
//!    raced the load or the wait in the queue). Absent rows are stored too, as `null` with
//!    the short negative TTL. The flight ends once its fill has been tried. The L1
//!    (two-tier) gets the value at once, unless an invalidation of the entry was applied
//!    since the lookup began (see `l1.rs`), and loses it again if the script refuses the fill.
//! 7. **Followers** wait for the flights others lead; if a leader went away (its request was
//!    cancelled), they load what it left for themselves.
//!
//! Round trips to Redis: one for a hit; one for a miss (plus the second look only when a
//! flight of the key ended meanwhile), its fill shared with other misses and not waited for.
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
    time::Instant,
};

use futures_util::future::join_all;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Cache, Error, Loaded,
    audit::{Recheck, Sample, Source},
    filler::FillJob,
    keys::Key,
    redis_tier::Lookup,
    single_flight::{Flight, Leader},
};
use crate::{
    db::{self, Lsn, Session},
    telemetry::names,
};

/// A key this request loads, and what its lookup saw.
struct Lead<K> {
    id: K,
    key: Key,
    /// `None` when Redis was bypassed: load, but do not fill.
    miss: Option<(String, Vec<(u16, u64)>)>,
    leader: Leader<Loaded>,
}

impl Cache {
    /// Reads the entries of `ids` (`key` names each id's entry; an id without one cannot
    /// exist and is skipped), loading the misses with `load`, which gets every id this
    /// request must load at once and returns the values it found (an absent id has no
    /// value). Returns the values found, by id.
    ///
    /// A read the staleness auditor samples notes where each value came from and hands
    /// them, with `recheck` (how to read them again on the primary), to the auditor as it
    /// returns (see `audit.rs`): the request does not wait for the audit.
    pub(super) async fn read<K, T, F, Fut>(
        &self,
        session: &Session,
        ids: &[K],
        key: impl Fn(K) -> Option<Key>,
        load: F,
        recheck: impl FnOnce() -> Recheck<K, T>,
    ) -> Result<HashMap<K, T>, Error>
    where
        K: Copy + Eq + Hash + Send + 'static,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(Session, Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, db::Error>>,
    {
        let Some(auditor) = self.auditor.as_ref().filter(|auditor| auditor.sampled()) else {
            return self.read_noting(session, ids, key, load, None).await;
        };
        // Recording which server answers each shard's read, to name the replica.
        let recording = session.recording();
        let mut sample = Vec::new();
        let found = self
            .read_noting(&recording, ids, key, load, Some(&mut sample))
            .await?;
        let token = !session.required_token().is_empty();
        auditor.submit(recheck(), token, sample);
        Ok(found)
    }

    /// [`Cache::read`], noting in `sample` (when sampled) each value served from the L1,
    /// Redis or a replica, with its source.
    async fn read_noting<K, T, F, Fut>(
        &self,
        session: &Session,
        ids: &[K],
        key: impl Fn(K) -> Option<Key>,
        load: F,
        mut sample: Option<&mut Sample<K, T>>,
    ) -> Result<HashMap<K, T>, Error>
    where
        K: Copy + Eq + Hash,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(Session, Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, db::Error>>,
    {
        let Some(redis) = &self.redis else {
            let values = load(session.clone(), ids.to_vec()).await?;
            if let Some(sample) = sample {
                let mut distinct = HashSet::with_capacity(ids.len());
                for &id in ids.iter().filter(|id| distinct.insert(**id)) {
                    note_loaded(sample, session, id, key(id).as_ref(), &values);
                }
            }
            return Ok(values);
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
                if let Some(sample) = sample.as_deref_mut() {
                    sample.push((id, Source::L1, value.clone()));
                }
                found.extend(value.map(|value| (id, value)));
            } else {
                remote.push((id, key));
            }
        }
        if remote.is_empty() {
            return Ok(found);
        }

        let keys: Vec<&Key> = remote.iter().map(|(_, key)| key).collect();
        let looked_up = Instant::now();
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
                                    l1.insert(key.as_str(), value.clone(), json.len(), looked_up)
                                        .await;
                                }
                                if let Some(sample) = sample.as_deref_mut() {
                                    sample.push((id, Source::Redis, value.clone()));
                                }
                                found.extend(value.map(|value| (id, value)));
                            }
                            // Another schema's entry: read, and leave it to be replaced.
                            None => misses.push((id, key, None)),
                        },
                        // Counted once resolved: a second look or a flight may still hit.
                        Lookup::Miss { version, fences } => {
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
            match self
                .flights
                .join(flight_id(&key, version, session), key.as_str())
            {
                Flight::Lead(leader) => leads.push(Lead {
                    id,
                    key,
                    miss,
                    leader,
                }),
                Flight::Follow(follower) => {
                    if miss.is_some() {
                        let served = if follower.has_value() { "hit" } else { "miss" };
                        outcome(session, "redis", served);
                    }
                    follows.push((id, follower));
                }
            }
        }
        let leads = self
            .look_again(session, leads, looked_up, &mut found, sample.as_deref_mut())
            .await;
        for _ in leads.iter().filter(|lead| lead.miss.is_some()) {
            outcome(session, "redis", "miss");
        }
        if !leads.is_empty() {
            let led: Vec<(K, Key)> = match sample {
                Some(_) => leads
                    .iter()
                    .map(|lead| (lead.id, lead.key.clone()))
                    .collect(),
                None => Vec::new(),
            };
            let loaded = self.load_and_fill(session, leads, looked_up, &load).await?;
            if let Some(sample) = sample {
                for (id, key) in led {
                    note_loaded(sample, session, id, Some(&key), &loaded);
                }
            }
            found.extend(loaded);
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

    /// Looks up once more, in one round trip, the keys this request leads whose entry saw a
    /// flight end after `looked_up` (this request's lookup began): such a flight left the map
    /// between the lookup and the join, its fill tried, and taking the value saves a database
    /// read. Any other key cannot have been filled meanwhile by a flight of this instance, and
    /// skips the round trip. A key still missing takes the newest version and fences seen,
    /// which its fill is then checked against.
    async fn look_again<K, T>(
        &self,
        session: &Session,
        leads: Vec<Lead<K>>,
        looked_up: Instant,
        found: &mut HashMap<K, T>,
        mut sample: Option<&mut Sample<K, T>>,
    ) -> Vec<Lead<K>>
    where
        K: Copy + Eq + Hash,
        T: DeserializeOwned + Clone,
    {
        let Some(redis) = &self.redis else {
            return leads;
        };
        let (checked, mut unchecked): (Vec<_>, Vec<_>) = leads
            .into_iter()
            .partition(|lead| lead.miss.is_some() && lead.leader.ended_since(looked_up));
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
                        outcome(session, "redis", "hit");
                        if let Some(sample) = sample.as_deref_mut() {
                            sample.push((lead.id, Source::Redis, value.clone()));
                        }
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

    /// Loads every key this request leads in one call, hands each flight its result, and
    /// queues the fills for the background filler (which ends the flights once it has tried
    /// them).
    async fn load_and_fill<K, T, F, Fut>(
        &self,
        session: &Session,
        leads: Vec<Lead<K>>,
        looked_up: Instant,
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
        let mut found = HashMap::with_capacity(leads.len());
        let mut fills = Vec::with_capacity(leads.len());
        for (lead, (json, negative)) in leads.into_iter().zip(encoded) {
            lead.leader.finish(Ok(json.clone()));
            let value = values.remove(&lead.id);
            // A bypassed key is not filled: its flight ends here.
            if let Some((version, _)) = lead.miss {
                // Now, not once the fill is stored: the next read on this instance must not
                // wait for the filler. Safe against an invalidation that raced the load (the
                // L1 drops an insert its entry was invalidated since the lookup); the filler
                // takes it out again if the script refuses the fill.
                if let Some(l1) = &self.l1 {
                    l1.insert(lead.key.as_str(), value.clone(), json.len(), looked_up)
                        .await;
                }
                fills.push(FillJob {
                    key: lead.key,
                    version,
                    json,
                    ttl: self.ttl(negative),
                    leader: lead.leader,
                });
            }
            if let Some(value) = value {
                found.insert(lead.id, value);
            }
        }
        if let Some(filler) = &self.filler {
            filler.submit(fills);
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

/// Notes the value of `id` loaded by `session` (recording) when a replica served it: a key
/// of one shard names the server; a page of every shard's rows is not attributed.
fn note_loaded<K, T>(
    sample: &mut Sample<K, T>,
    session: &Session,
    id: K,
    key: Option<&Key>,
    loaded: &HashMap<K, T>,
) where
    K: Copy + Eq + Hash,
    T: Clone,
{
    let Some(&[shard]) = key.map(Key::shards) else {
        return;
    };
    if let Some(source) = Source::loaded(session, shard) {
        sample.push((id, source, loaded.get(&id).cloned()));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{CacheStrategy, Config},
        db::{ConsistencyToken, Db},
        telemetry::Phase,
    };

    /// A cache whose Redis refuses every connection: each lookup it attempts costs nothing
    /// but still counts as a round trip in the session's timing.
    fn cache() -> Cache {
        let config = Config::default();
        let db = Arc::new(Db::connect_lazy(&config.db).expect("lazy pools"));
        let cache = crate::config::CacheConfig {
            strategy: CacheStrategy::CacheAside,
            redis_url: "redis://127.0.0.1:1".into(),
            ..config.cache.clone()
        };
        Cache::new(&cache, db).expect("cache")
    }

    fn lead(cache: &Cache, flight: &str, key: &Key) -> Lead<i64> {
        match cache.flights.join(flight.to_owned(), key.as_str()) {
            Flight::Lead(leader) => Lead {
                id: 1,
                key: key.clone(),
                miss: Some((String::new(), Vec::new())),
                leader,
            },
            Flight::Follow(_) => panic!("nobody else flies {flight}"),
        }
    }

    async fn looks(cache: &Cache, lead: Lead<i64>, looked_up: Instant) -> u32 {
        let session = Session::new(ConsistencyToken::default());
        let mut found = HashMap::<i64, serde_json::Value>::new();
        let left = cache
            .look_again(&session, vec![lead], looked_up, &mut found, None)
            .await;
        assert_eq!(left.len(), 1, "still led: nothing was found");
        session.timing().get(Phase::Cache).0
    }

    #[tokio::test]
    async fn a_leader_looks_again_only_if_a_flight_of_its_key_ended_since_its_lookup() {
        let cache = cache();
        let key = Key::user("p", 1, 0);

        let looked_up = Instant::now();
        let alone = lead(&cache, "k@1", &key);
        assert_eq!(
            looks(&cache, alone, looked_up).await,
            0,
            "no flight ended: the second look is skipped"
        );

        let looked_up = Instant::now();
        let earlier = lead(&cache, "k@1", &key);
        let ours = lead(&cache, "k@2", &key);
        drop(earlier);
        assert_eq!(
            looks(&cache, ours, looked_up).await,
            1,
            "a flight of the key ended between the lookup and the join: looked again"
        );

        let ended_before = lead(&cache, "k@3", &key);
        drop(ended_before);
        std::thread::sleep(std::time::Duration::from_millis(1));
        let looked_up = Instant::now();
        let later = lead(&cache, "k@3", &key);
        assert_eq!(
            looks(&cache, later, looked_up).await,
            0,
            "a flight that ended before the lookup: its fill was there to be found"
        );
    }
}
