//! A minimal JSON-over-HTTP client for tests of the HTTP services (the dashboard): one request,
//! its status and its body parsed as JSON (`Value::Null` when the body is not JSON).

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A response: its status code and its JSON body.
#[derive(Debug, Clone)]
pub struct JsonResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body as JSON, or `Null` when it is not JSON.
    pub body: serde_json::Value,
}

/// Sends `method url` with `Authorization: Bearer <token>` when a token is given and `body` as
/// JSON when given.
///
/// # Panics
/// When the request cannot be sent or the response read: the service under test is down.
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> JsonResponse {
    let mut builder = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let payload = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            body.to_string()
        }
        None => String::new(),
    };
    let request = builder
        .body(Full::new(hyper::body::Bytes::from(payload)))
        .unwrap_or_else(|e| panic!("cannot build a request to {url}: {e}"));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("cannot read the response of {method} {url}: {e}"))
        .to_bytes();
    JsonResponse {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}
