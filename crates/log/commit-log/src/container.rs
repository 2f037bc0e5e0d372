//! Several commits in one log record (KPL-style aggregation): a Kinesis shard takes 1,000
//! records/s, so one record per commit caps a shard at 1,000 commits/s whatever their size.
//!
//! A container is a leading magic and version, then each commit's envelope ([`crate::encode`])
//! prefixed by its length (a protobuf varint):
//!
//! ```text
//! 'O' 'P' 'K' <version = 1> { <varint length> <commit envelope> }+
//! ```
//!
//! The first byte `'O'` (0x4F) read as a protobuf tag has wire type 7, which does not exist: no
//! single-commit envelope starts with it, so a reader tells a container from the single-commit
//! records written before containers existed (and still written when packing is off), and reads
//! both. [`unpack`] is the one function every reader of the log calls; it hands back each
//! commit's envelope for [`crate::decode_with`], so a bad commit inside a container is that
//! commit's problem, not its neighbours'.

use prost::bytes::Buf;

/// The container's leading bytes.
pub const CONTAINER_MAGIC: [u8; 3] = *b"OPK";
/// The container version this build writes and reads.
pub const CONTAINER_VERSION: u8 = 1;
/// Magic plus version.
const HEADER_LEN: usize = CONTAINER_MAGIC.len() + 1;

/// Why a record could not be unpacked into commit envelopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    /// A container of a version this build does not read: a newer writer. It cannot be
    /// skipped (its commits would be lost to this reader) nor parked (their aggregates are
    /// unknown until unpacked): the reader of the shard stops with this error until a build
    /// that reads the version runs.
    #[error("log container version {found} is not known to this build (it reads version {CONTAINER_VERSION}); the shard stops until a build that reads it runs")]
    UnknownVersion {
        /// The version the record carries.
        found: u8,
    },
    /// The container's framing is broken (truncated, a length beyond its end, no commit):
    /// no build can read it, so it is poison as a whole.
    #[error("malformed log container: {0}")]
    Malformed(&'static str),
}

/// Whether `record` starts as a container does.
pub fn is_container(record: &[u8]) -> bool {
    record.starts_with(&CONTAINER_MAGIC)
}

/// The commit envelopes `record` carries, in order: the record itself when it is a
/// single-commit record, else the container's commits.
pub fn unpack(record: &[u8]) -> Result<Vec<&[u8]>, UnpackError> {
    if !is_container(record) {
        return Ok(vec![record]);
    }
    let Some(&version) = record.get(CONTAINER_MAGIC.len()) else {
        return Err(UnpackError::Malformed("no version after the magic"));
    };
    if version != CONTAINER_VERSION {
        return Err(UnpackError::UnknownVersion { found: version });
    }
    let mut rest = &record[HEADER_LEN..];
    let mut commits = Vec::new();
    while rest.has_remaining() {
        let length = prost::encoding::decode_varint(&mut rest)
            .map_err(|_| UnpackError::Malformed("a commit length is not a varint"))?;
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length > 0 && length <= rest.len())
            .ok_or(UnpackError::Malformed(
                "a commit length is zero or beyond the record's end",
            ))?;
        let (commit, after) = rest.split_at(length);
        commits.push(commit);
        rest = after;
    }
    if commits.is_empty() {
        return Err(UnpackError::Malformed(
            "a container holds at least one commit",
        ));
    }
    Ok(commits)
}

/// A record being filled with commit envelopes, in commit order.
#[derive(Debug, Default, Clone)]
pub struct Container {
    commits: Vec<Vec<u8>>,
    /// The commits' framed bytes (length prefix plus envelope).
    framed: usize,
}

impl Container {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many commits it holds.
    pub fn commits(&self) -> usize {
        self.commits.len()
    }

    /// Whether it holds no commit yet.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
    }

    /// The size of its record as it is ([`Container::into_record`]).
    pub fn len(&self) -> usize {
        match self.commits.as_slice() {
            [] => 0,
            // Alone, a commit goes out as the plain single-commit record.
            [only] => only.len(),
            _ => HEADER_LEN + self.framed,
        }
    }

    /// The size of its record once a commit envelope of `commit_len` bytes is added.
    pub fn len_with(&self, commit_len: usize) -> usize {
        if self.commits.is_empty() {
            commit_len
        } else {
            HEADER_LEN + self.framed + framed_len(commit_len)
        }
    }

    /// Adds `commit` (an envelope from [`crate::encode`]) after the others.
    pub fn push(&mut self, commit: Vec<u8>) {
        self.framed += framed_len(commit.len());
        self.commits.push(commit);
    }

    /// Its commit envelopes back, in the order they were added, for a writer that decides not
    /// to send the record after all (the relay holds a record back while it lingers).
    pub fn into_commits(self) -> Vec<Vec<u8>> {
        self.commits
    }

    /// The record: the envelope itself for one commit (the format every reader knows, so a
    /// relay that packs one commit per record is readable by builds before containers), else
    /// the container.
    pub fn into_record(mut self) -> Vec<u8> {
        if self.commits.len() == 1 {
            return self.commits.pop().unwrap_or_default();
        }
        let mut record = Vec::with_capacity(HEADER_LEN + self.framed);
        record.extend_from_slice(&CONTAINER_MAGIC);
        record.push(CONTAINER_VERSION);
        for commit in &self.commits {
            prost::encoding::encode_varint(commit.len() as u64, &mut record);
            record.extend_from_slice(commit);
        }
        record
    }
}

fn framed_len(commit_len: usize) -> usize {
    prost::encoding::encoded_len_varint(commit_len as u64) + commit_len
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn packed(commits: &[&[u8]]) -> Vec<u8> {
        let mut container = Container::new();
        for commit in commits {
            container.push(commit.to_vec());
        }
        container.into_record()
    }

    #[test]
    fn a_container_unpacks_into_its_commits_in_order_and_its_size_is_known_in_advance() {
        let big = vec![7u8; 300];
        let commits: [&[u8]; 3] = [b"\x08\x01first", &big, b"\x08\x01third"];
        let mut container = Container::new();
        let mut expected_len = 0;
        for commit in commits {
            expected_len = container.len_with(commit.len());
            container.push(commit.to_vec());
            assert_eq!(container.len(), expected_len);
        }
        let record = container.into_record();

        assert_eq!(record.len(), expected_len);
        assert!(is_container(&record));
        let mut again = Container::new();
        commits
            .iter()
            .for_each(|commit| again.push(commit.to_vec()));
        assert_eq!(again.into_commits(), commits.map(<[u8]>::to_vec));
        assert_eq!(unpack(&record).unwrap(), commits.to_vec());
    }

    #[test]
    fn one_commit_goes_out_as_the_single_commit_record_readers_before_containers_know() {
        let envelope = b"\x08\x01an envelope".to_vec();
        let record = packed(&[&envelope]);
        assert_eq!(record, envelope);
        assert_eq!(unpack(&record).unwrap(), vec![envelope.as_slice()]);
    }

    #[test]
    fn an_unknown_container_version_is_its_own_error_not_poison_of_one_record() {
        let mut record = packed(&[b"a", b"b"]);
        record[3] = 2;
        assert_eq!(
            unpack(&record),
            Err(UnpackError::UnknownVersion { found: 2 })
        );
    }

    #[test]
    fn broken_framing_is_malformed() {
        let record = packed(&[b"first", b"second"]);
        for cut in [3, 4, record.len() - 1] {
            assert!(
                matches!(unpack(&record[..cut]), Err(UnpackError::Malformed(_))),
                "cut at {cut}"
            );
        }
        let mut zero_length = record.clone();
        zero_length[4] = 0;
        assert!(matches!(
            unpack(&zero_length),
            Err(UnpackError::Malformed(_))
        ));
    }
}
