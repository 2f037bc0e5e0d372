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

/// A server-sent events response being read.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: String,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    /// Its `event:` name (`message` when it has none).
    pub name: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// Opens `GET url` as a server-sent events stream with `Authorization: Bearer <token>`.
///
/// # Panics
/// When the request fails or the answer is not a 200.
pub async fn event_stream(url: &str, token: &str) -> EventStream {
    let request = hyper::Request::builder()
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream")
        .body(Full::new(hyper::body::Bytes::new()))
        .unwrap_or_else(|e| panic!("cannot build a request to {url}: {e}"));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    EventStream {
        body: response.into_body(),
        buffer: String::new(),
    }
}

impl EventStream {
    /// The next event (comments and keep-alives skipped); `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if !data.is_empty() {
                    return Some(ServerEvent {
                        name,
                        data: data.join("\n"),
                    });
                }
                continue;
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer
                    .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
            }
        }
    }
}
