//! Token verification: what every process that checks bearer tokens holds. It knows where the
//! issuer publishes its public keys (a JWKS document) and nothing that could sign a token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Validation;
use serde::Deserialize;

use crate::fetch::JwksSource;
use crate::jwks::JwksError;
use crate::key_store::{KeyStore, RefreshTiming};
use crate::{principal_from, AuthError, Claims, Principal};

/// How the bearer tokens are verified.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// Where the issuer publishes its public keys: a JWKS document at an `https://` URL (a
    /// Cognito user pool's `https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json`),
    /// an `http://` URL, a `file://` URL or a plain path.
    pub jwks_url: String,
    /// The expected `iss` claim.
    pub issuer: String,
    /// The expected `aud` claim.
    pub audience: String,
    /// Seconds between two scheduled fetches of the JWKS.
    #[serde(default = "defaults::jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// The least seconds between two early fetches asked for by tokens naming an unknown key id.
    #[serde(default = "defaults::jwks_min_refetch_secs")]
    pub jwks_min_refetch_secs: u64,
    /// The bound on one fetch of the JWKS, in milliseconds.
    #[serde(default = "defaults::jwks_fetch_timeout_ms")]
    pub jwks_fetch_timeout_ms: u64,
}

mod defaults {
    pub(super) fn jwks_refresh_secs() -> u64 {
        300
    }
    pub(super) fn jwks_min_refetch_secs() -> u64 {
        30
    }
    pub(super) fn jwks_fetch_timeout_ms() -> u64 {
        5000
    }
}

impl AuthSettings {
    /// Settings for the JWKS at `jwks_url`, with the default refresh timing.
    pub fn new(jwks_url: &str, issuer: &str, audience: &str) -> Self {
        Self {
            jwks_url: jwks_url.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_refresh_secs: defaults::jwks_refresh_secs(),
            jwks_min_refetch_secs: defaults::jwks_min_refetch_secs(),
            jwks_fetch_timeout_ms: defaults::jwks_fetch_timeout_ms(),
        }
    }

    /// Refuses settings that cannot work: no JWKS location, or an unbounded or zero fetch.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwks_url.trim().is_empty() {
            return Err(
                "auth.jwks_url (ORDERPIPE_AUTH__JWKS_URL) must name the issuer's JWKS".into(),
            );
        }
        if self.jwks_fetch_timeout_ms == 0 || self.jwks_refresh_secs == 0 {
            return Err(
                "auth.jwks_fetch_timeout_ms and auth.jwks_refresh_secs must be above 0".into(),
            );
        }
        Ok(())
    }

    fn timing(&self) -> RefreshTiming {
        RefreshTiming {
            refresh: Duration::from_secs(self.jwks_refresh_secs),
            min_refetch: Duration::from_secs(self.jwks_min_refetch_secs),
            fetch_timeout: Duration::from_millis(self.jwks_fetch_timeout_ms),
        }
    }
}

/// Clock skew allowed on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Verifies tokens against the issuer's published keys. Clones share the keys and one cache of
/// verified tokens.
#[derive(Clone)]
pub struct TokenAuthority {
    keys: Arc<KeyStore>,
    issuer: String,
    audience: String,
    verified: Arc<VerifiedTokens>,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// An authority for the configured JWKS, issuer and audience, once its keys are loaded:
    /// fetches them (within the fetch timeout) and keeps them fresh in the background; fails
    /// when the first fetch does, for a process that should not start without them (like the
    /// command API without its database). Must run inside a tokio runtime.
    pub async fn connect(settings: &AuthSettings) -> Result<Self, JwksError> {
        let (authority, first_fetch) = Self::start_with(settings).await?;
        first_fetch.map(|()| authority)
    }

    /// As [`TokenAuthority::connect`], but starts even when the first fetch fails (logged):
    /// until a fetch succeeds, every token is refused with [`AuthError::Unavailable`]. For a
    /// process that starts while its dependencies are down and reports them in its health.
    /// Fails only for a location that can never work (empty, not a URL).
    pub async fn start(settings: &AuthSettings) -> Result<Self, JwksError> {
        let (authority, first_fetch) = Self::start_with(settings).await?;
        if let Err(error) = first_fetch {
            tracing::error!(%error, "token keys not loaded yet; tokens are refused until they are");
        }
        Ok(authority)
    }

    async fn start_with(
        settings: &AuthSettings,
    ) -> Result<(Self, Result<(), JwksError>), JwksError> {
        let source = JwksSource::parse(&settings.jwks_url)?;
        let (keys, first_fetch) = KeyStore::start(source, settings.timing()).await;
        let authority = Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            verified: Arc::default(),
        };
        Ok((authority, first_fetch))
    }

    /// Whether the issuer's keys are loaded (tokens can be verified), for health checks.
    pub fn keys_loaded(&self) -> bool {
        self.keys.current().set.is_some()
    }

    /// The principal behind the value of an `authorization` header (`Bearer <token>`); `None`
    /// when the request has no such header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.authenticate_until(authorization)
            .map(|(principal, _)| principal)
    }

    /// As [`TokenAuthority::authenticate`], with the instant the token stops being accepted
    /// (its expiry plus the clock-skew leeway every check allows): a response that lasts (a
    /// live stream) ends then, as a new request with the token would be refused.
    pub fn authenticate_until(
        &self,
        authorization: Option<&str>,
    ) -> Result<(Principal, SystemTime), AuthError> {
        let header = authorization
            .ok_or_else(|| AuthError::Unauthenticated("missing bearer token".into()))?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            AuthError::Unauthenticated("authorization must be 'Bearer <token>'".into())
        })?;
        let keys = self.keys.current();
        if let Some(verified) = self.verified.get(token, keys.generation, SystemTime::now()) {
            return Ok(verified);
        }
        let claims = self.verify_claims(token)?;
        // A check refuses the token once the clock (whole seconds) is past `exp + leeway`.
        let accepted_until =
            UNIX_EPOCH + Duration::from_secs(claims.exp.saturating_add(LEEWAY_SECS + 1));
        let principal = principal_from(claims)?;
        self.verified
            .put(token, &principal, keys.generation, accepted_until);
        Ok((principal, accepted_until))
    }

    /// The principal a bare token stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        principal_from(self.verify_claims(token)?)
    }

    /// The claims of a valid token.
    fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        let refused = |why: &str| AuthError::Unauthenticated(why.to_owned());
        // An unknown `alg` (`none` among them) fails here, before any key is looked at.
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("token invalid"))?;
        let kid = header
            .kid
            .ok_or_else(|| refused("token invalid: no key id (kid)"))?;
        let keys = self.keys.current();
        let Some(set) = &keys.set else {
            self.keys.request_refetch();
            return Err(AuthError::Unavailable(
                "the token keys are not loaded yet; retry later".into(),
            ));
        };
        let Some(key) = set.get(&kid) else {
            // Perhaps a key published since the last fetch: fetch early, so a retry passes.
            self.keys.request_refetch();
            return Err(refused("token signed with an unknown key"));
        };
        // The key decides the algorithm; a header naming another (HS256 with the public key
        // as its secret) is refused.
        if header.alg != key.algorithm {
            return Err(refused("token algorithm does not match its key"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                refused(match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidIssuer => "token from an unknown issuer",
                    ErrorKind::InvalidAudience => "token for another audience",
                    ErrorKind::InvalidSignature => "token signature invalid",
                    _ => "token invalid",
                })
            })?
            .claims;
        Ok(claims)
    }
}

/// How many verified tokens an authority remembers.
const VERIFIED_TOKENS_KEPT: usize = 10_000;

/// A verified token's principal, the key set generation it was verified with, and until when
/// it is accepted.
type Verified = (Principal, u64, SystemTime);

/// Tokens this authority verified, each with its principal until it stops being accepted: a
/// caller sends the same token with every call, and checking its signature and claims again
/// each time is most of authentication's cost. Only tokens that passed every check are kept,
/// keyed by the whole token, so a token that differs in any byte is verified afresh; a token
/// verified with keys that have since changed (a key withdrawn from the JWKS) is verified
/// afresh too. Bounded: when full it starts over (verifying again costs microseconds, not
/// correctness).
#[derive(Default)]
struct VerifiedTokens {
    entries: Mutex<HashMap<String, Verified>>,
}

impl VerifiedTokens {
    fn get(
        &self,
        token: &str,
        generation: u64,
        now: SystemTime,
    ) -> Option<(Principal, SystemTime)> {
        let mut entries = self.lock();
        match entries.get(token) {
            Some((principal, verified_with, until))
                if now < *until && *verified_with == generation =>
            {
                Some((principal.clone(), *until))
            }
            Some(_) => {
                entries.remove(token);
                None
            }
            None => None,
        }
    }

    fn put(&self, token: &str, principal: &Principal, generation: u64, until: SystemTime) {
        let mut entries = self.lock();
        if entries.len() >= VERIFIED_TOKENS_KEPT {
            entries.clear();
        }
        entries.insert(token.to_owned(), (principal.clone(), generation, until));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        // Entries are inserted whole: a panic elsewhere cannot leave one half-written.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_remembered_token_is_accepted_only_until_it_would_stop_being_accepted() {
        let verified = VerifiedTokens::default();
        let until = UNIX_EPOCH + Duration::from_secs(1_000);
        verified.put("t", &Principal::Service("saga".into()), 0, until);
        let before = until - Duration::from_millis(1);
        assert_eq!(
            verified.get("t", 0, before),
            Some((Principal::Service("saga".into()), until))
        );
        assert_eq!(
            verified.get("t", 0, until),
            None,
            "expired: verified afresh"
        );
        assert_eq!(
            verified.get("t", 0, before),
            None,
            "an expired entry is forgotten"
        );
    }

    #[test]
    fn a_token_remembered_under_keys_that_changed_is_verified_afresh() {
        let verified = VerifiedTokens::default();
        let until = UNIX_EPOCH + Duration::from_secs(1_000);
        verified.put("t", &Principal::Service("saga".into()), 3, until);
        let now = UNIX_EPOCH;
        assert_eq!(verified.get("t", 4, now), None);
        assert_eq!(verified.get("t", 3, now), None, "and forgotten");
    }
}
