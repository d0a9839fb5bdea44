//! The gateway over real sockets: in front of the real write API (in-process, on its dev-mode queue and a
//! SQLite event store) for auth, and in front of small test upstreams that fail or hang on demand for the
//! breaker and retry rules. Rate limits shared by two gateways use the test Redis server.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use gateway::limit::Limiter;
use gateway::{Gateway, GatewayConfig, Runtime};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "gateway-test-secret-0123456789";
type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    addr
}

fn client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new())
}

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: serde_json::Value,
}

async fn send(c: &HttpClient, method: &str, url: String, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut b = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null) }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str, exp: u64, aud: Option<&str>) -> serde_json::Value {
    serde_json::json!({"sub": sub, "exp": exp, "iat": now(), "iss": "socialnet-test", "aud": aud})
}

fn hs(claims: &serde_json::Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn rs(claims: &serde_json::Value, key_file: &str, kid: &str) -> String {
    let pem = std::fs::read(fixtures().join(key_file)).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(&header, claims, &EncodingKey::from_rsa_der(&pem)).unwrap()
}

/// An unsigned token (`alg: none`), and an HS256 token whose secret is the RSA public key's JWKS text
/// (the classic HS/RS confusion).
fn forged() -> (String, String) {
    let b64 = |v: &serde_json::Value| {
        testkit::base64(v.to_string().as_bytes(), true).trim_end_matches('=').to_owned()
    };
    let body = claims("alice", now() + 600, Some("socialnet"));
    let none = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT"})), b64(&body));
    let public = std::fs::read_to_string(fixtures().join("jwks.json")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("test-1".into());
    let confused = encode(&header, &body, &EncodingKey::from_secret(public.as_bytes())).unwrap();
    (none, confused)
}

/// Write a config file (and the secret file it names) into a fresh directory.
fn config_dir(yaml: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::copy(fixtures().join("jwks.json"), dir.path().join("jwks.json")).unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

mod tempdir {
    use std::path::{Path, PathBuf};
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("socialnet-gw-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn yaml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
upstreams:
  api: {{ url: "http://{upstream}", timeout_ms: 300, retries: 1,
         breaker: {{ failure_rate: 0.5, min_requests: 4, window_ms: 5000, open_ms: 400, half_open_probes: 2 }} }}
routes:
  - {{ prefix: /v1/, methods: [GET, HEAD], upstream: api, class: read }}
  - {{ prefix: /v1/, upstream: api, class: write }}
  - {{ prefix: /public/, upstream: api, auth: false }}
auth: {{ hs256_secret_file: secret, jwks_file: jwks.json, issuer: socialnet-test, audience: socialnet }}
cors: {{ allowed_origins: ["https://app.example"], expose_headers: [x-custom] }}
retry_budget: 1.0
{extra}"#
    )
}

const ROOMY: &str = r#"
limits:
  read: { per_user: { requests: 10000 } }
  write: { per_user: { requests: 10000 } }
"#;

async fn gateway(path: &Path, limiter: Limiter) -> (SocketAddr, Arc<Gateway>) {
    let gw = Gateway::new(
        Runtime::load(path).await.unwrap(),
        limiter,
        Bytes::from_static(b"{\"openapi\":\"3.1.0\"}"),
    );
    let ready: http_kit::Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    (serve(gateway::app(gw.clone(), ready)).await, gw)
}

/// The real write API, verifying tokens with the same secret and JWKS as the gateway.
async fn write_api() -> SocketAddr {
    write_api_with(|r| r).await
}

/// The real write API, its router passed through `layer` first (to add span export).
async fn write_api_with(layer: impl FnOnce(Router) -> Router) -> SocketAddr {
    let jwks = std::fs::read_to_string(fixtures().join("jwks.json")).unwrap();
    let verifier = http_kit::JwtVerifier::new(&http_kit::AuthConfig {
        hs256_secret: SECRET.as_bytes().to_vec(),
        issuer: Some("socialnet-test".into()),
        audience: Some("socialnet".into()),
        leeway_secs: 5,
    })
    .with_jwks(&jwks)
    .unwrap();
    let store: Arc<dyn eventstore::EventStore> =
        Arc::new(eventstore::SqliteEventStore::in_memory().await.unwrap());
    let state = write_api::AppState {
        publisher: Arc::new(queue::MemoryQueue::new()),
        commands: Arc::new(write_api::StoreCommandLog { primary: store, backup: None, dead_letters: vec![] }),
        keys: Arc::new(queue::MemoryKeys::new(queue::DEFAULT_RETENTION)),
        verifier: Arc::new(verifier),
    };
    let ready: http_kit::Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    serve(layer(write_api::app(state, ready))).await
}

#[tokio::test]
async fn tokens_are_checked_before_the_write_api_and_by_it() {
    let (_dir, path) = config_dir(&yaml(write_api().await, ROOMY));
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let c = client();
    let post = |token: String| {
        let c = c.clone();
        async move {
            let auth = format!("Bearer {token}");
            send(
                &c,
                "POST",
                format!("http://{gw}/v1/posts"),
                &[("authorization", &auth), ("content-type", "application/json")],
                r#"{"body":"hello"}"#,
            )
            .await
        }
    };
    let good = claims("alice", now() + 600, Some("socialnet"));
    assert_eq!(post(hs(&good, SECRET)).await.status, 202, "HS256 with the secret");
    assert_eq!(post(rs(&good, "rs256-test.key.der", "test-1")).await.status, 202, "RS256 from the JWKS");

    let (none, confused) = forged();
    let cases = [
        ("expired", hs(&claims("alice", now() - 600, Some("socialnet")), SECRET)),
        ("wrong signature", hs(&good, "another-secret-0123456789")),
        ("wrong audience", hs(&claims("alice", now() + 600, Some("elsewhere")), SECRET)),
        ("alg none", none),
        ("HS/RS confusion", confused),
        ("unknown RSA key", rs(&good, "rs256-other.key.der", "test-1")),
        ("unknown kid", rs(&good, "rs256-test.key.der", "nobody")),
        ("garbage", "not.a.token".into()),
    ];
    for (what, token) in cases {
        let a = post(token).await;
        assert_eq!(a.status, 401, "{what}");
        assert_eq!(a.headers["content-type"], "application/problem+json", "{what}");
        assert!(a.headers.contains_key("x-request-id"), "{what}");
    }
    let missing = send(&c, "POST", format!("http://{gw}/v1/posts"), &[], "{}").await;
    assert_eq!(missing.status, 401);

    // A valid token acting as someone else passes the gateway and is refused by the write API.
    let auth = format!("Bearer {}", hs(&good, SECRET));
    let other =
        send(&c, "PUT", format!("http://{gw}/v1/users/bob/following/carol"), &[("authorization", &auth)], "")
            .await;
    assert_eq!(other.status, 403, "{:?}", other.body);
}

/// A test upstream: `/v1/ok` answers 200 (or 500 while `failing`), `/v1/slow` hangs past the timeout while
/// `failing`; every hit is counted.
#[derive(Clone, Default)]
struct Flaky {
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl Flaky {
    fn router(&self) -> Router {
        let (f1, f2, f3) = (self.clone(), self.clone(), self.clone());
        Router::new()
            .route(
                "/v1/ok",
                get(move || {
                    let f = f1.clone();
                    async move {
                        f.hits.fetch_add(1, Ordering::SeqCst);
                        if f.failing.load(Ordering::SeqCst) { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") } else { (axum::http::StatusCode::OK, "ok") }
                    }
                })
                .post(move || {
                    let f = f2.clone();
                    async move {
                        f.hits.fetch_add(1, Ordering::SeqCst);
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    }
                }),
            )
            .route(
                "/v1/slow",
                get(move || {
                    let f = f3.clone();
                    async move {
                        f.hits.fetch_add(1, Ordering::SeqCst);
                        if f.failing.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        "ok"
                    }
                }),
            )
            // Its head at once, then 5 of the 100 bytes it announces, then nothing.
            .route(
                "/v1/stalled-body",
                get(|| async {
                    use futures::StreamExt;
                    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"start"))])
                        .chain(futures::stream::pending());
                    axum::response::Response::builder()
                        .header("content-length", "100")
                        .body(axum::body::Body::from_stream(chunks))
                        .unwrap()
                }),
            )
            .route("/public/echo", get(|headers: axum::http::HeaderMap| async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                axum::Json(serde_json::json!({"traceparent": h("traceparent"), "x-request-id": h("x-request-id")}))
            }))
    }
}

fn bearer() -> String {
    format!("Bearer {}", hs(&claims("alice", now() + 600, Some("socialnet")), SECRET))
}

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_and_recovers_through_half_open() {
    let flaky = Flaky::default();
    let (_dir, path) = config_dir(&yaml(serve(flaky.router()).await, ROOMY));
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let (c, auth) = (client(), bearer());
    let get_ok = || async {
        send(&c, "GET", format!("http://{gw}/v1/ok"), &[("authorization", auth.as_str())], "").await
    };
    assert_eq!(get_ok().await.status, 200);

    flaky.failing.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_ok().await.status);
    }
    assert!(statuses.contains(&500), "failures pass through until it opens: {statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 503, "open within the window: {statuses:?}");
    let hits = flaky.hits.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    let open = get_ok().await;
    assert_eq!(open.status, 503);
    assert!(open.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_millis(50), "open answers at once");
    assert_eq!(flaky.hits.load(Ordering::SeqCst), hits, "nothing reaches the upstream while open");

    flaky.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..3 {
        assert_eq!(get_ok().await.status, 200, "half-open probes, then closed");
    }
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_opens_the_breaker() {
    let flaky = Flaky::default();
    flaky.failing.store(true, Ordering::SeqCst);
    let (_dir, path) = config_dir(&yaml(serve(flaky.router()).await, ROOMY));
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let (c, auth) = (client(), bearer());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send(&c, "GET", format!("http://{gw}/v1/slow"), &[("authorization", &auth)], "").await.status,
        );
    }
    assert!(statuses.contains(&504), "{statuses:?}");
    let started = std::time::Instant::now();
    assert_eq!(
        send(&c, "GET", format!("http://{gw}/v1/slow"), &[("authorization", &auth)], "").await.status,
        503
    );
    assert!(started.elapsed() < Duration::from_millis(100), "no more waiting on the hung upstream");
}

#[tokio::test]
async fn an_answer_whose_body_stalls_times_out_too() {
    let flaky = Flaky::default();
    let (_dir, path) = config_dir(&yaml(serve(flaky.router()).await, ROOMY));
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let (c, auth) = (client(), bearer());
    let started = std::time::Instant::now();
    let answer =
        send(&c, "GET", format!("http://{gw}/v1/stalled-body"), &[("authorization", &auth)], "").await;
    // The upstream timeout is 300 ms and a read is tried twice: a clean 504, not a truncated 200.
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(
        answer.body["detail"].as_str().unwrap_or("").contains("took longer than 300 ms"),
        "{}",
        answer.body
    );
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn only_safe_requests_are_retried() {
    let flaky = Flaky::default();
    flaky.failing.store(true, Ordering::SeqCst);
    // A breaker that stays closed here, so every attempt reaches the upstream and can be counted.
    let config = yaml(serve(flaky.router()).await, ROOMY).replace("min_requests: 4", "min_requests: 100");
    let (_dir, path) = config_dir(&config);
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let (c, auth) = (client(), bearer());
    let url = format!("http://{gw}/v1/ok");
    assert_eq!(send(&c, "POST", url.clone(), &[("authorization", &auth)], "{}").await.status, 500);
    assert_eq!(flaky.hits.swap(0, Ordering::SeqCst), 1, "a write without Idempotency-Key is sent once");
    let keyed = [("authorization", auth.as_str()), ("idempotency-key", "k-1")];
    assert_eq!(send(&c, "POST", url.clone(), &keyed, "{}").await.status, 500);
    assert_eq!(flaky.hits.swap(0, Ordering::SeqCst), 2, "a write with Idempotency-Key is retried once");
    assert_eq!(send(&c, "GET", url, &[("authorization", &auth)], "").await.status, 500);
    assert_eq!(flaky.hits.load(Ordering::SeqCst), 2, "a read is retried once");
}

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let flaky = Flaky::default();
    let (_dir, path) = config_dir(&yaml(serve(flaky.router()).await, ROOMY));
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let c = client();
    let pre = |origin: &'static str| {
        let c = c.clone();
        async move {
            let h = [("origin", origin), ("access-control-request-method", "POST")];
            send(&c, "OPTIONS", format!("http://{gw}/v1/ok"), &h, "").await
        }
    };
    let ok = pre("https://app.example").await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.headers["access-control-allow-origin"], "https://app.example");
    assert!(ok.headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(ok.headers["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert_eq!(ok.headers["access-control-max-age"], "600");
    assert_eq!(flaky.hits.load(Ordering::SeqCst), 0, "preflights never reach the upstream");
    let evil = pre("https://evil.example").await;
    assert!(!evil.headers.contains_key("access-control-allow-origin"));
    assert!(!evil.headers.contains_key("access-control-allow-methods"));

    let auth = bearer();
    let actual = send(
        &c,
        "GET",
        format!("http://{gw}/v1/ok"),
        &[("origin", "https://app.example"), ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(actual.status, 200);
    assert_eq!(actual.headers["access-control-allow-origin"], "https://app.example");
    assert!(actual.headers["access-control-expose-headers"].to_str().unwrap().contains("x-custom"));
    let refused = send(
        &c,
        "GET",
        format!("http://{gw}/v1/ok"),
        &[("origin", "https://evil.example"), ("authorization", &auth)],
        "",
    )
    .await;
    assert!(!refused.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn request_ids_and_traceparent_go_upstream() {
    let flaky = Flaky::default();
    let (_dir, path) = config_dir(&yaml(serve(flaky.router()).await, ROOMY));
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let c = client();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let a = send(
        &c,
        "GET",
        format!("http://{gw}/public/echo"),
        &[("traceparent", &tp), ("x-request-id", "req-42")],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    let sent = a.body["traceparent"].as_str().unwrap();
    assert!(sent.starts_with(&format!("00-{trace}-")), "same trace: {sent}");
    assert!(!sent.contains("00f067aa0ba902b7"), "a new span for the gateway's hop: {sent}");
    assert_eq!(a.body["x-request-id"], "req-42");
    assert_eq!(a.headers["x-request-id"], "req-42");
    let fresh = send(&c, "GET", format!("http://{gw}/public/echo"), &[], "").await;
    assert_eq!(fresh.body["traceparent"].as_str().unwrap().len(), 55, "a new trace when none came");
    assert_eq!(send(&c, "GET", format!("http://{gw}/nowhere"), &[], "").await.status, 404);
}

#[tokio::test]
async fn two_gateways_share_one_redis_limit() {
    let flaky = Flaky::default();
    let limits = r#"
limits:
  read: { per_user: { requests: 1, per_secs: 60, burst: 10 } }
  write: { per_user: { requests: 1000 } }
"#;
    let (_dir, path) = config_dir(&yaml(serve(flaky.router()).await, limits));
    let redis = testkit::env_url("SOCIALNET_TEST_REDIS_URL");
    let (a, _) = gateway(&path, Limiter::redis(&redis).await.unwrap()).await;
    let (b, _) = gateway(&path, Limiter::redis(&redis).await.unwrap()).await;
    // A user of its own, so that runs never share a bucket.
    let me = format!("u{}", uuid::Uuid::new_v4().simple());
    let auth = format!("Bearer {}", hs(&claims(&me, now() + 600, Some("socialnet")), SECRET));
    let c = client();
    let (mut admitted, mut limited) = (0, 0);
    for i in 0..30 {
        let gw = if i % 2 == 0 { a } else { b };
        let r = send(&c, "GET", format!("http://{gw}/v1/ok"), &[("authorization", &auth)], "").await;
        match r.status {
            200 => admitted += 1,
            429 => {
                limited += 1;
                assert!(r.headers.contains_key("retry-after"));
                assert_eq!(r.headers["ratelimit-remaining"], "0");
                assert_eq!(r.headers["content-type"], "application/problem+json");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(admitted, 10, "together no more than the burst");
    assert_eq!(limited, 20);
}

#[tokio::test]
async fn a_changed_config_applies_under_load_and_a_bad_one_is_refused() {
    let flaky = Flaky::default();
    let upstream = serve(flaky.router()).await;
    let (_dir, path) = config_dir(&yaml(upstream, ROOMY));
    let (gw_addr, gw) = gateway(&path, Limiter::local()).await;
    let watcher = tokio::spawn(gateway::watch_config(gw.clone(), path.clone(), Duration::from_millis(50)));
    let auth = bearer();

    // Load: 4 clients reading continuously; every answer must be a 200 or (after the change) a 429.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, auth, stop) = (client(), auth.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(
                    send(&c, "GET", format!("http://{gw_addr}/v1/ok"), &[("authorization", &auth)], "")
                        .await
                        .status,
                );
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&path, "routes: [ this is not yaml").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gw.runtime().config.limits["read"].per_user.unwrap().requests == 10000,
        "bad file refused, old kept"
    );
    let tight = yaml(
        upstream,
        "limits:\n  read: { per_user: { requests: 1, per_secs: 60, burst: 1 } }\n  write: { per_user: { requests: 10 } }\n",
    );
    std::fs::write(&path, tight).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    watcher.abort();
    assert!(
        all.iter().all(|s| *s == 200 || *s == 429),
        "no request failed: {:?}",
        all.iter().filter(|s| **s != 200 && **s != 429).collect::<Vec<_>>()
    );
    assert!(all.iter().filter(|s| **s == 200).count() > 20, "load ran before the change");
    assert!(all.ends_with(&[429]), "the new limit applies");
    assert_eq!(gw.runtime().config.limits["read"].per_user.unwrap().requests, 1);
    let parsed = GatewayConfig::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(parsed, gw.runtime().config);
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_refreshed() {
    let served =
        Arc::new(std::sync::Mutex::new(std::fs::read_to_string(fixtures().join("jwks.json")).unwrap()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (s, f) = (served.clone(), fetches.clone());
    let jwks = serve(Router::new().route(
        "/jwks.json",
        get(move || {
            let (s, f) = (s.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                s.lock().unwrap().clone()
            }
        }),
    ))
    .await;
    let flaky = Flaky::default();
    let config = yaml(serve(flaky.router()).await, ROOMY).replace(
        "jwks_file: jwks.json",
        &format!("jwks_url: \"http://{jwks}/jwks.json\", jwks_refresh_secs: 1"),
    );
    let (_dir, path) = config_dir(&config);
    let (gw_addr, gw) = gateway(&path, Limiter::local()).await;
    let watcher = tokio::spawn(gateway::watch_config(gw.clone(), path.clone(), Duration::from_millis(50)));
    let c = client();
    let good = claims("alice", now() + 600, Some("socialnet"));
    let rs_auth = format!("Bearer {}", rs(&good, "rs256-test.key.der", "test-1"));
    let hs_auth = format!("Bearer {}", hs(&good, SECRET));
    let get_ok = |auth: String| {
        let c = c.clone();
        async move {
            send(&c, "GET", format!("http://{gw_addr}/v1/ok"), &[("authorization", &auth)], "").await.status
        }
    };
    assert_eq!(get_ok(rs_auth.clone()).await, 200, "the key from the URL verifies");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "not fetched at every poll");

    // The identity provider rotates its key away: after the refresh the old key no longer verifies.
    *served.lock().unwrap() = r#"{"keys":[]}"#.into();
    let refused = testkit::eventually(Duration::from_secs(5), || {
        let a = rs_auth.clone();
        let get_ok = &get_ok;
        async move { get_ok(a).await == 401 }
    })
    .await;
    assert!(refused, "the refreshed JWKS applies");
    assert_eq!(get_ok(hs_auth).await, 200, "HS256 tokens are unaffected");

    // An unreachable JWKS keeps the keys already loaded.
    let keys = gw.runtime().verifier.rsa_keys();
    *served.lock().unwrap() = "not json".into();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(gw.runtime().verifier.rsa_keys(), keys);
    watcher.abort();
}

#[tokio::test]
async fn spans_go_to_the_configured_otlp_collector() {
    let collector = testkit::OtlpCollector::start().await;
    let flaky = Flaky::default();
    let endpoint = collector.endpoint();
    let config =
        format!("{}otlp: {{ endpoint: \"{endpoint}\" }}\n", yaml(serve(flaky.router()).await, ROOMY));
    let (_dir, path) = config_dir(&config);
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let c = client();
    let a = send(&c, "GET", format!("http://{gw}/public/echo"), &[("traceparent", &tp)], "").await;
    let sent_upstream = a.body["traceparent"].as_str().unwrap().to_owned();
    let spans = collector.wait_for(1).await;
    let (service, span) = spans.first().cloned().expect("no span reached the collector");
    assert_eq!(service, "socialnet-gateway");
    let upstream = span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "socialnet.upstream");
    assert_eq!(upstream.unwrap()["value"]["stringValue"], "api");
    assert_eq!(span["traceId"], trace);
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7", "the caller's span is the parent");
    let span_id = span["spanId"].as_str().unwrap();
    assert_eq!(
        sent_upstream,
        format!("00-{trace}-{span_id}-01"),
        "the upstream's parent is the exported span"
    );
    assert_eq!(span["name"], "GET /public/");
    let status =
        span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "http.response.status_code");
    assert_eq!(status.unwrap()["value"]["intValue"], "200");
}

#[tokio::test]
async fn a_write_through_the_gateway_is_one_trace_of_two_spans() {
    let collector = testkit::OtlpCollector::start().await;
    let endpoint = collector.endpoint();
    let exporter = http_kit::otlp::Exporter::spawn(&endpoint, "socialnet-write-api");
    let upstream = write_api_with(move |r| {
        r.layer(axum::middleware::from_fn_with_state(exporter, http_kit::otlp::trace_requests))
    })
    .await;
    let config = format!("{}otlp: {{ endpoint: \"{endpoint}\" }}\n", yaml(upstream, ROOMY));
    let (_dir, path) = config_dir(&config);
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let auth = format!("Bearer {}", hs(&claims("alice", now() + 600, Some("socialnet")), SECRET));
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let answer =
        send(&client(), "POST", format!("http://{gw}/v1/posts"), &headers, r#"{"body":"traced"}"#).await;
    assert_eq!(answer.status, 202);

    let all = collector.wait_for(2).await;
    assert!(all.len() >= 2, "expected a span from each hop, got {all:?}");
    let of = |service: &str| all.iter().find(|(s, _)| s == service).map(|(_, span)| span.clone());
    let gateway_span = of("socialnet-gateway").expect("the gateway's span");
    let service_span = of("socialnet-write-api").expect("the write API's span");
    assert_eq!(service_span["traceId"], gateway_span["traceId"], "one trace");
    assert_eq!(service_span["parentSpanId"], gateway_span["spanId"], "the gateway's span is the parent");
    assert!(
        gateway_span.get("parentSpanId").is_none(),
        "the client sent no traceparent: the gateway starts it"
    );
    assert_eq!(service_span["name"], "POST /v1/posts", "named by the matched route");
    assert_eq!(service_span["kind"], 2);
    let status = service_span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "http.response.status_code")
        .map(|a| a["value"]["intValue"].clone());
    assert_eq!(status, Some(serde_json::json!("202")));
}

/// Reads share the upstream's few pipelined connections (as configured), and each answer reaches its own
/// request; writes never travel on those connections.
#[tokio::test]
async fn concurrent_reads_share_the_pipelined_connections_and_writes_keep_their_own() {
    use axum::extract::{ConnectInfo, Path as UrlPath};
    use std::collections::HashSet;
    type Peers = Arc<std::sync::Mutex<HashSet<SocketAddr>>>;
    let (reads, writes): (Peers, Peers) = Default::default();
    let (r, w) = (reads.clone(), writes.clone());
    let upstream = Router::new()
        .route(
            "/v1/echo/{n}",
            axum::routing::get(
                move |UrlPath(n): UrlPath<u64>, ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                    r.lock().unwrap().insert(peer);
                    async move { n.to_string() }
                },
            ),
        )
        .route(
            "/v1/write",
            axum::routing::post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                w.lock().unwrap().insert(peer);
                async { "{}" }
            }),
        );
    let config = yaml(serve(upstream).await, ROOMY).replace(
        "timeout_ms: 300, retries: 1,",
        "timeout_ms: 5000, retries: 1, pipeline: { connections: 2 },",
    );
    let (_dir, path) = config_dir(&config);
    let (gw, _) = gateway(&path, Limiter::local()).await;
    let (c, auth) = (client(), bearer());
    let tasks: Vec<_> = (0..200u64)
        .map(|n| {
            let (c, auth) = (c.clone(), auth.clone());
            tokio::spawn(async move {
                let a = send(&c, "GET", format!("http://{gw}/v1/echo/{n}"), &[("authorization", &auth)], "")
                    .await;
                (n, a.status, a.body)
            })
        })
        .collect();
    for t in tasks {
        let (n, status, body) = t.await.unwrap();
        assert_eq!((status, body), (200, serde_json::json!(n)), "read {n} got its own answer");
    }
    for _ in 0..3 {
        let a = send(&c, "POST", format!("http://{gw}/v1/write"), &[("authorization", &auth)], "{}").await;
        assert_eq!(a.status, 200);
    }
    let (reads, writes) = (reads.lock().unwrap().clone(), writes.lock().unwrap().clone());
    assert_eq!(reads.len(), 2, "200 concurrent reads over the 2 configured connections");
    assert!(!writes.is_empty() && reads.is_disjoint(&writes), "writes on connections of their own");
}
