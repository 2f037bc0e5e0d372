//! Who may see a store's board: its own staff (baristas and store managers), with the same
//! tokens as the command API. Customers and services have no board.

use std::time::SystemTime;

use auth_tokens::{Principal, TokenAuthority};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use domain::StoreId;

use super::error::HttpError;

/// The caller behind the request's `Authorization: Bearer <token>` header.
pub fn caller(tokens: &TokenAuthority, headers: &HeaderMap) -> Result<Principal, HttpError> {
    let authorization = headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    Ok(tokens.authenticate(authorization)?)
}

/// As [`caller`], with the instant the token stops being accepted.
pub fn caller_until(
    tokens: &TokenAuthority,
    headers: &HeaderMap,
) -> Result<(Principal, SystemTime), HttpError> {
    let authorization = headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    Ok(tokens.authenticate_until(authorization)?)
}

/// The store a principal works at; `None` for customers and services.
pub fn store_of(principal: &Principal) -> Option<&StoreId> {
    match principal {
        Principal::Barista { store, .. } | Principal::StoreManager { store, .. } => Some(store),
        Principal::Customer(_) | Principal::Service(_) => None,
    }
}

/// Refuses anyone but staff (baristas and store managers); returns their store.
pub fn require_staff(principal: &Principal) -> Result<&StoreId, HttpError> {
    store_of(principal).ok_or_else(|| {
        HttpError::Forbidden(format!(
            "role {} has no store board: sign in with a barista or store manager token",
            principal.role()
        ))
    })
}

/// Refuses anyone but `store`'s baristas and managers.
pub fn require_staff_of(principal: &Principal, store: &StoreId) -> Result<(), HttpError> {
    let own = require_staff(principal)?;
    if own == store {
        Ok(())
    } else {
        Err(HttpError::Forbidden(format!(
            "this token is for store {own}, not {store}"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_stores_own_staff_see_its_board() {
        let s1 = StoreId::parse("s1").unwrap();
        let s2 = StoreId::parse("s2").unwrap();
        let barista = Principal::Barista {
            name: "ana".into(),
            store: s1.clone(),
        };
        let manager = Principal::StoreManager {
            name: "bo".into(),
            store: s1.clone(),
        };
        assert!(require_staff_of(&barista, &s1).is_ok());
        assert!(require_staff_of(&manager, &s1).is_ok());
        assert!(require_staff_of(&barista, &s2).is_err());
        assert!(require_staff_of(&Principal::Service("saga".into()), &s1).is_err());
    }
}
