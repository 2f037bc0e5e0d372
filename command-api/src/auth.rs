//! Bearer-token authentication of gRPC calls. The tokens, roles and principals are the shared
//! `auth-tokens` crate's (the dashboard verifies the same tokens); this module reads them from a
//! request's metadata.
//!
//! Roles: a **customer** acts on their own orders and loyalty account; a **barista** works the
//! orders of their store; a **store manager** also manages that store's stock; an **internal
//! service** (the saga, the payment processor, intake) may call everything.

pub use auth_tokens::{AuthError, AuthSettings, Claims, Principal, Role, TokenAuthority};
use tonic::Request;

use crate::error::ApiError;

/// The principal behind a request's `authorization: Bearer <token>` metadata.
pub fn authenticate<T>(
    tokens: &TokenAuthority,
    request: &Request<T>,
) -> Result<Principal, ApiError> {
    // A value that is not visible ASCII cannot be a bearer token: it is refused as malformed.
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|value| value.to_str().unwrap_or_default());
    Ok(tokens.authenticate(authorization)?)
}
