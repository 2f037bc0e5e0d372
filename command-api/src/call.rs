//! What one command call carries besides its payload: who calls, under which idempotency key,
//! in which business flow (correlation id).

use std::collections::HashMap;

use event_store::metadata;
use sha2::{Digest, Sha256};
use tonic::Request;

use crate::auth::Principal;
use crate::error::ApiError;

/// The header a caller may set to tie its commands into one business flow.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// The header naming what caused the command (an event, a message).
pub const CAUSATION_HEADER: &str = "x-causation-id";

const MAX_KEY_LEN: usize = 128;

/// One authenticated command call.
#[derive(Debug, Clone)]
pub struct Call {
    rpc: &'static str,
    principal: Principal,
    idempotency_key: String,
    fingerprint: String,
    correlation_id: String,
    causation_id: Option<String>,
}

impl Call {
    /// A call of `rpc` by `principal` with the request's client idempotency key. The key is
    /// scoped to the caller, so two callers never share outcomes; the fingerprint is a digest
    /// of the RPC and the encoded request, so reusing a key for another request is detected.
    pub fn new<M: prost::Message>(
        rpc: &'static str,
        principal: Principal,
        request: &Request<M>,
        client_key: &str,
    ) -> Result<Self, ApiError> {
        validate_key(client_key)?;
        let mut digest = Sha256::new();
        digest.update(rpc.as_bytes());
        digest.update([0]);
        digest.update(request.get_ref().encode_to_vec());
        Ok(Self {
            rpc,
            idempotency_key: scoped_key(&principal.subject(), client_key),
            principal,
            fingerprint: hex::encode(digest.finalize()),
            correlation_id: header(request, CORRELATION_HEADER)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            causation_id: header(request, CAUSATION_HEADER),
        })
    }

    /// The RPC's name.
    pub fn rpc(&self) -> &'static str {
        self.rpc
    }

    /// Who calls.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The caller-scoped idempotency key.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The request digest.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The business flow this call belongs to.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The metadata stored with the command's events.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            (
                metadata::IDEMPOTENCY_KEY.to_owned(),
                self.idempotency_key.clone(),
            ),
            (
                metadata::REQUEST_FINGERPRINT.to_owned(),
                self.fingerprint.clone(),
            ),
            (
                metadata::CORRELATION_ID.to_owned(),
                self.correlation_id.clone(),
            ),
            ("command".to_owned(), self.rpc.to_owned()),
            (metadata::ACTOR.to_owned(), self.principal.subject()),
        ]);
        if let Some(causation_id) = &self.causation_id {
            metadata.insert(metadata::CAUSATION_ID.to_owned(), causation_id.clone());
        }
        // The RPC's span: the relay, the projections and the flows continue its trace.
        if let Some(traceparent) = service_kit::trace_context::current() {
            metadata.insert(metadata::TRACEPARENT.to_owned(), traceparent);
        }
        metadata
    }
}

/// The stored idempotency key: the caller's subject and its key, joined so that no two
/// (subject, key) pairs give the same text. Keys may contain '/' and so may subjects (a service
/// token's `sub` is free text): a plain `subject/key` let service `saga/x` with key `k` and
/// service `saga` with key `x/k` share one scope. The subject's '%' and '/' are
/// percent-encoded, so the first '/' always ends the subject. A subject with neither character
/// (every customer and store id, and the services this project mints tokens for) is unchanged,
/// so keys stored before this encoding keep their meaning; only a subject that contains '%'
/// gets a new scope, which at worst lets one retry of a command from before the upgrade run
/// again (the aggregate's state refuses most such repeats).
fn scoped_key(subject: &str, client_key: &str) -> String {
    let mut scoped = String::with_capacity(subject.len() + client_key.len() + 1);
    for c in subject.chars() {
        match c {
            '%' => scoped.push_str("%25"),
            '/' => scoped.push_str("%2F"),
            c => scoped.push(c),
        }
    }
    scoped.push('/');
    scoped.push_str(client_key);
    scoped
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    let valid =
        !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"),
        ))
    }
}

/// A short printable header value, or `None`.
fn header<M>(request: &Request<M>, name: &str) -> Option<String> {
    request
        .metadata()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= MAX_KEY_LEN)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::scoped_key;

    #[test]
    fn a_scoped_key_tells_every_subject_and_key_apart() {
        let pairs = [
            ("service:saga/x", "k"),
            ("service:saga", "x/k"),
            ("service:saga%2Fx", "k"),
            ("service:saga%", "2Fx/k"),
            ("service:saga", "x%2Fk"),
        ];
        let scoped: std::collections::HashSet<String> =
            pairs.iter().map(|(s, k)| scoped_key(s, k)).collect();
        assert_eq!(scoped.len(), pairs.len(), "{scoped:?}");
    }

    #[test]
    fn a_subject_without_slash_or_percent_keeps_its_stored_form() {
        assert_eq!(scoped_key("customer:c-42", "k/1"), "customer:c-42/k/1");
        assert_eq!(scoped_key("barista:s1:ann", "k"), "barista:s1:ann/k");
    }
}
