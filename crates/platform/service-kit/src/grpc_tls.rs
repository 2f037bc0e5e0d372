//! TLS on the gRPC hops. The command API serves TLS when [`ServerTlsSettings`] name a
//! certificate and key, and requires client certificates signed by `client_ca_file` when that is
//! set (mTLS). Every internal client builds its tonic [`Endpoint`] with [`client_endpoint`]: an
//! `https://` URL trusts the CA in [`ClientTlsSettings::ca_file`] (or the system's roots) and
//! presents the client certificate when one is configured; an `http://` URL stays plaintext.
//!
//! Files are read and checked here, at start-up, so a missing file, a PEM without a certificate
//! or a key that does not belong to its certificate stops the process with the file and setting
//! named, not at the first handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The bound on a TLS handshake, either side: a peer that connects and then says nothing holds
/// a connection slot for at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a gRPC listener's TLS. Nothing set: plaintext (the local default).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServerTlsSettings {
    /// The server's certificate chain (PEM, leaf first). Set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`'s leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// When set, every caller must present a certificate signed by this CA (PEM): mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// Serve TLS with a certificate made at start-up (self-signed, new key each start) instead of
    /// `cert_file`/`key_file`: for a listener behind a load balancer that encrypts to its
    /// targets without checking their certificate (an AWS ALB), so there is no key to ship or
    /// rotate. No client can verify it: internal clients call the load balancer.
    pub self_signed: bool,
}

/// The client side of a gRPC hop's TLS, used when the URL is `https://`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClientTlsSettings {
    /// The CA (PEM) the server's certificate must chain to; unset: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for a server that requires mTLS. Set together
    /// with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`'s leaf (PEM).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the URL's host (e.g. the
    /// URL names an IP address or a load balancer).
    pub domain_name: Option<String>,
}

/// Why a TLS configuration could not be built. Every variant names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum GrpcTlsError {
    /// A file could not be read.
    #[error("{setting} {path:?} cannot be read")]
    Unreadable {
        /// The setting naming the file, e.g. `grpc.tls.cert_file`.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable certificate.
    #[error("{setting} {path:?} holds no valid PEM certificate")]
    Certificate {
        /// The setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// What the parser said, when it said something.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A file holds no usable private key.
    #[error("{setting} {path:?} holds no valid PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    PrivateKey {
        /// The setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The key does not belong to the certificate.
    #[error("{prefix}.key_file {key:?} is not the private key of {prefix}.cert_file {cert:?}")]
    KeyMismatch {
        /// The settings section, e.g. `grpc.tls`.
        prefix: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: Box<rustls::Error>,
    },
    /// Settings that only make sense together were given alone.
    #[error("{0}")]
    Incomplete(String),
    /// The URL is not a URL.
    #[error("{setting} {url:?} is not a valid URL")]
    Url {
        /// The setting naming the URL.
        setting: String,
        /// The URL.
        url: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// TLS files were given for a plaintext URL: the caller meant TLS, and would send its
    /// tokens in clear.
    #[error("{prefix}.tls is set but {prefix}.url {url:?} is not https://")]
    PlaintextUrl {
        /// The settings section, e.g. `command_api`.
        prefix: String,
        /// The URL.
        url: String,
    },
    /// The start-up certificate could not be made.
    #[error("cannot make the self-signed certificate")]
    SelfSigned(#[source] rcgen::Error),
    /// tonic refused the configuration.
    #[error("{setting}: TLS configuration refused")]
    Transport {
        /// The settings section.
        setting: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
}

impl ServerTlsSettings {
    /// Whether TLS is configured at all.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca_file.is_some()
            || self.self_signed
    }

    /// Whether callers must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca_file.is_some()
    }

    /// The listener's TLS, read and checked from the files; `None` when nothing is set.
    /// `prefix` is where these settings live (e.g. `grpc.tls`), for the errors.
    pub fn server_config(&self, prefix: &str) -> Result<Option<ServerTlsConfig>, GrpcTlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let identity = match (&self.cert_file, &self.key_file, self.self_signed) {
            (Some(cert), Some(key), false) => identity(prefix, cert, key)?,
            (None, None, true) => self_signed_identity()?,
            (_, _, true) => {
                return Err(GrpcTlsError::Incomplete(format!(
                    "{prefix}.self_signed makes its own certificate: leave {prefix}.cert_file \
                     and {prefix}.key_file unset"
                )))
            }
            _ => {
                return Err(GrpcTlsError::Incomplete(format!(
                    "{prefix}.cert_file and {prefix}.key_file must both be set to serve TLS \
                     ({prefix}.client_ca_file needs them too, or {prefix}.self_signed)"
                )))
            }
        };
        // tonic builds its server config with the process's default provider: make it the one
        // this workspace compiles (aws-lc-rs), so no other rustls user's features can make it
        // ambiguous. An earlier install (the same provider) is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_file {
            config = config
                .client_ca_root(trusted_ca(&format!("{prefix}.client_ca_file"), ca)?)
                .client_auth_optional(false);
        }
        Ok(Some(config))
    }
}

impl ClientTlsSettings {
    /// Whether any TLS setting is given.
    pub fn configured(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.domain_name.is_some()
    }
}

/// The endpoint every internal gRPC client connects through. `url` is `http://host:port`
/// (plaintext; `tls` must then be empty) or `https://host:port` (TLS as `tls` says). `prefix`
/// is the settings section holding `url` and `tls` (e.g. `command_api`), for the errors.
pub fn client_endpoint(
    prefix: &str,
    url: &str,
    tls: &ClientTlsSettings,
) -> Result<Endpoint, GrpcTlsError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| GrpcTlsError::Url {
        setting: format!("{prefix}.url"),
        url: url.to_owned(),
        source,
    })?;
    if endpoint.uri().scheme_str() != Some("https") {
        if tls.configured() {
            return Err(GrpcTlsError::PlaintextUrl {
                prefix: prefix.to_owned(),
                url: url.to_owned(),
            });
        }
        return Ok(endpoint);
    }
    let section = format!("{prefix}.tls");
    let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    config = match &tls.ca_file {
        Some(ca) => config.ca_certificate(trusted_ca(&format!("{section}.ca_file"), ca)?),
        None => config.with_native_roots(),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => config = config.identity(identity(&section, cert, key)?),
        (None, None) => {}
        _ => {
            return Err(GrpcTlsError::Incomplete(format!(
                "{section}.cert_file and {section}.key_file go together: set both or neither"
            )))
        }
    }
    if let Some(name) = &tls.domain_name {
        config = config.domain_name(name.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|source| GrpcTlsError::Transport {
            setting: section,
            source,
        })
}

/// A certificate chain and its key, checked to belong together.
fn identity(prefix: &str, cert: &Path, key: &Path) -> Result<Identity, GrpcTlsError> {
    let cert_setting = format!("{prefix}.cert_file");
    let key_setting = format!("{prefix}.key_file");
    let cert_pem = read(&cert_setting, cert)?;
    let key_pem = read(&key_setting, key)?;
    let chain = certificates(&cert_setting, cert, &cert_pem)?;
    let private_key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| GrpcTlsError::PrivateKey {
            setting: key_setting,
            path: key.to_owned(),
            source: Box::new(source),
        })?;
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    CertifiedKey::from_der(chain, private_key, &provider).map_err(|source| {
        GrpcTlsError::KeyMismatch {
            prefix: prefix.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
            source: Box::new(source),
        }
    })?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// A certificate for `localhost`, signed by its own new key.
fn self_signed_identity() -> Result<Identity, GrpcTlsError> {
    let key = rcgen::KeyPair::generate().map_err(GrpcTlsError::SelfSigned)?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .and_then(|params| params.self_signed(&key))
        .map_err(GrpcTlsError::SelfSigned)?;
    Ok(Identity::from_pem(cert.pem(), key.serialize_pem()))
}

/// A CA bundle, checked to hold at least one certificate that can be a trust anchor.
fn trusted_ca(setting: &str, path: &Path) -> Result<Certificate, GrpcTlsError> {
    let pem = read(setting, path)?;
    let mut roots = RootCertStore::empty();
    for der in certificates(setting, path, &pem)? {
        roots.add(der).map_err(|source| GrpcTlsError::Certificate {
            setting: setting.to_owned(),
            path: path.to_owned(),
            source: Some(Box::new(source)),
        })?;
    }
    Ok(Certificate::from_pem(pem))
}

/// The certificates in a PEM file: at least one, all well-formed.
fn certificates(
    setting: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, GrpcTlsError> {
    let invalid =
        |source: Option<Box<dyn std::error::Error + Send + Sync>>| GrpcTlsError::Certificate {
            setting: setting.to_owned(),
            path: path.to_owned(),
            source,
        };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| invalid(Some(Box::new(source))))?;
    if chain.is_empty() {
        return Err(invalid(None));
    }
    Ok(chain)
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, GrpcTlsError> {
    std::fs::read(path).map_err(|source| GrpcTlsError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, tls: &ClientTlsSettings) -> GrpcTlsError {
        match client_endpoint("command_api", url, tls) {
            Ok(_) => panic!("{url} with {tls:?} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_plaintext_url_with_nothing_set_stays_plaintext() {
        let endpoint = client_endpoint(
            "command_api",
            "http://127.0.0.1:50051",
            &ClientTlsSettings::default(),
        );
        assert!(endpoint.is_ok());
    }

    #[test]
    fn tls_files_for_a_plaintext_url_are_refused_rather_than_ignored() {
        let tls = ClientTlsSettings {
            ca_file: Some("/etc/orderpipe/ca.pem".into()),
            ..ClientTlsSettings::default()
        };
        let error = refused("http://command-api:50051", &tls);
        assert!(
            matches!(error, GrpcTlsError::PlaintextUrl { .. }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "command_api.tls is set but command_api.url \"http://command-api:50051\" is not https://"
        );
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let tls = ClientTlsSettings {
            cert_file: Some("/etc/orderpipe/flows.pem".into()),
            ..ClientTlsSettings::default()
        };
        let error = refused("https://command-api:50051", &tls);
        assert!(matches!(error, GrpcTlsError::Incomplete(_)), "{error}");
        assert!(
            error.to_string().contains("command_api.tls.key_file"),
            "{error}"
        );
    }

    #[test]
    fn an_unreadable_ca_file_is_named_with_its_setting() {
        let tls = ClientTlsSettings {
            ca_file: Some("/nonexistent/orderpipe-ca.pem".into()),
            ..ClientTlsSettings::default()
        };
        let error = refused("https://command-api:50051", &tls);
        assert!(
            error
                .to_string()
                .starts_with("command_api.tls.ca_file \"/nonexistent/orderpipe-ca.pem\""),
            "{error}"
        );
    }

    #[test]
    fn a_url_that_is_not_one_is_refused() {
        let error = refused("not a url", &ClientTlsSettings::default());
        assert!(matches!(error, GrpcTlsError::Url { .. }), "{error}");
    }

    #[test]
    fn a_half_configured_server_is_refused() {
        let tls = ServerTlsSettings {
            key_file: Some("/etc/orderpipe/server-key.pem".into()),
            ..ServerTlsSettings::default()
        };
        let error = match tls.server_config("grpc.tls") {
            Ok(_) => panic!("a key without a certificate was accepted"),
            Err(error) => error,
        };
        assert!(matches!(error, GrpcTlsError::Incomplete(_)), "{error}");
        assert!(matches!(
            ServerTlsSettings::default().server_config("grpc.tls"),
            Ok(None)
        ));
    }
}
