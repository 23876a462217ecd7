//! Verifying identity-provider tokens: RS256 and ES256 signatures as memberd
//! checks them (jsonwebtoken on aws-lc-rs), and a repeated token answered
//! from the verified-token cache.
//!
//! `cargo bench --bench oidc`

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use memberd::service::oidc::{Oidc, OidcSettings};
use serde_json::{Value, json};

fn jwt(alg: &str, kid: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({"iss": "https://idp.example", "sub": "ada", "aud": "memberapi",
        "exp": now + 3600, "iat": now, "email": "ada@example.org"});
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()),
        B64.encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature))
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&["https://idp.example"]);
    v.set_audience(&["memberapi"]);
    v
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa_jwk = json!({"kty": "RSA", "kid": "rsa", "alg": "RS256",
        "n": B64.encode(rsa.public_key().modulus().big_endian_without_leading_zero()),
        "e": B64.encode(rsa.public_key().exponent().big_endian_without_leading_zero())});
    let rsa_token = jwt("RS256", "rsa", |input| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
        sig
    });
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let ec_jwk = json!({"kty": "EC", "kid": "ec", "alg": "ES256", "crv": "P-256",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
    let ec_token = jwt("ES256", "ec", |input| {
        ec.sign(&rng, input).unwrap().as_ref().to_vec()
    });

    let key =
        |jwk: &Value| DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let (rsa_key, ec_key) = (key(&rsa_jwk), key(&ec_jwk));
    let (rs256, es256) = (validation(Algorithm::RS256), validation(Algorithm::ES256));
    c.bench_function("RS256 verify (aws-lc-rs)", |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(&rsa_token, &rsa_key, &rs256).unwrap())
    });
    c.bench_function("ES256 verify (aws-lc-rs)", |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(&ec_token, &ec_key, &es256).unwrap())
    });

    // The verifier itself, with its JWKS served on loopback.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let oidc = runtime.block_on(async {
        let keys = json!({"keys": [rsa_jwk, ec_jwk]});
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(keys) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Oidc::start(OidcSettings {
            issuer: Some("https://idp.example".into()),
            jwks_url: Some(url),
            audience: Some("memberapi".into()),
            algorithms: OidcSettings::parse_algorithms(&[]).unwrap(),
            leeway: Duration::from_secs(60),
        })
        .await
    });
    runtime.block_on(oidc.verify(&rsa_token)).unwrap();
    c.bench_function("repeated token, from the verified-token cache", |b| {
        b.iter(|| runtime.block_on(oidc.verify(&rsa_token)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
