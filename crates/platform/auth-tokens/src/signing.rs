//! The issuer's side: an ES256 signing key (generated here, kept as a PKCS#8 PEM file that only
//! the issuer reads), its public half as a JWK, and the [`TokenIssuer`] that mints tokens with
//! it. Every other process verifies with the published public keys ([`crate::jwks`]) and holds
//! no signing key.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Claims, Role};

/// The PEM label of a PKCS#8 private key (what `openssl genpkey` writes too).
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// Why a signing key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read or written.
    #[error("signing key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a PKCS#8 PEM of a P-256 key.
    #[error("not an ES256 (P-256) PKCS#8 private key: {0}")]
    NotAnEs256Key(String),
    /// The system's random source failed.
    #[error("no randomness to generate a key")]
    Randomness,
    /// Signing a token failed.
    #[error("signing the token failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An ES256 (ECDSA P-256, SHA-256) private key and the key id its public half is published under.
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public_jwk: serde_json::Value,
    kid: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key never prints.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, SigningError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| SigningError::Randomness)?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
    }

    /// The key in a PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(text: &str) -> Result<Self, SigningError> {
        let block = pem::parse(text).map_err(|e| SigningError::NotAnEs256Key(e.to_string()))?;
        if block.tag() != PRIVATE_KEY_LABEL {
            return Err(SigningError::NotAnEs256Key(format!(
                "a PEM '{}' block, not '{PRIVATE_KEY_LABEL}'",
                block.tag()
            )));
        }
        Self::from_pkcs8(block.into_contents())
    }

    /// The key in the PEM file at `path`.
    pub fn from_pem_file(path: &Path) -> Result<Self, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text)
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, SigningError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| SigningError::NotAnEs256Key(e.to_string()))?;
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let kid = thumbprint(&x, &y);
        let public_jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        });
        Ok(Self {
            pkcs8,
            public_jwk,
            kid,
        })
    }

    /// The key as PKCS#8 PEM text: what the issuer's key file holds. Secret: write it only to
    /// a file only the issuer reads.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PRIVATE_KEY_LABEL, self.pkcs8.clone()))
    }

    /// The key id (the RFC 7638 thumbprint of the public key): the `kid` of every token it
    /// signs and of its entry in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK, for the JWKS document verifiers read.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// Writes the key as PEM to `path`, readable by its owner only; refuses to overwrite a file
    /// (a key in use must never be replaced by accident: its tokens would all stop verifying
    /// once its public half is retired).
    pub fn write_pem_file(&self, path: &Path) -> Result<(), SigningError> {
        use std::io::Write;
        let file_error = |source| SigningError::File {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(file_error)?;
        file.write_all(self.to_pem().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(file_error)
    }
}

/// RFC 7638: the SHA-256 of the JWK's required members in lexicographic order, base64url.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Mints ES256 tokens: the issuer's (and local tooling's) side only.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `key` for the `iss` `issuer` and the `aud` `audience`.
    pub fn new(key: &SigningKey, issuer: &str, audience: &str) -> Self {
        Self {
            encoding: EncodingKey::from_ec_der(&key.pkcs8),
            kid: key.kid.clone(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Signs a token for `subject` in `role`, valid for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        store_id: Option<&str>,
        ttl: Duration,
    ) -> Result<String, SigningError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign(&Claims {
            sub: subject.to_owned(),
            role,
            store_id: store_id.map(str::to_owned),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
        })
    }

    /// Signs `claims` as they are (tests use it for expired or foreign claims).
    pub fn sign(&self, claims: &Claims) -> Result<String, SigningError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_read_back_from_its_pem_is_the_same_key() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.public_jwk(), key.public_jwk());
        assert!(!format!("{key:?}").contains(&key.to_pem()));
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 7638's method on RFC 7517 appendix A.1's P-256 key, computed independently:
        // printf '{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}' | openssl dgst -sha256 -binary | basenc --base64url
        assert_eq!(
            thumbprint(
                "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
                "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"
            ),
            "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
        );
    }

    #[test]
    fn text_that_is_not_an_es256_private_key_is_refused() {
        assert!(SigningKey::from_pem("not a pem").is_err());
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(SigningKey::from_pem(public).is_err());
    }
}
