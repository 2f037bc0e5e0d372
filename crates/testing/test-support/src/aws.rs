//! AWS SDK configuration for tests: the local emulators, static test credentials, a region, and
//! never the credential chain (which could probe the instance metadata address).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// An SDK config for the emulators of `scripts/stack.sh`: endpoints from
/// `AWS_ENDPOINT_URL_KINESIS` / `_DYNAMODB` / `_SQS` (the stack's env file sets them), static
/// credentials `test`/`test`, region `us-east-1`.
///
/// # Panics
/// When the endpoint variables are missing: run the tests through `scripts/test.sh`, or source
/// `.stack/env` first.
pub async fn aws_test_config() -> SdkConfig {
    for variable in [
        "AWS_ENDPOINT_URL_KINESIS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
    ] {
        assert!(
            std::env::var(variable).is_ok(),
            "{variable} is not set: run scripts/test.sh or source .stack/env"
        );
    }
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "orderpipe-tests",
        ))
        .load()
        .await
}

/// A name no other test uses: `prefix` plus a random suffix (emulator resources are shared by
/// every test, so each test makes its own stream, table or queue).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
