//! The caller's side of the bearer tokens: a tonic client interceptor that puts
//! `authorization: Bearer <token>` on every call of a stub, so a client built with
//! `OrderServiceClient::with_interceptor(channel, bearer)` authenticates each request the way
//! [`TokenAuthority::authenticate`](crate::TokenAuthority::authenticate) expects.

use tonic::metadata::errors::InvalidMetadataValue;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The metadata key the command API reads the token from.
const AUTHORIZATION: &str = "authorization";

/// A token that cannot travel in a gRPC header (it is not visible ASCII). A token minted by
/// [`TokenIssuer::mint`](crate::TokenIssuer::mint) always can.
#[derive(Debug, thiserror::Error)]
#[error("a bearer token must be visible ASCII")]
pub struct InvalidToken(#[from] InvalidMetadataValue);

/// Adds `authorization: Bearer <token>` to every call, or nothing for an anonymous caller.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Calls carrying `token` (the bare token, without the `Bearer ` scheme).
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        Ok(Self(Some(format!("Bearer {token}").parse()?)))
    }

    /// Calls carrying no token at all (to see them refused as unauthenticated).
    pub fn anonymous() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A channel whose every call carries a [`Bearer`] token: the service type of the stubs built
/// with `with_interceptor(channel, bearer)`.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_call_carries_the_token_in_the_scheme_the_server_reads() {
        let mut bearer = Bearer::new("abc.def.ghi").unwrap();
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get(AUTHORIZATION).unwrap(),
            "Bearer abc.def.ghi"
        );
    }

    #[test]
    fn an_anonymous_call_carries_no_authorization() {
        let request = Bearer::anonymous().call(Request::new(())).unwrap();
        assert!(request.metadata().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        assert!(Bearer::new("line\nbreak").is_err());
    }
}
