//! Throwaway certificate authorities for TLS tests: a CA made in the test, the server and client
//! certificates it signs, all written as PEM files (what the services' settings name) into a
//! directory of the test's own that is removed when the CA is dropped.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::unique_name;

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key_file: PathBuf,
}

/// A CA made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA's certificate (PEM): what a client trusts, or a server takes as `client_ca_file`.
    pub cert_file: PathBuf,
}

impl TestCa {
    /// A fresh CA called `name`, its certificate written to a new temporary directory.
    ///
    /// # Panics
    /// When the key cannot be generated or the directory cannot be written (a test failure).
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name("orderpipe-tls"));
        std::fs::create_dir_all(&dir).expect("create the CA's directory");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate the CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        let cert_file = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_file, issuer.pem()).expect("write the CA certificate");
        Self {
            issuer,
            dir,
            cert_file,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server(&self, file_stem: &str, names: &[&str]) -> IssuedCertificate {
        self.issue(
            file_stem,
            names.iter().map(|name| name.to_string()).collect(),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate for the service `name`, signed by this CA.
    pub fn client(&self, name: &str) -> IssuedCertificate {
        self.issue(
            name,
            vec![name.to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn issue(
        &self,
        file_stem: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> IssuedCertificate {
        let mut params = CertificateParams::new(names).expect("valid certificate names");
        params
            .distinguished_name
            .push(DnType::CommonName, file_stem);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the certificate");
        let issued = IssuedCertificate {
            cert_file: self.dir.join(format!("{file_stem}.pem")),
            key_file: self.dir.join(format!("{file_stem}-key.pem")),
        };
        std::fs::write(&issued.cert_file, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("write the key");
        issued
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
