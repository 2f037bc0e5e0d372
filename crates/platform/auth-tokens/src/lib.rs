//! orderpipe's bearer tokens (ES256 JWT) and the roles callers act in, shared by every process
//! that authenticates people or services: the gRPC command API and the barista dashboard verify
//! the same tokens the same way, against the public keys of a JWKS document
//! ([`TokenAuthority`]); only the issuer holds a private key and mints ([`TokenIssuer`]).
//!
//! Roles: a **customer** acts on their own orders and loyalty account; a **barista** works the
//! orders of their store; a **store manager** also manages that store's stock; an **internal
//! service** (the saga, the payment processor, intake) may call everything.
//!
//! With the `grpc-client` feature, [`client::Bearer`] is the callers' side: the tonic
//! interceptor that puts a token on every call.

#[cfg(feature = "grpc-client")]
pub mod client;

mod authority;
mod fetch;
pub mod jwks;
mod key_store;
pub mod signing;

use std::fmt;

use domain::{Actor, CustomerId, StoreId};
use serde::{Deserialize, Serialize};

pub use authority::{AuthSettings, TokenAuthority};
pub use jwks::{publish_key, JwksError};
pub use signing::{SigningError, SigningKey, TokenIssuer};

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No, a malformed, an expired or a foreign token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose role or store does not allow the action.
    #[error("{0}")]
    PermissionDenied(String),
    /// No token can be checked yet: the issuer's keys have not been loaded (the JWKS was
    /// unreachable so far). Retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
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

pub(crate) fn principal_from(claims: Claims) -> Result<Principal, AuthError> {
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
