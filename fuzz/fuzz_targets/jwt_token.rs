//! User tokens: any bytes as a bearer token, and HS256-signed tokens whose header and
//! claims are fuzzed (so the fuzzer gets past the signature into header and claim
//! handling). Never panics; never accepts a token it cannot verify (`alg: none`,
//! algorithm confusion, a kid pointing elsewhere); an accepted token has a valid
//! `sub`, a numeric unexpired `exp`, and the configured issuer and audience.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use orgd::auth::jwt::{JwksSource, JwtSettings, JwtVerifier};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "fuzz-hs256-secret";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orgd";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: JwtVerifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwks.json");
        let verifier = runtime.block_on(JwtVerifier::new(JwtSettings {
            hs256_secret: Some(SECRET.into()),
            jwks: Some(JwksSource::File(jwks.into())),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            roles_claim: "roles".into(),
            mfa_acr: Some("mfa".into()),
        }));
        Fixture { runtime, verifier }
    })
}

fn hs256_token(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    if mode % 2 == 0 {
        // Raw bytes: nothing unsigned or forged can pass.
        let token = String::from_utf8_lossy(rest);
        let verdict = f.runtime.block_on(f.verifier.verify(&token));
        assert!(verdict.is_err(), "accepted an unsigned token: {token:?}");
        return;
    }
    let split = rest.iter().position(|b| *b == 0xff).unwrap_or(rest.len());
    let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let token = hs256_token(header, claims);
    let Ok(user) = f.runtime.block_on(f.verifier.verify(&token)) else {
        return;
    };
    // Only HS256 is signed with the secret; anything else claiming to be
    // verified was algorithm confusion.
    // jsonwebtoken skips unknown header members without decoding them, so bytes
    // that are not UTF-8 there are accepted under a valid signature (the first
    // finding of this target; see tests/auth_tokens.rs): read the header leniently.
    let header: Value = serde_json::from_str(&String::from_utf8_lossy(header))
        .expect("an accepted header is JSON");
    assert_eq!(header["alg"], "HS256", "accepted header {header}");
    let claims: Value = serde_json::from_slice(claims).expect("accepted claims are JSON");
    assert_eq!(claims["sub"].as_str(), Some(user.id.as_str()));
    assert_eq!(claims["iss"], ISSUER);
    let aud_ok = claims["aud"] == AUDIENCE
        || claims["aud"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == AUDIENCE));
    assert!(aud_ok, "accepted audience {}", claims["aud"]);
    let exp = claims["exp"]
        .as_u64()
        .expect("an accepted exp is a NumericDate");
    let now = jiff::Timestamp::now().as_second() as u64;
    assert!(exp + 120 >= now, "accepted an expired token (exp {exp})");
});
