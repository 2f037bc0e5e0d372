//! One reader per shard per process: every consumer group of the process reads the shard
//! through it, so the process calls GetRecords on a shard at most once per
//! `runtime.poll_interval_ms` whatever the number of groups, and one call feeds them all.
//!
//! Kinesis allows five GetRecords calls per second per shard, shared by every reader of the
//! stream. Each group polling on its own (three views in `projectors`, the saga and
//! notifications in `flows`) spent that budget twice over; now each process spends one call per
//! interval, and the deployment splits the five calls between its processes with that interval
//! (400 ms each for `projectors` and `flows` by default: 2.5 + 2.5 calls per second).
//!
//! **Pull, with a bounded cache.** The reader keeps the shard's most recent records (up to
//! [`CACHED_PAGES`] pages), contiguous, after a known position. A group asks for the records
//! after its own position:
//! - within the cache: served from it, no call;
//! - at the cache's tip: one call (paced by the interval), shared with every group that was
//!   waiting at the tip; an empty answer is everyone's answer until the next interval;
//! - behind the cache (a group that is slow, retrying a dependency, or just took the lease over
//!   at an old checkpoint): its own iterator, through the same pacing, until it is back within
//!   the cache;
//! - ahead of the cache (the first group to start after a restart had the oldest checkpoint):
//!   the cache restarts at the further position.
//!
//! So the fastest group sets the pace of the tip, a slow group never holds the others back
//! (it reads behind them within the same budget), and memory stays bounded. Every group keeps
//! its own lease, checkpoint and position; the reader holds no state a crash could lose.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::kinesis::{self, GetRecordsError, KinesisRecord};
use crate::leases::{Checkpoint, SequenceNumber};
use crate::meters;
use service_kit::error_chain;

/// How many pages (of `runtime.batch_size` records) a shard's reader keeps for groups that are a
/// little behind the fastest one.
pub(crate) const CACHED_PAGES: usize = 8;

/// GetRecords calls a worker made, on every shard: what the metric
/// `orderpipe_projector_get_records_total` counts, readable in-process.
#[derive(Debug, Clone, Default)]
pub struct GetRecordsCalls(Arc<AtomicU64>);

impl GetRecordsCalls {
    /// Calls so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The readers of one process, one per shard, shared by its consumer groups while any of them
/// consumes that shard.
pub(crate) struct ShardReaders {
    calls: GetRecordsCalls,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    batch_size: i32,
    interval: Duration,
    readers: Mutex<HashMap<String, Weak<ShardReader>>>,
}

impl ShardReaders {
    pub(crate) fn new(
        kinesis: aws_sdk_kinesis::Client,
        stream: String,
        batch_size: i32,
        interval: Duration,
    ) -> Self {
        Self {
            calls: GetRecordsCalls::default(),
            kinesis,
            stream,
            batch_size,
            interval,
            readers: Mutex::default(),
        }
    }

    /// The calls every reader of the process made.
    pub(crate) fn calls(&self) -> GetRecordsCalls {
        self.calls.clone()
    }

    /// The reader of `shard_id`, started if no group of this process reads it now.
    pub(crate) fn reader(&self, shard_id: &str) -> Arc<ShardReader> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|_, reader| reader.strong_count() > 0);
        if let Some(reader) = readers.get(shard_id).and_then(Weak::upgrade) {
            return reader;
        }
        let reader = Arc::new(ShardReader {
            calls: self.calls.clone(),
            kinesis: self.kinesis.clone(),
            stream: self.stream.clone(),
            shard_id: shard_id.to_owned(),
            batch_size: self.batch_size,
            interval: self.interval,
            capacity: usize::try_from(self.batch_size)
                .unwrap_or(1)
                .saturating_mul(CACHED_PAGES),
            cache: Mutex::new(None),
            caller: tokio::sync::Mutex::new(Pacing {
                next_call: Instant::now(),
            }),
        });
        readers.insert(shard_id.to_owned(), Arc::downgrade(&reader));
        reader
    }
}

/// Where one group is in the shard.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// The last record the group has been given (or where it starts).
    after: Checkpoint,
    /// Its own iterator while it reads behind the cache.
    private: Option<String>,
}

impl Cursor {
    /// A group starting after `checkpoint`.
    pub(crate) fn new(checkpoint: Checkpoint) -> Self {
        Self {
            after: checkpoint,
            private: None,
        }
    }
}

/// What one read gave a group.
#[derive(Debug)]
pub(crate) struct Page {
    /// The next records after the group's position, in shard order (maybe none).
    pub(crate) records: Vec<KinesisRecord>,
    /// The shard is closed and the group has read it to its end.
    pub(crate) ended: bool,
    /// How far behind the shard's tip the page's end is, when known.
    pub(crate) millis_behind_latest: Option<i64>,
}

/// One shard's reader.
pub(crate) struct ShardReader {
    calls: GetRecordsCalls,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    shard_id: String,
    batch_size: i32,
    interval: Duration,
    capacity: usize,
    cache: Mutex<Option<Cache>>,
    /// Held for every call (so the process makes one at a time on this shard) and for every
    /// change of the cache's tip.
    caller: tokio::sync::Mutex<Pacing>,
}

struct Pacing {
    /// No call before this.
    next_call: Instant,
}

/// The shard's records after `start`, contiguous and in order.
struct Cache {
    start: Checkpoint,
    records: VecDeque<KinesisRecord>,
    /// Where the next call at the tip reads; `None`: get one from the tip position.
    tip_iterator: Option<String>,
    /// The shard is closed and read to its end.
    ended: bool,
    millis_behind_latest: Option<i64>,
    /// Calls made at the tip so far: a group that waited for the caller and finds this moved
    /// takes that call's answer as its own.
    calls: u64,
}

impl Cache {
    fn starting_at(start: Checkpoint) -> Self {
        Self {
            start,
            records: VecDeque::new(),
            tip_iterator: None,
            ended: false,
            millis_behind_latest: None,
            calls: 0,
        }
    }

    fn tip(&self) -> Checkpoint {
        self.records.back().map_or_else(
            || self.start.clone(),
            |record| Checkpoint::After(SequenceNumber::new(record.sequence_number.as_str())),
        )
    }

    /// Where `after` is relative to the cache.
    fn locate(&self, after: &Checkpoint) -> Place {
        let tip = self.tip();
        if position(after) < position(&self.start) {
            Place::Behind
        } else if position(after) < position(&tip) {
            Place::Within
        } else if position(after) == position(&tip) {
            Place::AtTip
        } else {
            Place::Ahead
        }
    }

    /// Up to `limit` cached records after `after` (which is within the cache).
    fn after(&self, after: &Checkpoint, limit: usize) -> Vec<KinesisRecord> {
        let after = position(after);
        self.records
            .iter()
            .filter(|record| Some(SequenceNumber::new(record.sequence_number.as_str())) > after)
            .take(limit)
            .cloned()
            .collect()
    }
}

enum Place {
    Behind,
    Within,
    AtTip,
    Ahead,
}

/// A checkpoint as an ordered position: the trim horizon before every record.
fn position(checkpoint: &Checkpoint) -> Option<SequenceNumber> {
    match checkpoint {
        Checkpoint::TrimHorizon => None,
        Checkpoint::After(sequence) => Some(sequence.clone()),
        // Nothing comes after the end; never asked for (a consumer at SHARD_END reads nothing).
        Checkpoint::ShardEnd => Some(SequenceNumber::new("9".repeat(80).as_str())),
    }
}

impl ShardReader {
    /// The records after `cursor`'s position (moving it past them), or the end of the shard.
    /// Cancel-safe: dropped mid-call, nothing is lost (the cursor moves only on success).
    pub(crate) async fn next_page(&self, cursor: &mut Cursor) -> Result<Page, GetRecordsError> {
        let seen_calls = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let cache = cache.get_or_insert_with(|| Cache::starting_at(cursor.after.clone()));
            match cache.locate(&cursor.after) {
                Place::Within => {
                    cursor.private = None;
                    let records = cache.after(&cursor.after, self.limit());
                    let at_tip = records.last().map(|r| r.sequence_number.as_str())
                        == cache.records.back().map(|r| r.sequence_number.as_str());
                    let millis_behind_latest = if at_tip {
                        cache.millis_behind_latest
                    } else {
                        records.last().and_then(behind_now)
                    };
                    return Ok(self.served(cursor, records, false, millis_behind_latest));
                }
                Place::AtTip if cache.ended => {
                    return Ok(self.served(cursor, Vec::new(), true, Some(0)));
                }
                Place::Behind => None,
                Place::AtTip | Place::Ahead => Some(cache.calls),
            }
        };
        let mut pacing = self.caller.lock().await;
        match seen_calls {
            None => self.read_behind(cursor, &mut pacing).await,
            Some(seen_calls) => self.read_tip(cursor, seen_calls, &mut pacing).await,
        }
    }

    /// One call at the cache's tip (unless another group made one while this one waited),
    /// extending the cache; the records after `cursor` come from it.
    async fn read_tip(
        &self,
        cursor: &mut Cursor,
        seen_calls: u64,
        pacing: &mut Pacing,
    ) -> Result<Page, GetRecordsError> {
        let iterator = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let cache = cache.get_or_insert_with(|| Cache::starting_at(cursor.after.clone()));
            if let Place::Ahead = cache.locate(&cursor.after) {
                // A group further on than the cache: the cache follows the front.
                *cache = Cache::starting_at(cursor.after.clone());
            } else if cache.calls != seen_calls || cache.ended {
                // Another group called while this one waited: its answer is this one's (the
                // cache may have moved on meanwhile: only what follows the cursor contiguously
                // is served; behind the cache, the next read is the group's own).
                let records = match cache.locate(&cursor.after) {
                    Place::Within => cache.after(&cursor.after, self.limit()),
                    Place::Behind | Place::AtTip | Place::Ahead => Vec::new(),
                };
                let at_tip = matches!(cache.locate(&cursor.after), Place::AtTip);
                let ended = records.is_empty() && at_tip && cache.ended;
                let behind = cache.millis_behind_latest;
                return Ok(self.served(cursor, records, ended, behind));
            }
            cache.tip_iterator.clone()
        };
        let iterator = match iterator {
            Some(iterator) => iterator,
            None => {
                let tip = self
                    .cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map_or_else(|| cursor.after.clone(), Cache::tip);
                match self.iterator(&tip, pacing).await? {
                    Some(iterator) => iterator,
                    None => return Ok(self.served(cursor, Vec::new(), true, Some(0))),
                }
            }
        };
        let page = match self.call(&iterator, pacing).await {
            Ok(page) => page,
            Err(GetRecordsError::ExpiredIterator) => {
                if let Some(cache) = self
                    .cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    cache.tip_iterator = None;
                }
                return Ok(self.served(cursor, Vec::new(), false, None));
            }
            Err(error) => return Err(error),
        };
        let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let cache = guard.get_or_insert_with(|| Cache::starting_at(cursor.after.clone()));
        cache.calls += 1;
        cache.millis_behind_latest = page.millis_behind_latest;
        cache.ended = page.next_iterator.is_none();
        cache.tip_iterator = page.next_iterator;
        cache.records.extend(page.records);
        while cache.records.len() > self.capacity {
            if let Some(evicted) = cache.records.pop_front() {
                cache.start =
                    Checkpoint::After(SequenceNumber::new(evicted.sequence_number.as_str()));
            }
        }
        let records = match cache.locate(&cursor.after) {
            Place::Within => cache.after(&cursor.after, self.limit()),
            Place::Behind | Place::AtTip | Place::Ahead => Vec::new(),
        };
        let ended = records.is_empty()
            && cache.ended
            && matches!(cache.locate(&cursor.after), Place::AtTip);
        let behind = cache.millis_behind_latest;
        drop(guard);
        Ok(self.served(cursor, records, ended, behind))
    }

    /// One call on the group's own iterator, behind the cache.
    async fn read_behind(
        &self,
        cursor: &mut Cursor,
        pacing: &mut Pacing,
    ) -> Result<Page, GetRecordsError> {
        let iterator = match cursor.private.take() {
            Some(iterator) => iterator,
            None => match self.iterator(&cursor.after, pacing).await? {
                Some(iterator) => iterator,
                None => return Ok(self.served(cursor, Vec::new(), true, Some(0))),
            },
        };
        let page = match self.call(&iterator, pacing).await {
            Ok(page) => page,
            // A fresh iterator from the cursor next time.
            Err(GetRecordsError::ExpiredIterator) => {
                return Ok(self.served(cursor, Vec::new(), false, None))
            }
            Err(error) => return Err(error),
        };
        let ended = page.next_iterator.is_none() && page.records.is_empty();
        cursor.private = page.next_iterator;
        let at_tip = page.millis_behind_latest == Some(0);
        let behind = if at_tip {
            Some(0)
        } else {
            page.records
                .last()
                .and_then(behind_now)
                .or(page.millis_behind_latest)
        };
        Ok(self.served(cursor, page.records, ended, behind))
    }

    /// A shard iterator after `checkpoint`, paced like GetRecords (GetShardIterator has the same
    /// five-per-second limit).
    async fn iterator(
        &self,
        checkpoint: &Checkpoint,
        pacing: &mut Pacing,
    ) -> Result<Option<String>, GetRecordsError> {
        tokio::time::sleep_until(pacing.next_call).await;
        pacing.next_call = Instant::now() + self.interval;
        match kinesis::shard_iterator(&self.kinesis, &self.stream, &self.shard_id, checkpoint).await
        {
            Ok(iterator) => Ok(iterator),
            // A closed shard whose records all passed the retention period is no longer listed
            // and has no iterator, even if this group never read it to its end: nothing of it is
            // left to read, so it counts as ended (its children may start). Only when the stream
            // answers without it: a stream that cannot be listed proves nothing.
            Err(error) if !error.retryable => {
                let shards = kinesis::list_shards(&self.kinesis, &self.stream).await?;
                if shards.iter().any(|shard| shard.shard_id == self.shard_id) {
                    return Err(error.into());
                }
                tracing::warn!(shard = %self.shard_id, error = %error_chain(&error), "the stream no longer lists this shard (trimmed): nothing is left to read");
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// One GetRecords call, no sooner than the interval after the last one.
    async fn call(
        &self,
        iterator: &str,
        pacing: &mut Pacing,
    ) -> Result<kinesis::RecordsPage, GetRecordsError> {
        tokio::time::sleep_until(pacing.next_call).await;
        pacing.next_call = Instant::now() + self.interval;
        metrics::counter!(meters::GET_RECORDS_TOTAL, "shard" => self.shard_id.clone()).increment(1);
        self.calls.count();
        kinesis::get_records(&self.kinesis, iterator, self.batch_size).await
    }

    /// Moves `cursor` past `records` and hands them out.
    fn served(
        &self,
        cursor: &mut Cursor,
        records: Vec<KinesisRecord>,
        ended: bool,
        millis_behind_latest: Option<i64>,
    ) -> Page {
        if let Some(last) = records.last() {
            cursor.after = Checkpoint::After(SequenceNumber::new(last.sequence_number.as_str()));
        }
        Page {
            records,
            ended,
            millis_behind_latest,
        }
    }

    fn limit(&self) -> usize {
        usize::try_from(self.batch_size).unwrap_or(1)
    }
}

/// How long ago `record` reached the stream, in milliseconds: the lag of a group whose page
/// ends there.
fn behind_now(record: &KinesisRecord) -> Option<i64> {
    let arrived = record.arrived_at_millis?;
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_millis(),
    )
    .ok()?;
    Some((now - arrived).max(0))
}
