//! Where a JWKS document is read from: a local file (`/path`, `file:///path`), or an `https://`
//! (or `http://`) URL such as a Cognito user pool's `/.well-known/jwks.json`. Every read is
//! bounded in time and size.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::jwks::{JwksError, KeySet};

/// The largest JWKS document read (a handful of keys is a few kilobytes).
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// A JWKS location.
#[derive(Clone)]
pub(crate) enum JwksSource {
    /// A file on this machine.
    File(PathBuf),
    /// A document served over HTTP(S).
    Url {
        uri: Uri,
        client: Box<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    },
}

impl JwksSource {
    /// The source `location` names: an `http(s)://` URL, a `file://` URL or a path.
    pub(crate) fn parse(location: &str) -> Result<Self, JwksError> {
        let invalid = |reason: String| JwksError::Unreachable {
            location: location.to_owned(),
            reason,
        };
        if location.trim().is_empty() {
            return Err(invalid("no JWKS location given (auth.jwks_url)".into()));
        }
        if location.starts_with("https://") || location.starts_with("http://") {
            let uri: Uri = location
                .parse()
                .map_err(|e| invalid(format!("not a URL: {e}")))?;
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
                .map_err(|e| invalid(format!("no TLS trust roots: {e}")))?
                .https_or_http()
                .enable_http1()
                .build();
            let client = Client::builder(TokioExecutor::new()).build(connector);
            return Ok(Self::Url {
                uri,
                client: Box::new(client),
            });
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Self::File(PathBuf::from(path)))
    }

    /// Where the document is, for messages.
    pub(crate) fn location(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Url { uri, .. } => uri.to_string(),
        }
    }

    /// The document's keys, read within `timeout`.
    pub(crate) async fn fetch(&self, timeout: Duration) -> Result<KeySet, JwksError> {
        let document = tokio::time::timeout(timeout, self.read())
            .await
            .map_err(|_| JwksError::TimedOut {
                location: self.location(),
                timeout_ms: timeout.as_millis(),
            })??;
        KeySet::parse(&document)
    }

    async fn read(&self) -> Result<Bytes, JwksError> {
        let unreachable = |reason: String| JwksError::Unreachable {
            location: self.location(),
            reason,
        };
        match self {
            Self::File(path) => {
                let path = path.clone();
                // A local read, off the async workers.
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                    .map_err(|e| unreachable(e.to_string()))?;
                Ok(Bytes::from(bytes))
            }
            Self::Url { uri, client } => {
                let response = client
                    .get(uri.clone())
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(unreachable(format!("HTTP status {}", response.status())));
                }
                let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                    .collect()
                    .await
                    .map_err(|e| unreachable(format!("reading the body: {e}")))?;
                Ok(body.to_bytes())
            }
        }
    }
}
