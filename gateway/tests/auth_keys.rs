//! Issuer keys changing under traffic: a JWK set rotated in etcd (old and
//! new key both accepted during the overlap, no request failing, then the
//! old one refused), and a set fetched from a `jwks_uri` (a wiremock
//! server): fetched in the background, kept through the server's outage,
//! fetched early, at most once per interval, for an unknown key id.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{now, start, BIN};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use unitgate_tests::gateway::{client, Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, Etcd};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const RSA_PRIVATE: &str = include_str!("fixtures/jwt/rsa-private.pem");
const NEW_EC_PRIVATE: &str = include_str!("fixtures/jwt/other-ec-private.pem");
const NEW_EC_JWK: &str = include_str!("fixtures/jwt/other-ec-public.jwk.json");
const JWKS: &str = include_str!("fixtures/jwt/jwks.json");

/// The old key (`rsa-1`, RS256).
fn old_key() -> Value {
    let set: Value = serde_json::from_str(JWKS).unwrap();
    set["keys"][0].clone()
}

/// The new key (`ec-2`, ES256).
fn new_key() -> Value {
    let mut k: Value = serde_json::from_str(NEW_EC_JWK).unwrap();
    k["kid"] = json!("ec-2");
    k
}

fn token(new: bool) -> String {
    let claims = json!({"iss": "https://id.example.com", "sub": "42", "exp": now() + 600});
    let (alg, kid, key) = if new {
        (
            Algorithm::ES256,
            "ec-2",
            EncodingKey::from_ec_pem(NEW_EC_PRIVATE.as_bytes()).unwrap(),
        )
    } else {
        (
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

fn issuer(keys: &[Value]) -> String {
    json!({"iss": "https://id.example.com", "algs": ["RS256", "ES256"], "jwks": {"keys": keys}})
        .to_string()
}

async fn status(gw: &Gateway, path: &str, token: &str) -> u16 {
    client()
        .get(gw.url(path))
        .header("host", "api.example.com")
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Send `token` in a loop until `stop`; every status not 200 is counted.
fn hammer(
    gw: Arc<Gateway>,
    token: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut sent, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            sent += 1;
            if status(&gw, "/secure/1", &token).await != 200 {
                failed += 1;
            }
        }
        (sent, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotated_in_etcd_overlaps_without_a_failed_request() {
    let etcd = Etcd::start().await.unwrap();
    let units = Units::start().await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    etcd.put_all(&kv).await.unwrap();
    etcd.put("auth/issuers/corp", &issuer(&[old_key()]))
        .await
        .unwrap();
    etcd.put(
        "routes/secure",
        r#"{"hosts":["api.example.com"],"path_prefix":"/secure","service":"orders","policy":"shard","auth":"required","issuers":["corp"]}"#,
    )
    .await
    .unwrap();
    let args = GatewayArgs {
        etcd: Some(etcd.endpoint()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        ..GatewayArgs::default()
    };
    let gw = Arc::new(Gateway::start(Path::new(BIN), args).await.unwrap());
    let (old, new) = (token(false), token(true));
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &old).await == 200,
        "old key accepted"
    );
    assert_eq!(
        status(&gw, "/secure/1", &new).await,
        401,
        "new key not yet published"
    );

    // 1. Publish the new key beside the old one, with the old token in
    //    flight: not one old-token request fails.
    let stop_old = Arc::new(AtomicBool::new(false));
    let old_load = hammer(gw.clone(), old.clone(), stop_old.clone());
    etcd.put("auth/issuers/corp", &issuer(&[old_key(), new_key()]))
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &new).await == 200,
        "new key accepted"
    );
    // Both keys now: the old token's load goes on a little into the overlap.
    for _ in 0..20 {
        assert_eq!(status(&gw, "/secure/1", &new).await, 200);
    }
    stop_old.store(true, Ordering::Relaxed);
    let (sent_old, failed_old) = old_load.await.unwrap();
    assert!(sent_old > 0);
    assert_eq!(
        failed_old, 0,
        "the old token failed {failed_old} of {sent_old} times"
    );
    // 2. Remove the old key, with the new token in flight: not one
    //    new-token request fails, and the old token is refused.
    let stop_new = Arc::new(AtomicBool::new(false));
    let new_load = hammer(gw.clone(), new.clone(), stop_new.clone());
    etcd.put("auth/issuers/corp", &issuer(&[new_key()]))
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &old).await == 401,
        "old key refused"
    );
    stop_new.store(true, Ordering::Relaxed);
    let (sent_new, failed_new) = new_load.await.unwrap();
    assert!(sent_new > 0);
    assert_eq!(
        failed_new, 0,
        "the new token failed {failed_new} of {sent_new} times"
    );
    let r = client()
        .get(gw.url("/secure/1"))
        .header("host", "api.example.com")
        .header("authorization", format!("Bearer {old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"the token's key id is unknown\""
    );
}

/// How many times `server` served the JWK set.
async fn fetches(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/jwks.json")
        .count()
}

async fn serve(server: &MockServer, status: u16, keys: &[Value]) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({"keys": keys})))
        .mount(server)
        .await;
}

async fn fetched_gateway(
    server: &MockServer,
    refresh_s: u64,
) -> (Units, Gateway, tempfile::TempDir) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let topology = format!(
        r#"{}
auth/issuers/far: {{"iss": "https://id.example.com", "algs": ["RS256", "ES256"], "jwks_uri": "{}/jwks.json", "jwks_refresh_s": {refresh_s}}}
routes/secure: {{hosts: [api.example.com], path_prefix: /secure, service: orders, policy: shard, auth: required}}
"#,
        units.topology(&[]),
        server.uri()
    );
    let gw = start(topology, dir.path()).await;
    (units, gw, dir)
}

/// Keys a provider publishes beside its signing keys, which this issuer
/// cannot use: an encryption key, a key for an algorithm it does not list.
fn foreign_keys() -> Vec<Value> {
    let mut enc = old_key();
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    enc.as_object_mut().unwrap().remove("alg");
    let mut other_alg = old_key();
    other_alg["kid"] = json!("ps-1");
    other_alg["alg"] = json!("PS512");
    vec![enc, other_alg]
}

#[tokio::test]
async fn a_fetched_key_set_is_kept_through_the_servers_outage() {
    let server = MockServer::start().await;
    // The usable key among keys for other uses: those are skipped.
    let mut published = foreign_keys();
    published.push(old_key());
    serve(&server, 200, &published).await;
    let (_units, gw, _dir) = fetched_gateway(&server, 1).await;
    let old = token(false);
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &old).await == 200,
        "fetched key accepted"
    );
    // The server fails (500, then a body that is no JWK set): refetched
    // every second, the last good set stays.
    serve(&server, 500, &[]).await;
    eventually!(
        Duration::from_secs(10),
        fetches(&server).await >= 2,
        "refetched during the outage"
    );
    assert_eq!(status(&gw, "/secure/1", &old).await, 200);
    server.reset().await;
    Mock::given(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"keys\": \"garbage\"}"))
        .mount(&server)
        .await;
    eventually!(
        Duration::from_secs(10),
        fetches(&server).await >= 2,
        "refetched garbage"
    );
    assert_eq!(status(&gw, "/secure/1", &old).await, 200);
    // Back with a rotated set: the new key in, the old one out.
    serve(&server, 200, &[new_key()]).await;
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &token(true)).await == 200,
        "rotated key accepted"
    );
    assert_eq!(status(&gw, "/secure/1", &old).await, 401);
}

#[tokio::test]
async fn an_unknown_key_id_fetches_early_at_most_once_per_interval() {
    let server = MockServer::start().await;
    serve(&server, 200, &[old_key()]).await;
    // An hour between periodic fetches: only unknown key ids fetch early.
    let (_units, gw, _dir) = fetched_gateway(&server, 3600).await;
    let old = token(false);
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &old).await == 200,
        "fetched key accepted"
    );
    assert_eq!(fetches(&server).await, 1);
    // The issuer publishes a new key; the first token under it is refused
    // (nothing is fetched on the request path) and fetches the set.
    serve(&server, 200, &[old_key(), new_key()]).await;
    let new = token(true);
    assert_eq!(status(&gw, "/secure/1", &new).await, 401);
    eventually!(
        Duration::from_secs(10),
        status(&gw, "/secure/1", &new).await == 200,
        "new key fetched early"
    );
    let after = fetches(&server).await;
    assert_eq!(after, 1, "one fetch (the server was reset before it)");
    // A flood of forged key ids fetches nothing more within the interval.
    let forged = {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("forged-1".into());
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &h,
            &json!({"iss": "https://id.example.com", "sub": "1", "exp": now() + 60}),
            &key,
        )
        .unwrap()
    };
    let refused = AtomicUsize::new(0);
    for _ in 0..50 {
        if status(&gw, "/secure/1", &forged).await == 401 {
            refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    assert_eq!(refused.load(Ordering::Relaxed), 50);
    // The fetcher looks every second: give it three looks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            fetches(&server).await,
            after,
            "fetched again for a forged key id"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
