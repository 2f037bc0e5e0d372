//! ES256 token keys for tests: a fresh key pair per test (or test process), its JWKS written to a
//! file of its own, and an issuer minting with it, the way `scripts/up.sh` sets up a stack. The
//! processes under test get only the JWKS location ([`TestTokenKeys::auth_settings`] or
//! [`TestTokenKeys::jwks_url`]), never the private key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use auth_tokens::{publish_key, AuthSettings, Role, SigningKey, TokenIssuer};

/// The `iss` every test token carries (the services' default).
pub const TEST_ISSUER: &str = "orderpipe";
/// The `aud` every test token carries (the services' default).
pub const TEST_AUDIENCE: &str = "orderpipe-api";

/// A key pair whose public half is published in a JWKS file; the files go when it is dropped.
pub struct TestTokenKeys {
    dir: PathBuf,
    key: SigningKey,
    issuer: TokenIssuer,
}

impl TestTokenKeys {
    /// A new key pair, its JWKS and private key PEM written under the system's temp directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "orderpipe-test-keys-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the test keys");
        let key = SigningKey::generate().expect("an ES256 test key");
        key.write_pem_file(&dir.join("signing-key.pem"))
            .expect("the test key written");
        publish_key(&dir.join("jwks.json"), &key).expect("the test JWKS written");
        let issuer = TokenIssuer::new(&key, TEST_ISSUER, TEST_AUDIENCE);
        Self { dir, key, issuer }
    }

    /// The JWKS document's path, as `auth.jwks_url` takes it.
    pub fn jwks_url(&self) -> String {
        self.dir.join("jwks.json").display().to_string()
    }

    /// The private key's PEM file (for tooling run as the issuer, such as `mint-token`).
    pub fn private_key_path(&self) -> PathBuf {
        self.dir.join("signing-key.pem")
    }

    /// The verifying side's settings: this JWKS, the default issuer and audience.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings::new(&self.jwks_url(), TEST_ISSUER, TEST_AUDIENCE)
    }

    /// The issuer signing with this key.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The key itself.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A token for `subject` in `role` (and `store`), valid for ten minutes.
    pub fn mint(&self, subject: &str, role: Role, store: Option<&str>) -> String {
        self.issuer
            .mint(subject, role, store, Duration::from_secs(600))
            .expect("an ES256 test token")
    }

    /// The directory holding the key files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Default for TestTokenKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestTokenKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
