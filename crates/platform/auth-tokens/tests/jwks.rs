//! Verification against a JWKS, as a verifier process sees it: tokens signed by the published
//! key pass; tokens signed by any other key, naming an unknown key, expired, or forged with
//! another algorithm are refused; the keys refresh from a file or an HTTP URL, pick up a
//! rotated key, and survive a JWKS that is gone or stalls.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_tokens::{
    publish_key, AuthError, AuthSettings, Claims, Principal, Role, SigningKey, TokenAuthority,
    TokenIssuer,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const ISSUER: &str = "orderpipe";
const AUDIENCE: &str = "orderpipe-api";

/// A directory of its own for one test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "auth-tokens-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn jwks(&self) -> PathBuf {
        self.0.join("jwks.json")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(jwks_url: &str) -> AuthSettings {
    let mut settings = AuthSettings::new(jwks_url, ISSUER, AUDIENCE);
    // Early refetches may follow each other at once here; the production default waits 30 s.
    settings.jwks_min_refetch_secs = 0;
    settings.jwks_fetch_timeout_ms = 500;
    settings
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn mint(issuer: &TokenIssuer) -> String {
    issuer
        .mint("saga", Role::Service, None, Duration::from_secs(600))
        .unwrap()
}

fn refused(authority: &TokenAuthority, token: &str) -> String {
    match authority.authenticate(Some(&bearer(token))) {
        Err(AuthError::Unauthenticated(message)) => message,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

/// An authority on a JWKS file holding `key`.
async fn authority_on_file(scratch: &Scratch, key: &SigningKey) -> TokenAuthority {
    publish_key(&scratch.jwks(), key).unwrap();
    TokenAuthority::connect(&settings(scratch.jwks().to_str().unwrap()))
        .await
        .unwrap()
}

/// Tries `check` until it holds or `within` passes (the refresh runs in the background).
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

#[tokio::test]
async fn a_token_signed_by_the_published_key_authenticates() {
    let scratch = Scratch::new("published");
    let key = SigningKey::generate().unwrap();
    let authority = authority_on_file(&scratch, &key).await;
    let token = TokenIssuer::new(&key, ISSUER, AUDIENCE)
        .mint("ana", Role::Barista, Some("s1"), Duration::from_secs(60))
        .unwrap();
    let (principal, until) = authority.authenticate_until(Some(&bearer(&token))).unwrap();
    assert_eq!(principal.role(), Role::Barista);
    // 60 s of validity, 5 s of leeway, and the second in which the clock reaches the end.
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(64) && left <= Duration::from_secs(66),
        "{left:?}"
    );
    assert!(
        authority.authenticate(Some(&bearer(&token))).is_ok(),
        "and again, remembered"
    );
}

#[tokio::test]
async fn a_token_signed_by_a_key_not_in_the_jwks_is_refused() {
    let scratch = Scratch::new("foreign");
    let published = SigningKey::generate().unwrap();
    let authority = authority_on_file(&scratch, &published).await;
    let foreign = SigningKey::generate().unwrap();

    // Signed by another key under its own kid: an unknown key.
    let token = mint(&TokenIssuer::new(&foreign, ISSUER, AUDIENCE));
    assert_eq!(
        refused(&authority, &token),
        "token signed with an unknown key"
    );

    // Signed by another key but claiming the published key's kid: a bad signature.
    let token = mint(&TokenIssuer::new(&foreign, ISSUER, AUDIENCE));
    let forged = with_header(
        &token,
        &format!(
            r#"{{"typ":"JWT","alg":"ES256","kid":"{}"}}"#,
            published.kid()
        ),
    );
    let forged = resign_with(&forged, &foreign);
    assert_eq!(refused(&authority, &forged), "token signature invalid");
}

#[tokio::test]
async fn an_expired_a_foreign_issuer_and_a_storeless_staff_token_are_refused() {
    let scratch = Scratch::new("claims");
    let key = SigningKey::generate().unwrap();
    let authority = authority_on_file(&scratch, &key).await;
    let issuer = TokenIssuer::new(&key, ISSUER, AUDIENCE);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |iss: &str, aud: &str, exp: u64, role: Role| Claims {
        sub: "ana".into(),
        role,
        store_id: None,
        iss: iss.into(),
        aud: aud.into(),
        iat: now - 7200,
        exp,
    };
    let cases = [
        (
            claims(ISSUER, AUDIENCE, now - 3600, Role::Service),
            "token expired",
        ),
        (
            claims("elsewhere", AUDIENCE, now + 600, Role::Service),
            "token from an unknown issuer",
        ),
        (
            claims(ISSUER, "another-api", now + 600, Role::Service),
            "token for another audience",
        ),
        (
            claims(ISSUER, AUDIENCE, now + 600, Role::Barista),
            "token invalid: staff tokens need a store_id",
        ),
    ];
    for (claims, expected) in cases {
        let token = issuer.sign(&claims).unwrap();
        assert_eq!(refused(&authority, &token), expected, "{claims:?}");
    }
    assert_eq!(refused(&authority, "not-a-jwt"), "token invalid");
    assert_eq!(
        authority.authenticate(None).unwrap_err(),
        AuthError::Unauthenticated("missing bearer token".into())
    );
    assert_eq!(
        authority
            .authenticate(Some("Basic YWxhZGRpbg=="))
            .unwrap_err(),
        AuthError::Unauthenticated("authorization must be 'Bearer <token>'".into())
    );
}

#[tokio::test]
async fn tokens_forged_with_another_algorithm_are_refused() {
    let scratch = Scratch::new("alg");
    let key = SigningKey::generate().unwrap();
    let authority = authority_on_file(&scratch, &key).await;
    let claims = claims_of(&mint(&TokenIssuer::new(&key, ISSUER, AUDIENCE)));

    // HS256 with the public key (as anyone can read it from the JWKS) as the HMAC secret.
    for secret in [
        key.public_jwk().to_string().into_bytes(),
        std::fs::read(scratch.jwks()).unwrap(),
        URL_SAFE_NO_PAD
            .decode(key.public_jwk()["x"].as_str().unwrap())
            .unwrap(),
    ] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(
            refused(&authority, &token),
            "token algorithm does not match its key"
        );
    }

    // `alg: none`, no signature.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, key.kid())),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    assert_eq!(refused(&authority, &unsigned), "token invalid");

    // No kid at all.
    let token = mint(&TokenIssuer::new(&key, ISSUER, AUDIENCE));
    let kidless = resign_with(&with_header(&token, r#"{"typ":"JWT","alg":"ES256"}"#), &key);
    assert_eq!(
        refused(&authority, &kidless),
        "token invalid: no key id (kid)"
    );
}

#[tokio::test]
async fn a_key_published_after_start_is_picked_up_at_its_first_token() {
    let scratch = Scratch::new("rotate");
    let old = SigningKey::generate().unwrap();
    let authority = authority_on_file(&scratch, &old).await;
    let old_token = mint(&TokenIssuer::new(&old, ISSUER, AUDIENCE));
    assert!(authority.authenticate(Some(&bearer(&old_token))).is_ok());

    // Rotation: the next key is published next to the current one, then signs.
    let new = SigningKey::generate().unwrap();
    publish_key(&scratch.jwks(), &new).unwrap();
    let new_token = mint(&TokenIssuer::new(&new, ISSUER, AUDIENCE));
    // The first token with the new kid asks for an early fetch; a retry passes once it is done.
    let _ = authority.authenticate(Some(&bearer(&new_token)));
    assert!(
        eventually(Duration::from_secs(5), || authority
            .authenticate(Some(&bearer(&new_token)))
            .is_ok())
        .await,
        "the rotated key was never picked up"
    );
    assert!(
        authority.authenticate(Some(&bearer(&old_token))).is_ok(),
        "old key still published"
    );

    // The old key is withdrawn: its tokens stop passing, remembered ones included.
    let only_new = serde_json::json!({ "keys": [new.public_jwk()] });
    std::fs::write(scratch.jwks(), only_new.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            // A token with an unknown kid asks for a fetch; the withdrawn key's token then fails.
            let stranger = TokenIssuer::new(&SigningKey::generate().unwrap(), ISSUER, AUDIENCE);
            let _ = authority.authenticate(Some(&bearer(&mint(&stranger))));
            authority.authenticate(Some(&bearer(&old_token))).is_err()
        })
        .await,
        "a withdrawn key's token was still accepted"
    );
    assert!(authority.authenticate(Some(&bearer(&new_token))).is_ok());
}

#[tokio::test]
async fn a_jwks_that_cannot_be_read_at_start_is_an_error_naming_it() {
    let scratch = Scratch::new("missing");
    let error = TokenAuthority::connect(&settings(scratch.jwks().to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("jwks.json"), "{error}");
    std::fs::write(
        scratch.jwks(),
        r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    let error = TokenAuthority::connect(&settings(scratch.jwks().to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no usable signing key"),
        "{error}"
    );
}

/// A JWKS served over HTTP by a test server whose document and behaviour the test changes.
struct JwksServer {
    address: SocketAddr,
    document: Arc<Mutex<Option<String>>>,
    stall: Arc<Mutex<bool>>,
    fetches: Arc<Mutex<u32>>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        let document = Arc::new(Mutex::new(Some(document)));
        let stall = Arc::new(Mutex::new(false));
        let fetches = Arc::new(Mutex::new(0));
        let (doc, st, count) = (document.clone(), stall.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (doc, st, count) = (doc.clone(), st.clone(), count.clone());
                async move {
                    *count.lock().unwrap() += 1;
                    if *st.lock().unwrap() {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    match doc.lock().unwrap().clone() {
                        Some(body) => (axum::http::StatusCode::OK, body),
                        None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            address,
            document,
            stall,
            fetches,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.address)
    }

    fn fetches(&self) -> u32 {
        *self.fetches.lock().unwrap()
    }
}

fn jwks_of(keys: &[&SigningKey]) -> String {
    let keys: Vec<_> = keys.iter().map(|key| key.public_jwk().clone()).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn keys_from_a_url_refresh_and_the_last_good_keys_outlive_a_failing_or_stalled_jwks() {
    let first = SigningKey::generate().unwrap();
    let server = JwksServer::start(jwks_of(&[&first])).await;
    let mut settings = settings(&server.url());
    settings.jwks_refresh_secs = 1;
    let authority = TokenAuthority::connect(&settings).await.unwrap();
    let first_token = mint(&TokenIssuer::new(&first, ISSUER, AUDIENCE));
    assert!(authority.authenticate(Some(&bearer(&first_token))).is_ok());

    // The JWKS answers 503, then stalls: each fetch gives up after its timeout, the keys stay.
    *server.document.lock().unwrap() = None;
    let before = server.fetches();
    assert!(eventually(Duration::from_secs(5), || server.fetches() >= before + 2).await);
    *server.stall.lock().unwrap() = true;
    let before = server.fetches();
    assert!(
        eventually(Duration::from_secs(5), || server.fetches() >= before + 2).await,
        "a stalled fetch held up the refresh (its timeout is 500 ms)"
    );
    let fresh = mint(&TokenIssuer::new(&first, ISSUER, AUDIENCE));
    assert!(
        authority.authenticate(Some(&bearer(&fresh))).is_ok(),
        "the last good keys were dropped"
    );

    // Back, with a rotated key set: the scheduled refresh picks it up.
    let second = SigningKey::generate().unwrap();
    *server.document.lock().unwrap() = Some(jwks_of(&[&second]));
    *server.stall.lock().unwrap() = false;
    let second_token = mint(&TokenIssuer::new(&second, ISSUER, AUDIENCE));
    assert!(
        eventually(Duration::from_secs(5), || authority
            .authenticate(Some(&bearer(&second_token)))
            .is_ok())
        .await
    );
    assert!(authority.authenticate(Some(&bearer(&first_token))).is_err());
}

#[tokio::test]
async fn tokens_with_made_up_key_ids_fetch_the_jwks_at_most_once_per_interval() {
    let key = SigningKey::generate().unwrap();
    let server = JwksServer::start(jwks_of(&[&key])).await;
    let mut settings = settings(&server.url());
    settings.jwks_min_refetch_secs = 1;
    let authority = TokenAuthority::connect(&settings).await.unwrap();
    let started = Instant::now();
    let mut asked = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let stranger = SigningKey::generate().unwrap();
        let _ = authority.authenticate(Some(&bearer(&mint(&TokenIssuer::new(
            &stranger, ISSUER, AUDIENCE,
        )))));
        asked += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The start's fetch, then at most one per second of the 2.5 s.
    let fetches = server.fetches();
    assert!(asked > 100, "{asked}");
    assert!(
        (2..=4).contains(&fetches),
        "{fetches} fetches for {asked} unknown kids"
    );
    assert!(matches!(
        authority.authenticate(Some(&bearer(&mint(&TokenIssuer::new(
            &key, ISSUER, AUDIENCE
        ))))),
        Ok(Principal::Service(_))
    ));
}

// Helpers that take a token apart: the parts are base64url JSON.

fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn with_header(token: &str, header: &str) -> String {
    let mut parts = token.split('.');
    let _ = parts.next();
    let payload = parts.next().unwrap();
    format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header))
}

/// Signs `header.payload.` anew with `key` (ES256), whatever the header says.
fn resign_with(unsigned: &str, key: &SigningKey) -> String {
    let signing_input = unsigned.trim_end_matches('.');
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.to_pem().as_bytes()).unwrap();
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &encoding,
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap();
    format!("{signing_input}.{signature}")
}
