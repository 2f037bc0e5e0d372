//! The JWKS document (RFC 7517 key set): reading the public keys tokens are verified with, and
//! publishing an issuer's public key into one.

use std::collections::BTreeMap;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;

use crate::signing::SigningKey;

/// Why a JWKS document gave no keys, or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The document could not be fetched or read.
    #[error("JWKS at {location}: {reason}")]
    Unreachable {
        /// Where it was looked for.
        location: String,
        /// What went wrong.
        reason: String,
    },
    /// The fetch did not finish in time.
    #[error("JWKS at {location}: no answer within {timeout_ms} ms")]
    TimedOut {
        /// Where it was looked for.
        location: String,
        /// The bound.
        timeout_ms: u128,
    },
    /// The document is not a JWKS, or holds no key this verifier accepts.
    #[error("JWKS: {0}")]
    Invalid(String),
    /// The document could not be written.
    #[error("JWKS file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

/// A public key tokens are verified with, and the one algorithm it verifies.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The signing keys of a JWKS document, by key id. Only asymmetric signature keys are kept:
/// a symmetric (`oct`) key in a published document would let anyone who reads it mint tokens.
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    keys: BTreeMap<String, VerifyingKey>,
    /// The accepted keys' JWKs, canonical: tells whether a refresh changed anything.
    fingerprint: String,
}

impl KeySet {
    /// The usable keys of a JWKS document. Keys this verifier cannot use (encryption keys,
    /// symmetric keys, other curves, no `kid`) are skipped; a document left with none is refused.
    pub(crate) fn parse(document: &[u8]) -> Result<Self, JwksError> {
        let document: serde_json::Value = serde_json::from_slice(document)
            .map_err(|e| JwksError::Invalid(format!("not JSON: {e}")))?;
        let entries = document
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwksError::Invalid("no 'keys' array".into()))?;
        let mut keys = BTreeMap::new();
        let mut accepted = BTreeMap::new();
        for entry in entries {
            // One key of an unknown type must not hide the others (a provider may publish
            // several kinds): it is skipped.
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            let Some((kid, key)) = verifying_key(&jwk) else {
                continue;
            };
            accepted.insert(kid.clone(), entry.to_string());
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err(JwksError::Invalid(
                "no usable signing key (ES256, ES384 or RS256/384/512 with a kid)".into(),
            ));
        }
        Ok(Self {
            keys,
            fingerprint: serde_json::to_string(&accepted).unwrap_or_default(),
        })
    }

    /// The key published under `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// Whether both sets hold the same keys.
    pub(crate) fn same_keys(&self, other: &KeySet) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// The key ids, for logs.
    pub(crate) fn kids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }
}

/// The key and its algorithm, for a signature key of a kind this verifier accepts.
fn verifying_key(jwk: &Jwk) -> Option<(String, VerifyingKey)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    // The algorithm comes from the key, never from a token's header: a token cannot choose
    // how it is checked (no HS256-with-the-public-key, no `none`).
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), declared) => match (&ec.curve, declared) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return None,
        },
        (AlgorithmParameters::RSA(_), declared) => match declared {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            _ => return None,
        },
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, VerifyingKey { algorithm, key }))
}

/// Adds `key`'s public half to the JWKS file at `path` (made if missing), keeping the keys it
/// already holds: publishing the next key while the current one still signs is how keys
/// rotate. Written to a temporary file and renamed, so a verifier never reads half a document.
pub fn publish_key(path: &Path, key: &SigningKey) -> Result<(), JwksError> {
    let write_error = |source| JwksError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut document = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| JwksError::Invalid(format!("{}: not JSON: {e}", path.display())))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => json!({ "keys": [] }),
        Err(error) => return Err(write_error(error)),
    };
    let keys = document
        .get_mut("keys")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or_else(|| JwksError::Invalid(format!("{}: no 'keys' array", path.display())))?;
    let published = keys
        .iter()
        .any(|entry| entry.get("kid").and_then(serde_json::Value::as_str) == Some(key.kid()));
    if !published {
        keys.push(key.public_jwk().clone());
    }
    let text =
        serde_json::to_string_pretty(&document).map_err(|e| JwksError::Invalid(e.to_string()))?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn symmetric_encryption_and_kidless_keys_are_never_used() {
        let es256 = SigningKey::generate().unwrap();
        let document = json!({ "keys": [
            { "kty": "oct", "kid": "shared", "k": "c2VjcmV0", "alg": "HS256" },
            { "kty": "EC", "crv": "P-256", "x": es256.public_jwk()["x"], "y": es256.public_jwk()["y"] },
            { "kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": es256.public_jwk()["x"], "y": es256.public_jwk()["y"] },
            { "kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA" },
            es256.public_jwk(),
        ]});
        let set = KeySet::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(set.kids(), vec![es256.kid()]);
        assert_eq!(set.get(es256.kid()).unwrap().algorithm, Algorithm::ES256);
    }

    #[test]
    fn a_document_without_a_usable_key_is_refused() {
        for document in [
            "not json",
            r#"{"no_keys": []}"#,
            r#"{"keys": []}"#,
            r#"{"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}"#,
        ] {
            assert!(KeySet::parse(document.as_bytes()).is_err(), "{document}");
        }
    }

    #[test]
    fn publishing_keeps_the_keys_already_there_and_adds_each_key_once() {
        let dir = std::env::temp_dir().join(format!("jwks-publish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        let _ = std::fs::remove_file(&path);
        let (first, second) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        publish_key(&path, &first).unwrap();
        publish_key(&path, &second).unwrap();
        publish_key(&path, &second).unwrap();
        let set = KeySet::parse(&std::fs::read(&path).unwrap()).unwrap();
        let mut expected = vec![first.kid(), second.kid()];
        expected.sort();
        assert_eq!(set.kids(), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
