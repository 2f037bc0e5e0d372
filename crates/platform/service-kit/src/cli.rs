//! What every binary's command line shares.

use std::path::{Path, PathBuf};

use tonic::transport::Endpoint;

use crate::grpc_tls::{client_endpoint, ClientTlsSettings, GrpcTlsError};

/// `--config FILE` (or `ORDERPIPE_CONFIG`): a TOML settings file layered over the binary's
/// built-in defaults and under its `ORDERPIPE_*` variables (flattened into each binary's
/// arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsFile {
    /// A TOML settings file layered over the defaults.
    #[arg(long, global = true, env = "ORDERPIPE_CONFIG")]
    config: Option<PathBuf>,
}

impl SettingsFile {
    /// The file, if one was given.
    pub fn path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// `--ca-file`, `--cert-file`, `--key-file`: the TLS options of the command-line tools that call
/// the command API (`budget`, `loadgen`, `compare`, `fault-run`), flattened into each tool's
/// arguments, so every one of them can talk TLS the way the services do
/// ([`client_endpoint`](crate::grpc_tls::client_endpoint)). None given: plaintext.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcClientTls {
    /// Call the command API over TLS, trusting this CA (PEM) for its certificate (a tool given
    /// an `https://` address without it trusts the system's roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for a command API that requires mTLS.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
}

impl GrpcClientTls {
    /// Trusting `ca_file` and presenting `cert_file`/`key_file` when given.
    pub fn new(
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> Self {
        Self {
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// The options as the client settings every gRPC client is built from.
    pub fn settings(&self) -> ClientTlsSettings {
        ClientTlsSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            domain_name: None,
        }
    }

    /// The URL of the command API at `address` (`host:port`): `https://` when a TLS option was
    /// given, else `http://` as before.
    pub fn url(&self, address: &str) -> String {
        let scheme = if self.settings().configured() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{address}")
    }

    /// The endpoint of the command API at `address` (`host:port`), at [`Self::url`]. `tool`
    /// names the options in errors.
    pub fn endpoint(&self, tool: &str, address: &str) -> Result<Endpoint, GrpcTlsError> {
        client_endpoint(tool, &self.url(address), &self.settings())
    }
}
