//! Opaque page tokens of the history queries: where the next page starts, bound to the query
//! that produced it.
//!
//! A token carries no authority: the caller's token and the request's own filters decide which
//! rows a query may return, and the cursor only says where in that result to resume. So it is
//! validated, not signed (no key to share between instances and rotate): a token that is not
//! one of ours, was cut or altered by accident, belongs to another kind of list, or to the same
//! list with other filters, is refused. A deliberately forged cursor can only move within the
//! rows the caller may see anyway.
//!
//! Layout (hex): version (1 byte), list kind (1), digest of the filters (8), cursor (n),
//! checksum (8: the first bytes of SHA-256 of everything before it).

use sha2::{Digest, Sha256};

/// The layout's version; a new layout gets a new number, and old tokens are refused.
const VERSION: u8 = 1;
const DIGEST_LEN: usize = 8;
const CHECKSUM_LEN: usize = 8;
/// The longest page token accepted (longer than any we write): longer input is refused before
/// it is decoded.
pub const MAX_TOKEN_CHARS: usize = 256;

/// Which list a token continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Orders = 1,
    LoyaltyTransactions = 2,
}

/// Why a page token was refused (said to the caller as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not a token this service wrote, or altered since.
    #[error("page_token is not a page token of this list (malformed or altered)")]
    Malformed,
    /// A token of this list, for other filters.
    #[error("page_token belongs to a query with other filters; repeat the query's filters unchanged, or leave page_token empty to start over")]
    OtherQuery,
}

/// The digest binding a token to the filters of its query: `parts` in order, each
/// length-prefixed so no two different filter lists share an encoding.
pub(crate) fn filters_digest(kind: ListKind, parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut hash = Sha256::new();
    hash.update([kind as u8]);
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let mut digest = [0; DIGEST_LEN];
    digest.copy_from_slice(&hash.finalize()[..DIGEST_LEN]);
    digest
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut sum = [0; CHECKSUM_LEN];
    sum.copy_from_slice(&Sha256::digest(bytes)[..CHECKSUM_LEN]);
    sum
}

/// The token resuming after `cursor` in the list `kind` filtered as `digest` says.
pub(crate) fn encode(kind: ListKind, digest: [u8; DIGEST_LEN], cursor: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(2 + DIGEST_LEN + cursor.len() + CHECKSUM_LEN);
    bytes.push(VERSION);
    bytes.push(kind as u8);
    bytes.extend_from_slice(&digest);
    bytes.extend_from_slice(cursor);
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum);
    hex::encode(bytes)
}

/// The cursor of `token`, refused unless it is an intact token of list `kind` with filters
/// `digest`.
pub(crate) fn decode(
    token: &str,
    kind: ListKind,
    digest: [u8; DIGEST_LEN],
) -> Result<Vec<u8>, PageTokenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(PageTokenError::Malformed);
    }
    let bytes = hex::decode(token).map_err(|_| PageTokenError::Malformed)?;
    if bytes.len() < 2 + DIGEST_LEN + CHECKSUM_LEN {
        return Err(PageTokenError::Malformed);
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if checksum(body) != sum || body[0] != VERSION || body[1] != kind as u8 {
        return Err(PageTokenError::Malformed);
    }
    if body[2..2 + DIGEST_LEN] != digest {
        return Err(PageTokenError::OtherQuery);
    }
    Ok(body[2 + DIGEST_LEN..].to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_gives_back_its_cursor_for_the_same_list_and_filters() {
        let digest = filters_digest(ListKind::Orders, &[b"customer", b"c-1"]);
        let token = encode(ListKind::Orders, digest, b"cursor bytes");
        assert_eq!(
            decode(&token, ListKind::Orders, digest).unwrap(),
            b"cursor bytes"
        );
    }

    #[test]
    fn altered_foreign_and_misdirected_tokens_are_refused() {
        let digest = filters_digest(ListKind::Orders, &[b"customer", b"c-1"]);
        let token = encode(ListKind::Orders, digest, b"cursor bytes");
        // Every single-character change of the token is noticed.
        for index in 0..token.len() {
            let mut altered = token.clone().into_bytes();
            altered[index] = if altered[index] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).unwrap();
            assert_eq!(
                decode(&altered, ListKind::Orders, digest),
                Err(PageTokenError::Malformed),
                "{altered}"
            );
        }
        for garbage in ["", "zz", "not a token", &"a".repeat(MAX_TOKEN_CHARS + 2)] {
            assert_eq!(
                decode(garbage, ListKind::Orders, digest),
                Err(PageTokenError::Malformed)
            );
        }
        assert_eq!(
            decode(&token, ListKind::LoyaltyTransactions, digest),
            Err(PageTokenError::Malformed),
            "another list's token"
        );
        let other_filters = filters_digest(ListKind::Orders, &[b"customer", b"c-2"]);
        assert_eq!(
            decode(&token, ListKind::Orders, other_filters),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn filter_lists_that_concatenate_alike_have_different_digests() {
        assert_ne!(
            filters_digest(ListKind::Orders, &[b"ab", b"c"]),
            filters_digest(ListKind::Orders, &[b"a", b"bc"])
        );
    }
}
