//! Which open shard each aggregate's records go to, as Kinesis decides it: the partition key's
//! MD5 read as a 128-bit big-endian integer (its hash key) falls in exactly one open shard's
//! hash key range. The relay packs only commits of one shard into one record, so it keeps the
//! stream's map (ListShards) and refreshes it when a put lands where the map did not say (a
//! split or merge happened since).

use md5::{Digest, Md5};

/// One open shard and the hash keys it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    /// Its id.
    pub shard_id: String,
    /// The lowest hash key it takes.
    pub starting_hash_key: u128,
    /// The highest hash key it takes.
    pub ending_hash_key: u128,
}

/// The open shards of a stream, by hash key range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    /// Sorted by starting hash key; the ranges of open shards do not overlap.
    shards: Vec<ShardRange>,
}

/// The hash key Kinesis computes for `partition_key`.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

impl ShardMap {
    /// The map of `open_shards`.
    pub fn new(mut open_shards: Vec<ShardRange>) -> Self {
        open_shards.sort_by_key(|shard| shard.starting_hash_key);
        Self {
            shards: open_shards,
        }
    }

    /// Whether the map knows no shard (not read yet, or the read failed): the relay then puts
    /// one commit per record, which needs no map.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard that takes `hash_key`, if the map covers it.
    pub fn shard_of(&self, hash_key: u128) -> Option<&str> {
        let after = self
            .shards
            .partition_point(|shard| shard.starting_hash_key <= hash_key);
        let shard = self.shards.get(after.checked_sub(1)?)?;
        (hash_key <= shard.ending_hash_key).then_some(shard.shard_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_key_is_the_partition_keys_md5_as_a_big_endian_number() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(hash_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn each_hash_key_falls_in_the_one_shard_whose_range_holds_it() {
        let half = u128::MAX / 2;
        let map = ShardMap::new(vec![
            ShardRange {
                shard_id: "upper".into(),
                starting_hash_key: half + 1,
                ending_hash_key: u128::MAX,
            },
            ShardRange {
                shard_id: "lower".into(),
                starting_hash_key: 0,
                ending_hash_key: half,
            },
        ]);
        assert_eq!(map.shard_of(0), Some("lower"));
        assert_eq!(map.shard_of(half), Some("lower"));
        assert_eq!(map.shard_of(half + 1), Some("upper"));
        assert_eq!(map.shard_of(u128::MAX), Some("upper"));

        let gap = ShardMap::new(vec![ShardRange {
            shard_id: "lower".into(),
            starting_hash_key: 0,
            ending_hash_key: half,
        }]);
        assert_eq!(gap.shard_of(half + 1), None);
        assert_eq!(ShardMap::default().shard_of(0), None);
    }
}
