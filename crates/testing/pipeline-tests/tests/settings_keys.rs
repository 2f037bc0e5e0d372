//! The settings keys every binary reads, as `<binary> settings-keys` prints them, checked in at
//! `infra/cdk/settings-keys.json` for the deployment's configuration test (`infra/cdk/test/
//! config.test.ts`), which holds each service's environment against them. The file is
//! generated, never edited: when a settings struct or its defaults change, regenerate it with
//! `ORDERPIPE_WRITE_SETTINGS_KEYS=1 cargo test -p pipeline-tests --test settings_keys`.
//!
//! A file rather than the CDK test running the binaries: `npm test` then needs no Rust build
//! (and no target directory to find), and a change to the keys shows in review as a diff of
//! this file beside the CDK's environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use service_kit::settings::LayeredSettings;
use service_kit::settings_keys::SettingKey;

fn keys_of_every_binary() -> BTreeMap<&'static str, Vec<SettingKey>> {
    BTreeMap::from([
        ("command-api", command_api::settings::Settings::keys()),
        ("relay", relay::settings::Settings::keys()),
        ("projectors", projectors::settings::Settings::keys()),
        ("flows", flows::settings::Settings::keys()),
        ("dashboard", dashboard::settings::Settings::keys()),
        ("replay", replay::settings::Settings::keys()),
    ])
}

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../infra/cdk/settings-keys.json")
}

#[test]
fn the_checked_in_settings_keys_are_what_the_binaries_read() {
    let mut generated =
        serde_json::to_string_pretty(&keys_of_every_binary()).expect("keys serialize");
    generated.push('\n');
    let path = checked_in();
    if std::env::var_os("ORDERPIPE_WRITE_SETTINGS_KEYS").is_some() {
        std::fs::write(&path, &generated).expect("write settings-keys.json");
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "{} is stale: regenerate it with ORDERPIPE_WRITE_SETTINGS_KEYS=1 cargo test -p \
         pipeline-tests --test settings_keys, then run the CDK tests",
        path.display()
    );
}

/// Only the issuer signs tokens: no service reads a signing secret or a private key from its
/// settings (`command-api mint-token` takes the issuer's key file on its command line; it is
/// tooling, not the server). The flows read a service token, not a key.
#[test]
fn no_service_reads_a_signing_key() {
    for (binary, keys) in keys_of_every_binary() {
        for key in keys {
            let env = key.env.to_ascii_uppercase();
            assert!(
                !["SECRET", "SIGNING", "PRIVATE"]
                    .iter()
                    .any(|word| env.contains(word)),
                "{binary} reads {env}: a signing key belongs to the issuer only"
            );
        }
    }
}

#[test]
fn a_deployment_must_set_the_secrets_and_nothing_that_has_a_default() {
    let keys = keys_of_every_binary();
    let required = |binary: &str| -> Vec<&str> {
        keys[binary]
            .iter()
            .filter(|key| key.required)
            .map(|key| key.env.as_str())
            .collect()
    };
    // Where the issuer's public keys are has no built-in value: every deployment names its own.
    assert!(required("command-api").contains(&"ORDERPIPE_AUTH__JWKS_URL"));
    assert!(required("dashboard").contains(&"ORDERPIPE_AUTH__JWKS_URL"));
    // Tuning with a default in code is never required.
    for binary in keys.keys() {
        assert!(
            !required(binary)
                .iter()
                .any(|key| key.starts_with("ORDERPIPE_LOG__")),
            "{binary}: {:?}",
            required(binary)
        );
    }
}
