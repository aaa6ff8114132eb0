//! JWT auth at the edge, end to end: a real gateway on the sample topology
//! with test issuers, wiremock units behind it. Every refusal has its own
//! test and answer (401 with an RFC 6750 challenge, 400, 403); a valid
//! token routes by its user claim and reaches the unit as `x-auth-*`
//! headers the client cannot forge.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{now, start};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use unitgate_tests::gateway::{client, Gateway, Units};

const RSA_PRIVATE: &str = include_str!("fixtures/jwt/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/jwt/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("fixtures/jwt/ec-private.pem");
const OTHER_EC_PRIVATE: &str = include_str!("fixtures/jwt/other-ec-private.pem");
const OTHER_EC_JWK: &str = include_str!("fixtures/jwt/other-ec-public.jwk.json");
const JWKS: &str = include_str!("fixtures/jwt/jwks.json");

/// The sample topology plus two test issuers and routes using them.
fn topology(units: &Units) -> String {
    let jwks: Value = serde_json::from_str(JWKS).unwrap();
    let other: Value = serde_json::from_str(OTHER_EC_JWK).unwrap();
    let hosts = r#"["*.example.com", localhost, 127.0.0.1]"#;
    format!(
        r#"{}
auth/issuers/corp: {{"iss": "https://id.example.com", "aud": ["api"], "algs": ["RS256", "ES256"], "jwks": {jwks}, "tenant_claim": "tenant", "cookie": "id_token", "max_token_bytes": 4096}}
auth/issuers/partner: {{"iss": "https://partner.example", "algs": ["ES256"], "jwks": {{"keys": [{other}]}}}}
routes/secure: {{hosts: {hosts}, path_prefix: /secure, service: orders, policy: shard, auth: required, issuers: [corp], listener: both}}
routes/admin: {{hosts: {hosts}, path_prefix: /admin, service: orders, policy: shard, auth: required, issuers: [corp], require_claims: {{scope: admin}}}}
routes/maybe: {{hosts: {hosts}, path_prefix: /maybe, service: orders, policy: shard, auth: optional, issuers: [corp]}}
routes/partner: {{hosts: {hosts}, path_prefix: /partner, service: orders, policy: shard, auth: required, issuers: [partner]}}
routes/both: {{hosts: {hosts}, path_prefix: /both, service: orders, policy: shard, auth: required}}
"#,
        units.topology(&[])
    )
}

fn claims() -> Value {
    json!({"iss": "https://id.example.com", "aud": "api", "sub": "42", "tenant": "t1", "exp": now() + 600})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, pem: &str) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(pem.as_bytes()),
    };
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn rs(claims: &Value) -> String {
    sign(Algorithm::RS256, Some("rsa-1"), claims, RSA_PRIVATE)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

struct Answer {
    status: u16,
    served_by: String,
    challenge: String,
    body: Value,
}

async fn call(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut r = client().get(gw.url(path)).header("host", "api.example.com");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, served_by, challenge) = (
        resp.status().as_u16(),
        h("x-unit-served-by"),
        h("www-authenticate"),
    );
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        served_by,
        challenge,
        body,
    }
}

async fn bearer(gw: &Gateway, path: &str, token: &str) -> Answer {
    call(gw, path, &[("authorization", &format!("Bearer {token}"))]).await
}

/// `token` on /secure is refused: 401 `invalid_token` saying `why`.
async fn refused(gw: &Gateway, token: &str, why: &str) {
    let a = bearer(gw, "/secure/1", token).await;
    assert_eq!(a.status, 401, "{token}: {:?}", a.body);
    assert_eq!(
        a.challenge,
        format!("Bearer error=\"invalid_token\", error_description=\"{why}\""),
        "{token}"
    );
    assert_eq!(a.body["error"], "invalid_token");
    assert_eq!(a.body["detail"], why);
}

async fn gateway() -> (Units, Gateway, tempfile::TempDir) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(topology(&units), dir.path()).await;
    (units, gw, dir)
}

#[tokio::test]
async fn a_valid_token_routes_by_its_user_claim_and_reaches_the_unit_as_verified_identity() {
    let (units, gw, _dir) = gateway().await;
    // sub 42 is shard 42 (bj-2); the user header says 60 (sh-1): the claim wins.
    let token = rs(&claims());
    let a = call(
        &gw,
        "/secure/1",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "60"),
            ("x-auth-user", "admin"),
            ("x-auth-tenant", "root"),
        ],
    )
    .await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "bj-2"));
    let got = units.received("bj-2", "orders").await;
    let h = |n: &str| {
        got[0]
            .headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(h("x-auth-user").as_deref(), Some("42"));
    assert_eq!(h("x-auth-tenant").as_deref(), Some("t1"));
    assert_eq!(h("x-auth-issuer").as_deref(), Some("corp"));
    assert_eq!(got[0].headers.get_all("x-auth-user").iter().count(), 1);
    // ES256 from the same issuer; the lowercase scheme too.
    let es = sign(Algorithm::ES256, Some("ec-1"), &claims(), EC_PRIVATE);
    let a = call(
        &gw,
        "/secure/2",
        &[("authorization", &format!("bearer {es}"))],
    )
    .await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "bj-2"));
    // A route without auth: forged identity headers never reach the unit.
    let a = call(
        &gw,
        "/orders/1",
        &[
            ("x-user-id", "60"),
            ("x-auth-user", "admin"),
            ("x-auth-issuer", "corp"),
        ],
    )
    .await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "sh-1"));
    let got = units.received("sh-1", "orders").await;
    assert!(got[0].headers.get("x-auth-user").is_none());
    assert!(got[0].headers.get("x-auth-issuer").is_none());
    // Nor on the internal listener.
    let r = client()
        .get(gw.internal_url("/orders/2"))
        .header("host", "api.example.com")
        .header("x-user-id", "60")
        .header("x-auth-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = units.received("sh-1", "orders").await;
    assert!(got.iter().all(|r| r.headers.get("x-auth-user").is_none()));
}

#[tokio::test]
async fn no_token_on_a_required_route_is_401_without_an_error_code() {
    let (units, gw, _dir) = gateway().await;
    for headers in [vec![], vec![("authorization", "Basic dXNlcjpwYXNz")]] {
        let a = call(&gw, "/secure/1", &headers).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.challenge, "Bearer");
        assert_eq!(a.body["error"], "unauthorized");
    }
    // Optional: served without an identity.
    let a = call(&gw, "/maybe/1", &[("x-user-id", "60")]).await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "sh-1"));
    let got = units.received("sh-1", "orders").await;
    assert!(got[0].headers.get("x-auth-user").is_none());
    // Optional with a token: verified, routed by it.
    let a = bearer(&gw, "/maybe/1", &rs(&claims())).await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "bj-2"));
    // Optional with a bad token: refused, not served anonymously.
    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    assert_eq!(bearer(&gw, "/maybe/1", &rs(&c)).await.status, 401);
    // Nothing refused reached a unit.
    let bj2 = units.received("bj-2", "orders").await;
    assert_eq!(bj2.len(), 1);
}

#[tokio::test]
async fn the_token_may_come_in_the_issuers_cookie() {
    let (_units, gw, _dir) = gateway().await;
    let t = rs(&claims());
    let a = call(
        &gw,
        "/secure/1",
        &[("cookie", &format!("theme=dark; id_token={t}"))],
    )
    .await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "bj-2"));
    let a = call(&gw, "/secure/1", &[("cookie", "other_token=abc")]).await;
    assert_eq!((a.status, a.challenge.as_str()), (401, "Bearer"));
}

#[tokio::test]
async fn alg_none_in_any_letter_case_is_refused() {
    let (_units, gw, _dir) = gateway().await;
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": none, "kid": "rsa-1"})),
            b64(&claims())
        );
        refused(&gw, &t, "the token's algorithm is not accepted").await;
    }
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    let (_units, gw, _dir) = gateway().await;
    let t = sign(Algorithm::HS256, Some("rsa-1"), &claims(), RSA_PUBLIC);
    refused(&gw, &t, "the token's algorithm is not accepted").await;
}

#[tokio::test]
async fn unknown_and_unplain_key_ids_are_refused() {
    let (_units, gw, _dir) = gateway().await;
    let t = sign(Algorithm::RS256, Some("rsa-9"), &claims(), RSA_PRIVATE);
    refused(&gw, &t, "the token's key id is unknown").await;
    for kid in [
        "../../etc/passwd",
        "rsa-1' OR '1'='1",
        "rsa-1;rm -rf",
        "a b",
    ] {
        let t = sign(Algorithm::RS256, Some(kid), &claims(), RSA_PRIVATE);
        refused(&gw, &t, "the token has no usable key id").await;
    }
    let t = sign(Algorithm::RS256, None, &claims(), RSA_PRIVATE);
    refused(&gw, &t, "the token has no usable key id").await;
}

#[tokio::test]
async fn keys_the_token_points_to_or_embeds_are_ignored() {
    let (_units, gw, _dir) = gateway().await;
    let attacker: Value = serde_json::from_str(OTHER_EC_JWK).unwrap();
    let header = json!({
        "alg": "ES256", "kid": "ec-1", "jwk": attacker,
        "jku": "http://127.0.0.1:9/jwks.json", "x5u": "http://127.0.0.1:9/cert.pem"
    });
    let message = format!("{}.{}", b64(&header), b64(&claims()));
    let key = EncodingKey::from_ec_pem(OTHER_EC_PRIVATE.as_bytes()).unwrap();
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
    refused(
        &gw,
        &format!("{message}.{sig}"),
        "the token's signature does not verify",
    )
    .await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let (_units, gw, _dir) = gateway().await;
    let mut c = claims();
    c["exp"] = json!(now() - 60);
    refused(&gw, &rs(&c), "the token has expired").await;
    let mut c = claims();
    c["nbf"] = json!(now() + 300);
    refused(&gw, &rs(&c), "the token is not valid yet").await;
    // Within the 30 s leeway: accepted.
    let mut c = claims();
    c["exp"] = json!(now() - 5);
    c["nbf"] = json!(now() + 5);
    assert_eq!(bearer(&gw, "/secure/1", &rs(&c)).await.status, 200);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    refused(&gw, &rs(&c), "the token has no expiry").await;
}

#[tokio::test]
async fn wrong_or_missing_issuer_and_audience_are_refused() {
    let (_units, gw, _dir) = gateway().await;
    for (claim, value, why) in [
        (
            "iss",
            Some(json!("https://evil.example")),
            "the token is from another issuer",
        ),
        ("iss", None, "the token is from another issuer"),
        (
            "aud",
            Some(json!("other")),
            "the token is for another audience",
        ),
        ("aud", None, "the token is for another audience"),
    ] {
        let mut c = claims();
        match value {
            Some(v) => c[claim] = v,
            None => {
                c.as_object_mut().unwrap().remove(claim);
            }
        }
        refused(&gw, &rs(&c), why).await;
    }
}

#[tokio::test]
async fn bad_signatures_and_malformed_tokens_are_refused() {
    let (_units, gw, _dir) = gateway().await;
    let good = rs(&claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut c = claims();
    c["sub"] = json!("1");
    parts[1] = b64(&c);
    refused(
        &gw,
        &parts.join("."),
        "the token's signature does not verify",
    )
    .await;
    for bad in [
        "a.b",
        "a.b.c",
        "!!!.e30.",
        "e30.e30.",
        "eyJhbGciOiJSUzI1NiJ9.%%%.x",
    ] {
        let a = bearer(&gw, "/secure/1", bad).await;
        assert_eq!(a.status, 401, "{bad}");
        assert!(
            a.challenge.starts_with("Bearer error=\"invalid_token\""),
            "{bad}: {}",
            a.challenge
        );
    }
    // Claims that are not JSON, under a good signature.
    let message = format!(
        "{}.bm90IGpzb24",
        b64(&json!({"alg": "RS256", "kid": "rsa-1"}))
    );
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
    refused(&gw, &format!("{message}.{sig}"), "the token is malformed").await;
    // A credential that is not one bearer token: 400 invalid_request.
    for value in ["Bearer", "Bearer a b"] {
        let a = call(&gw, "/secure/1", &[("authorization", value)]).await;
        assert_eq!(a.status, 400, "{value}");
        assert!(a.challenge.starts_with("Bearer error=\"invalid_request\""));
    }
    let r = client()
        .get(gw.url("/secure/1"))
        .header("host", "api.example.com")
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_token_over_the_issuers_size_cap_is_refused() {
    let (_units, gw, _dir) = gateway().await;
    let mut c = claims();
    c["pad"] = json!("x".repeat(4096));
    refused(&gw, &rs(&c), "the token is larger than 4096 bytes").await;
}

#[tokio::test]
async fn a_token_of_one_issuer_is_refused_on_a_route_that_trusts_another() {
    let (_units, gw, _dir) = gateway().await;
    let corp = rs(&claims());
    let mut c = claims();
    c["iss"] = json!("https://partner.example");
    let partner = sign(Algorithm::ES256, Some("ec-1"), &c, OTHER_EC_PRIVATE);
    assert_eq!(bearer(&gw, "/partner/1", &partner).await.status, 200);
    // corp's token on partner's route, partner's on corp's.
    let a = bearer(&gw, "/partner/1", &corp).await;
    assert_eq!(a.status, 401);
    assert!(a.challenge.contains("error=\"invalid_token\""));
    refused(&gw, &partner, "the token's signature does not verify").await;
    // A route trusting both picks by the token's iss.
    assert_eq!(bearer(&gw, "/both/1", &corp).await.status, 200);
    assert_eq!(bearer(&gw, "/both/1", &partner).await.status, 200);
    let mut c = claims();
    c["iss"] = json!("https://nobody.example");
    let a = bearer(&gw, "/both/1", &rs(&c)).await;
    assert_eq!(a.body["detail"], "the token is from another issuer");
}

#[tokio::test]
async fn a_valid_token_without_the_routes_required_claim_is_403() {
    let (units, gw, _dir) = gateway().await;
    let a = bearer(&gw, "/admin/1", &rs(&claims())).await;
    assert_eq!(a.status, 403);
    assert!(a
        .challenge
        .starts_with("Bearer error=\"insufficient_scope\""));
    assert_eq!(a.body["error"], "forbidden");
    let mut c = claims();
    c["scope"] = json!("read admin");
    let a = bearer(&gw, "/admin/1", &rs(&c)).await;
    assert_eq!((a.status, a.served_by.as_str()), (200, "bj-2"));
    assert_eq!(units.received("bj-2", "orders").await.len(), 1);
}

#[tokio::test]
async fn a_refusal_keeps_the_connection_unless_a_body_came_with_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_units, gw, _dir) = gateway().await;
    let addr = common::public(&gw);
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /secure/1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(common::keepalive_status(&mut s).await, 401);
    s.write_all(b"GET /orders/1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(common::keepalive_status(&mut s).await, 200);
    // A body the gateway did not read: answered, then closed (never
    // drained while the connection waits, never read as a request).
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /secure/1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 100\r\n\r\nGET /orders/1 HTTP/1.1\r\n")
        .await
        .unwrap();
    assert_eq!(common::keepalive_status(&mut s).await, 401);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was closed");
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
        "{rest:?}"
    );
}
