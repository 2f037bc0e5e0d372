//! The in-process aggregate cache: the state and version a command of this process committed,
//! kept so the next command on the aggregate loads nothing from PostgreSQL.
//!
//! An entry is never trusted on its own: the commit's version check (the same one that keeps
//! concurrent commands apart) refuses a command decided on an entry another process has since
//! moved past, and the caller reloads. An entry is *taken* by the load that uses it and put
//! back only by that command's successful commit, so a command that fails, is refused or whose
//! outcome is unknown leaves no entry behind, and two loads in one process never share one.
//!
//! Bounded by two generations: entries go into the current one; when it holds half the
//! capacity it becomes the previous one and the old previous one is dropped. A hit in the
//! previous generation moves the entry forward, so recently used aggregates stay; memory stays
//! at most `capacity` entries, every operation O(1).

use std::collections::HashMap;
use std::sync::Mutex;

/// An aggregate's state as a commit of this process left it.
pub(crate) struct CachedAggregate<A> {
    pub aggregate: A,
    pub version: u64,
    /// Its stored snapshot is of an older schema version (see `LoadedAggregate`).
    pub snapshot_stale: bool,
}

/// A bounded cache of aggregates of one type, by aggregate id.
pub(crate) struct AggregateCache<A> {
    generation_size: usize,
    generations: Mutex<Generations<A>>,
}

struct Generations<A> {
    current: HashMap<String, CachedAggregate<A>>,
    previous: HashMap<String, CachedAggregate<A>>,
}

impl<A> AggregateCache<A> {
    /// A cache of at most `capacity` aggregates (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            generation_size: (capacity / 2).max(1),
            generations: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    /// Takes the entry of `aggregate_id` out of the cache.
    pub fn take(&self, aggregate_id: &str) -> Option<CachedAggregate<A>> {
        let mut generations = self.lock();
        generations
            .current
            .remove(aggregate_id)
            .or_else(|| generations.previous.remove(aggregate_id))
    }

    /// Keeps `entry` as the latest state of `aggregate_id`.
    pub fn put(&self, aggregate_id: String, entry: CachedAggregate<A>) {
        let mut generations = self.lock();
        if generations.current.len() >= self.generation_size
            && !generations.current.contains_key(&aggregate_id)
        {
            let full = std::mem::take(&mut generations.current);
            generations.previous = full;
        }
        generations.previous.remove(&aggregate_id);
        generations.current.insert(aggregate_id, entry);
    }

    /// Whether `aggregate_id` is cached.
    pub fn contains(&self, aggregate_id: &str) -> bool {
        let generations = self.lock();
        generations.current.contains_key(aggregate_id)
            || generations.previous.contains_key(aggregate_id)
    }

    /// How many aggregates are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.lock();
        generations.current.len() + generations.previous.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<A>> {
        // An entry is plain data: a panic elsewhere cannot leave it half-written.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64) -> CachedAggregate<u64> {
        CachedAggregate {
            aggregate: version * 10,
            version,
            snapshot_stale: false,
        }
    }

    #[test]
    fn an_entry_is_taken_once() {
        let cache = AggregateCache::new(10);
        cache.put("a".into(), entry(3));
        let taken = cache.take("a").expect("cached");
        assert_eq!((taken.aggregate, taken.version), (30, 3));
        assert!(cache.take("a").is_none(), "a second load finds nothing");
    }

    #[test]
    fn it_never_holds_more_than_its_capacity_and_keeps_the_recently_used() {
        let cache = AggregateCache::new(100);
        cache.put("kept".into(), entry(1));
        for i in 0..1_000u64 {
            cache.put(format!("other-{i}"), entry(i));
            assert!(cache.len() <= 100, "{} entries", cache.len());
            if i % 40 == 0 {
                // Used now and then (a load takes it, its commit puts it back).
                let kept = cache.take("kept").expect("a recently used entry stays");
                cache.put("kept".into(), kept);
            }
        }
        assert!(cache.take("other-0").is_none(), "the oldest entries go");
        assert!(cache.take("other-999").is_some());
    }
}
