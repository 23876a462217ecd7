//! Bearer tokens from an OpenID Connect provider: a provider on loopback
//! (discovery and JWKS, keys that rotate, an outage on demand) and tokens
//! signed with RS256 and ES256, good ones and every kind of bad one.

mod common;

use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Backend, TestApp, error_code, spawn_app_with};
use memberd::service::oidc::OidcSettings;
use reqwest::StatusCode;
use serde_json::{Value, json};

const AUDIENCE: &str = "memberapi";

#[derive(Default)]
struct ProviderState {
    keys: Vec<Value>,
    down: bool,
    fetches: usize,
}

struct Provider {
    issuer: String,
    state: Arc<Mutex<ProviderState>>,
}

async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(ProviderState::default()));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            get(|State(s): State<Arc<Mutex<ProviderState>>>| async move {
                let mut s = s.lock().unwrap();
                s.fetches += 1;
                if s.down {
                    Err(AxumStatus::SERVICE_UNAVAILABLE)
                } else {
                    Ok(axum::Json(json!({"keys": s.keys})))
                }
            }),
        )
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider { issuer, state }
}

/// A provider's signing key: signs JWTs and publishes itself as a JWK.
enum Key {
    Rsa(RsaKeyPair, String),
    Ec(EcdsaKeyPair, String),
}

impl Key {
    fn rsa(kid: &str) -> Key {
        Key::Rsa(
            RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            kid.into(),
        )
    }

    fn ec(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Key::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap(),
            kid.into(),
        )
    }

    fn jwk(&self) -> Value {
        match self {
            Key::Rsa(pair, kid) => {
                let public = pair.public_key();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero())})
            }
            Key::Ec(pair, kid) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let (alg, kid) = match self {
            Key::Rsa(_, kid) => ("RS256", kid),
            Key::Ec(_, kid) => ("ES256", kid),
        };
        let input = format!(
            "{}.{}",
            B64.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()),
            B64.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match self {
            Key::Rsa(pair, _) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            Key::Ec(pair, _) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", B64.encode(signature))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

struct Fixture {
    app: TestApp,
    provider: Provider,
    rsa: Key,
}

impl Fixture {
    fn claims(&self, sub: &str) -> Value {
        json!({"iss": self.provider.issuer, "sub": sub, "aud": AUDIENCE,
            "exp": now() + 300, "iat": now(), "nbf": now() - 5,
            "email": format!("{sub}@example.org"), "name": "Ada Lovelace"})
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.app
            .http
            .get(self.app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn me(&self, token: &str) -> reqwest::Response {
        self.get("/me", token).await
    }
}

async fn fixture() -> Option<Fixture> {
    fixture_on(Backend::Sqlite).await
}

async fn fixture_on(backend: Backend) -> Option<Fixture> {
    let provider = provider().await;
    let rsa = Key::rsa("rsa-1");
    provider.state.lock().unwrap().keys = vec![rsa.jwk(), Key::ec("ec-1").jwk()];
    let issuer = provider.issuer.clone();
    let app = spawn_app_with(backend, move |s| {
        s.oidc = Some(OidcSettings {
            issuer: Some(issuer),
            jwks_url: None,
            audience: Some(AUDIENCE.into()),
            algorithms: OidcSettings::parse_algorithms(&[]).unwrap(),
            leeway: std::time::Duration::from_secs(60),
        });
    })
    .await?;
    Some(Fixture { app, provider, rsa })
}

#[tokio::test]
async fn a_provider_token_opens_me_and_the_user_appears_on_first_call() {
    let Some(f) = fixture().await else { return };
    let token = f.rsa.sign(&f.claims("ada"));
    let response = f.me(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["source"], "identity_provider");
    assert_eq!(me["user"]["authentik_sub"], "ada");
    assert_eq!(me["user"]["email"], "ada@example.org");
    assert_eq!(me["user"]["display_name"], "Ada Lovelace");
    assert!(
        f.app
            .store
            .user_by_sub(&memberd::model::AuthentikSub::parse("ada").unwrap())
            .await
            .unwrap()
            .is_some()
    );

    // The same token again (from the verified-token cache), and the snapshot.
    assert_eq!(f.me(&token).await.status(), StatusCode::OK);
    let snapshot = f.get("/me/permissions/snapshot", &token).await;
    assert_eq!(snapshot.status(), StatusCode::OK);
    let body: Value = snapshot.json().await.unwrap();
    assert_eq!(body["authentik_sub"], "ada");
    assert!(body["permissions"].is_array());

    // Claims that change keep the user fresh.
    let mut renamed = f.claims("ada");
    renamed["name"] = "Ada King".into();
    let me: Value = f.me(&f.rsa.sign(&renamed)).await.json().await.unwrap();
    assert_eq!(me["user"]["display_name"], "Ada King");
}

#[tokio::test]
async fn es256_tokens_verify_too() {
    let Some(f) = fixture().await else { return };
    let ec = Key::ec("ec-2");
    f.provider.state.lock().unwrap().keys.push(ec.jwk());
    let response = f.me(&ec.sign(&f.claims("grace"))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_tokens_get_a_plain_401_with_a_code() {
    let Some(f) = fixture().await else { return };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = f.claims("eve");
        change(&mut claims);
        f.rsa.sign(&claims)
    };
    let expired = with(&|c| c["exp"] = (now() - 120).into());
    assert_eq!(error_code(f.me(&expired).await).await, "token_expired");
    let cases = [
        (
            "wrong audience",
            with(&|c| c["aud"] = "someone-else".into()),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = "https://evil.example".into()),
        ),
        ("not yet valid", with(&|c| c["nbf"] = (now() + 600).into())),
        (
            "issued in the future",
            with(&|c| c["iat"] = (now() + 600).into()),
        ),
        ("no subject", with(&|c| c["sub"] = "".into())),
    ];
    for (what, token) in cases {
        let response = f.me(&token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(response).await, "invalid_token", "{what}");
    }

    let good = f.rsa.sign(&f.claims("eve"));
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged_claims = f.claims("eve");
    forged_claims["sub"] = "admin".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(forged_claims.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).to_string()),
        parts[1]
    );
    // HMAC confusion: HS256 "signed" with the provider's public key as the secret.
    let hs_input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).to_string()),
        parts[1]
    );
    let Key::Rsa(pair, _) = &f.rsa else {
        unreachable!()
    };
    let secret =
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, pair.public_key().as_ref());
    let hs = format!(
        "{hs_input}.{}",
        B64.encode(aws_lc_rs::hmac::sign(&secret, hs_input.as_bytes()))
    );
    let unknown_kid = Key::rsa("not-published").sign(&f.claims("eve"));
    for (what, token) in [
        ("tampered", tampered),
        ("alg none", none),
        ("HMAC confusion", hs),
        ("unknown kid", unknown_kid),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let response = f.me(&token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(response).await, "invalid_token", "{what}");
    }
    assert!(
        f.app
            .store
            .user_by_sub(&memberd::model::AuthentikSub::parse("admin").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn keys_rotate_without_a_restart() {
    let Some(f) = fixture().await else { return };
    let next = Key::rsa("rsa-2");
    // The provider starts signing with a key memberd has not seen.
    f.provider.state.lock().unwrap().keys = vec![next.jwk()];
    let response = f.me(&next.sign(&f.claims("ivan"))).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "an unknown kid makes one refresh"
    );
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_provider_is_down() {
    let Some(f) = fixture().await else { return };
    let ready: Value = f
        .app
        .http
        .get(f.app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["identity_provider"], "ok");
    f.provider.state.lock().unwrap().down = true;
    // An unknown kid makes memberd try the provider, and find it down.
    let stranger = Key::rsa("rsa-9").sign(&f.claims("judy"));
    assert_eq!(f.me(&stranger).await.status(), StatusCode::UNAUTHORIZED);
    let ready = f.app.http.get(f.app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["identity_provider"], "unreachable");
    let token = f.rsa.sign(&f.claims("judy"));
    assert_eq!(
        f.me(&token).await.status(),
        StatusCode::OK,
        "the key in hand still verifies"
    );
}

#[tokio::test]
async fn memberd_own_tokens_still_open_me_beside_the_provider() {
    let Some(f) = fixture().await else { return };
    let creds = f.app.create_client().await;
    let created = f
        .app
        .admin(&creds, "/admin/accounts")
        .json(&json!({"username": "local", "password": "a long passphrase for tests", "must_change_password": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let tokens: Value = f
        .app
        .http
        .post(f.app.url("/auth/login"))
        .json(&json!({"username": "local", "password": "a long passphrase for tests"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: Value = f
        .me(tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["source"], "session");
    let snapshot = f
        .get(
            "/me/permissions/snapshot",
            tokens["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(snapshot.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_makes_one_refresh() {
    let Some(f) = fixture().await else { return };
    let before = f.provider.state.lock().unwrap().fetches;
    for i in 0..5 {
        let forged = Key::ec(&format!("forged-{i}")).sign(&f.claims("mallory"));
        assert_eq!(f.me(&forged).await.status(), StatusCode::UNAUTHORIZED);
    }
    let after = f.provider.state.lock().unwrap().fetches;
    assert_eq!(
        after - before,
        1,
        "one refresh in ten seconds, whatever the number of kids"
    );
}

#[tokio::test]
async fn a_linked_identity_opens_the_same_user() {
    let Some(f) = fixture().await else { return };
    let creds = f.app.create_client().await;
    f.app.upsert(json!({"authentik_sub": "ada"})).await;
    let link = |subject: &str| {
        f.app
            .admin(&creds, "/admin/users/ada/identities")
            .json(&json!({"issuer": f.provider.issuer, "subject": subject}))
            .send()
    };
    assert_eq!(
        link("ada-pairwise").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        link("ada-pairwise").await.unwrap().status(),
        StatusCode::OK,
        "linking again changes nothing"
    );

    let me: Value = f
        .me(&f.rsa.sign(&f.claims("ada-pairwise")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["user"]["authentik_sub"], "ada",
        "the grants stay with the one user"
    );
    assert!(
        f.app
            .store
            .user_by_sub(&memberd::model::AuthentikSub::parse("ada-pairwise").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // A first sight records the identity; it cannot then be linked to someone else.
    f.me(&f.rsa.sign(&f.claims("bob"))).await;
    let taken = f
        .app
        .admin(&creds, "/admin/users/ada/identities")
        .json(&json!({"issuer": f.provider.issuer, "subject": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(taken).await, "identity_linked_elsewhere");
    // An empty issuer is refused, naming the field.
    let empty = f
        .app
        .admin(&creds, "/admin/users/ada/identities")
        .json(&json!({"issuer": " ", "subject": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = empty.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], "issuer", "{body}");
    let listed: Value = f
        .app
        .http
        .get(f.app.url("/admin/users/ada/identities"))
        .header("X-Client-Key", &creds.client_key)
        .header("X-API-Key", &creds.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["identities"].as_array().unwrap().len(), 1);
}

/// Regression (issue 13, finding 8): a provider token whose subject is a
/// local account's opened `/me` as that operator and rewrote its email.
#[tokio::test]
async fn provider_subjects_never_land_on_operators_or_other_issuers_users() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        provider_subjects_stay_in_their_namespace(backend).await;
    }
}

async fn provider_subjects_stay_in_their_namespace(backend: Backend) {
    let Some(f) = fixture_on(backend).await else {
        return;
    };
    let creds = f.app.create_client().await;
    let created = f
        .app
        .admin(&creds, "/admin/accounts")
        .json(&json!({"username": "root", "password": "a long and unusual passphrase 42", "admin": true, "must_change_password": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let root = memberd::model::AuthentikSub::parse("local:root").unwrap();
    let before = f.app.store.user_by_sub(&root).await.unwrap().unwrap();

    let forged = f.me(&f.rsa.sign(&f.claims("local:root"))).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(forged).await, "invalid_token");
    let after = f.app.store.user_by_sub(&root).await.unwrap().unwrap();
    assert_eq!(
        after.email, before.email,
        "the operator's email is untouched"
    );

    // A user linked to another issuer is not this provider's to speak for.
    f.app.upsert(json!({"authentik_sub": "carol"})).await;
    let linked = f
        .app
        .admin(&creds, "/admin/users/carol/identities")
        .json(&json!({"issuer": "https://other-idp.example", "subject": "carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), StatusCode::CREATED);
    let other = f.me(&f.rsa.sign(&f.claims("carol"))).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);

    // A plain directory user (upserted by subject) is still found on first sight.
    f.app.upsert(json!({"authentik_sub": "dave"})).await;
    assert_eq!(
        f.me(&f.rsa.sign(&f.claims("dave"))).await.status(),
        StatusCode::OK
    );
}
