//! orderpipe's bearer tokens (HS256 JWT) and the roles callers act in, shared by every process
//! that authenticates people or services: the gRPC command API and the barista dashboard verify
//! the same tokens the same way.
//!
//! Roles: a **customer** acts on their own orders and loyalty account; a **barista** works the
//! orders of their store; a **store manager** also manages that store's stock; an **internal
//! service** (the saga, the payment processor, intake) may call everything.
//!
//! With the `grpc-client` feature, [`client::Bearer`] is the callers' side: the tonic
//! interceptor that puts a token on every call.

#[cfg(feature = "grpc-client")]
pub mod client;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::{Actor, CustomerId, StoreId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Verification of the HS256 bearer tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The shared signing secret (at least 32 bytes).
    pub jwt_secret: SecretString,
    /// The expected `iss` claim.
    pub issuer: String,
    /// The expected `aud` claim.
    pub audience: String,
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No, a malformed, an expired or a foreign token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose role or store does not allow the action.
    #[error("{0}")]
    PermissionDenied(String),
}

/// What a caller may act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A customer, acting on their own orders and account.
    Customer,
    /// Staff working one store's orders.
    Barista,
    /// Staff managing one store's orders and stock.
    StoreManager,
    /// Another orderpipe service (saga, payments, intake).
    Service,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Customer => "customer",
            Role::Barista => "barista",
            Role::StoreManager => "store_manager",
            Role::Service => "service",
        })
    }
}

/// The claims of an orderpipe token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The caller: a customer id for customers, a staff or service name otherwise.
    pub sub: String,
    /// The caller's role.
    pub role: Role,
    /// The store staff belong to; required for baristas and store managers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A customer.
    Customer(CustomerId),
    /// A barista of a store.
    Barista {
        /// Who.
        name: String,
        /// Their store.
        store: StoreId,
    },
    /// A store manager.
    StoreManager {
        /// Who.
        name: String,
        /// Their store.
        store: StoreId,
    },
    /// An internal service.
    Service(String),
}

impl Principal {
    /// The caller's role.
    pub fn role(&self) -> Role {
        match self {
            Principal::Customer(_) => Role::Customer,
            Principal::Barista { .. } => Role::Barista,
            Principal::StoreManager { .. } => Role::StoreManager,
            Principal::Service(_) => Role::Service,
        }
    }

    /// The caller's stable identity, used to scope idempotency keys.
    pub fn subject(&self) -> String {
        match self {
            Principal::Customer(id) => format!("customer:{id}"),
            Principal::Barista { name, store } => format!("barista:{store}:{name}"),
            Principal::StoreManager { name, store } => format!("store_manager:{store}:{name}"),
            Principal::Service(name) => format!("service:{name}"),
        }
    }

    /// The caller as the domain sees it (for rules that depend on aggregate state).
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Customer(id) => Actor::Customer(id.clone()),
            Principal::Barista { store, .. } | Principal::StoreManager { store, .. } => {
                Actor::StoreStaff(store.clone())
            }
            Principal::Service(_) => Actor::Service,
        }
    }

    /// Refuses callers outside `roles` with PERMISSION_DENIED.
    pub fn require(&self, roles: &[Role], action: &str) -> Result<(), AuthError> {
        if roles.contains(&self.role()) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied(format!(
                "role {} may not {action}",
                self.role()
            )))
        }
    }

    /// Refuses staff of another store (customers never pass; services always do).
    pub fn require_store(&self, store: &StoreId) -> Result<(), AuthError> {
        match self {
            Principal::Service(_) => Ok(()),
            Principal::Barista { store: own, .. } | Principal::StoreManager { store: own, .. }
                if own == store =>
            {
                Ok(())
            }
            _ => Err(AuthError::PermissionDenied(format!(
                "caller does not work at store {store}"
            ))),
        }
    }

    /// Refuses a customer acting on another customer's account (services always pass).
    pub fn require_customer(&self, customer: &CustomerId) -> Result<(), AuthError> {
        match self {
            Principal::Service(_) => Ok(()),
            Principal::Customer(own) if own == customer => Ok(()),
            _ => Err(AuthError::PermissionDenied(format!(
                "caller may not act on customer {customer}'s account"
            ))),
        }
    }
}

/// Verifies tokens and mints them for local use. Clones share one cache of verified tokens.
#[derive(Clone)]
pub struct TokenAuthority {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    verified: Arc<VerifiedTokens>,
}

/// How many verified tokens an authority remembers.
const VERIFIED_TOKENS_KEPT: usize = 10_000;

/// Tokens this authority verified, each with its principal until it stops being accepted: a
/// caller sends the same token with every call, and checking its signature and claims again
/// each time is most of authentication's cost. Only tokens that passed every check are kept,
/// keyed by the whole token, so a token that differs in any byte is verified afresh. Bounded:
/// when full it starts over (verifying again costs microseconds, not correctness).
#[derive(Default)]
struct VerifiedTokens {
    entries: Mutex<HashMap<String, (Principal, SystemTime)>>,
}

impl VerifiedTokens {
    fn get(&self, token: &str, now: SystemTime) -> Option<(Principal, SystemTime)> {
        let mut entries = self.lock();
        match entries.get(token) {
            Some((principal, until)) if now < *until => Some((principal.clone(), *until)),
            Some(_) => {
                entries.remove(token);
                None
            }
            None => None,
        }
    }

    fn put(&self, token: &str, principal: &Principal, until: SystemTime) {
        let mut entries = self.lock();
        if entries.len() >= VERIFIED_TOKENS_KEPT {
            entries.clear();
        }
        entries.insert(token.to_owned(), (principal.clone(), until));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, SystemTime)>> {
        // Entries are inserted whole: a panic elsewhere cannot leave one half-written.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
    /// An authority for the configured secret, issuer and audience.
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            verified: Arc::default(),
        }
    }

    /// Signs a token for `subject` in `role`, valid for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        store_id: Option<&str>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            store_id: store_id.map(str::to_owned),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
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
        if let Some(verified) = self.verified.get(token, SystemTime::now()) {
            return Ok(verified);
        }
        let claims = self.verify_claims(token)?;
        // A check refuses the token once the clock (whole seconds) is past `exp + leeway`.
        let accepted_until =
            UNIX_EPOCH + Duration::from_secs(claims.exp.saturating_add(self.validation.leeway + 1));
        let principal = principal_from(claims)?;
        self.verified.put(token, &principal, accepted_until);
        Ok((principal, accepted_until))
    }

    /// The principal a bare token stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        principal_from(self.verify_claims(token)?)
    }

    /// The claims of a valid token.
    fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                AuthError::Unauthenticated(
                    match error.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::InvalidIssuer => "token from an unknown issuer",
                        ErrorKind::InvalidAudience => "token for another audience",
                        ErrorKind::InvalidSignature => "token signature invalid",
                        _ => "token invalid",
                    }
                    .into(),
                )
            })?
            .claims;
        Ok(claims)
    }
}

fn principal_from(claims: Claims) -> Result<Principal, AuthError> {
    let invalid = |what: &str| AuthError::Unauthenticated(format!("token invalid: {what}"));
    let store = || {
        claims
            .store_id
            .as_deref()
            .ok_or_else(|| invalid("staff tokens need a store_id"))
            .and_then(|id| StoreId::parse(id).map_err(|_| invalid("store_id")))
    };
    Ok(match claims.role {
        Role::Customer => Principal::Customer(
            CustomerId::parse(&claims.sub).map_err(|_| invalid("customer subject"))?,
        ),
        Role::Barista => Principal::Barista {
            store: store()?,
            name: claims.sub.clone(),
        },
        Role::StoreManager => Principal::StoreManager {
            store: store()?,
            name: claims.sub.clone(),
        },
        Role::Service => Principal::Service(claims.sub.clone()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_remembered_token_is_accepted_only_until_it_would_stop_being_accepted() {
        let verified = VerifiedTokens::default();
        let until = UNIX_EPOCH + Duration::from_secs(1_000);
        verified.put("t", &Principal::Service("saga".into()), until);
        let before = until - Duration::from_millis(1);
        assert_eq!(
            verified.get("t", before),
            Some((Principal::Service("saga".into()), until))
        );
        assert_eq!(verified.get("t", until), None, "expired: verified afresh");
        assert_eq!(
            verified.get("t", before),
            None,
            "an expired entry is forgotten"
        );
    }

    #[test]
    fn a_token_differing_in_one_byte_from_a_remembered_one_is_verified_afresh() {
        let authority = authority("orderpipe");
        let token = authority
            .mint("saga", Role::Service, None, Duration::from_secs(60))
            .unwrap();
        let header = format!("Bearer {token}");
        assert!(authority.authenticate(Some(&header)).is_ok());
        assert!(authority.authenticate(Some(&header)).is_ok(), "remembered");
        // Another signature on the same claims.
        let mut forged = header.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(matches!(
            authority.authenticate(Some(&forged)),
            Err(AuthError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_token_is_accepted_until_its_expiry_plus_the_leeway() {
        let authority = authority("orderpipe");
        let token = authority
            .mint("ana", Role::Barista, Some("s1"), Duration::from_secs(60))
            .unwrap();
        let (principal, until) = authority
            .authenticate_until(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(principal.role(), Role::Barista);
        let now = SystemTime::now();
        let left = until.duration_since(now).unwrap();
        // 60 s of validity, 5 s of leeway, and the second in which the clock reaches the end.
        assert!(
            left > Duration::from_secs(64) && left <= Duration::from_secs(66),
            "{left:?}"
        );
    }

    fn authority(issuer: &str) -> TokenAuthority {
        TokenAuthority::new(&AuthSettings {
            jwt_secret: SecretString::from("a-test-secret-that-is-long-enough-1234"),
            issuer: issuer.into(),
            audience: "orderpipe-api".into(),
        })
    }

    fn header(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_minted_token_authenticates_as_its_role_and_store() {
        let authority = authority("orderpipe");
        let token = authority
            .mint("ana", Role::Barista, Some("s1"), Duration::from_secs(60))
            .unwrap();

        let principal = authority.authenticate(Some(&header(&token))).unwrap();

        assert_eq!(
            principal,
            Principal::Barista {
                name: "ana".into(),
                store: StoreId::parse("s1").unwrap()
            }
        );
    }

    #[test]
    fn tokens_from_another_issuer_or_without_a_store_are_refused() {
        let foreign = authority("someone-else")
            .mint("ana", Role::Service, None, Duration::from_secs(60))
            .unwrap();
        let storeless = authority("orderpipe")
            .mint("ana", Role::Barista, None, Duration::from_secs(60))
            .unwrap();

        let ours = authority("orderpipe");
        for token in [foreign, storeless, "not-a-jwt".to_owned()] {
            let error = ours.authenticate(Some(&header(&token))).unwrap_err();
            assert!(matches!(error, AuthError::Unauthenticated(_)), "{token}");
        }
    }

    #[test]
    fn a_missing_or_non_bearer_header_is_unauthenticated() {
        let authority = authority("orderpipe");
        assert_eq!(
            authority.authenticate(None).unwrap_err(),
            AuthError::Unauthenticated("missing bearer token".into())
        );
        assert_eq!(
            authority
                .authenticate(Some("Basic YWxhZGRpbg=="))
                .unwrap_err(),
            AuthError::Unauthenticated("authorization must be 'Bearer <token>'".into())
        );
    }

    #[test]
    fn staff_act_only_in_their_store_and_customers_only_on_their_account() {
        let s1 = StoreId::parse("s1").unwrap();
        let s2 = StoreId::parse("s2").unwrap();
        let barista = Principal::Barista {
            name: "ana".into(),
            store: s1.clone(),
        };
        assert!(barista.require_store(&s1).is_ok());
        assert!(barista.require_store(&s2).is_err());
        let c1 = CustomerId::parse("c1").unwrap();
        let c2 = CustomerId::parse("c2").unwrap();
        let customer = Principal::Customer(c1.clone());
        assert!(customer.require_customer(&c1).is_ok());
        assert!(customer.require_customer(&c2).is_err());
        assert!(customer.require_store(&s1).is_err());
        assert!(Principal::Service("saga".into()).require_store(&s2).is_ok());
    }
}
