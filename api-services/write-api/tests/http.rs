//! The write API through `oneshot`, on dev mode's real adapters (in-process queue, in-memory SQLite store):
//! every kind of bad input gets a clear 4xx problem+json (never a 5xx or a panic), a user acts only as
//! itself, and `Idempotency-Key` makes a retry the same command.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use http_kit::{AuthConfig, JwtVerifier, mint_token};
use queue::{CommandSource, MemoryQueue};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &[u8] = b"test-secret-test-secret";

struct Api {
    router: axum::Router,
    queue: MemoryQueue,
}

async fn api() -> Api {
    let store = Arc::new(eventstore::SqliteEventStore::in_memory().await.unwrap());
    api_on(MemoryQueue::new(), store)
}

/// The write API on `queue` (also its dead-letter queue) and `store`, keys in memory.
fn api_on(queue: MemoryQueue, store: Arc<dyn eventstore::EventStore>) -> Api {
    let state = write_api::AppState {
        publisher: Arc::new(queue.clone()),
        commands: Arc::new(write_api::StoreCommandLog {
            primary: store,
            backup: None,
            dead_letters: vec![Arc::new(queue.clone())],
        }),
        keys: Arc::new(queue::MemoryKeys::new(queue::DEFAULT_RETENTION)),
        verifier: Arc::new(JwtVerifier::new(&AuthConfig {
            hs256_secret: SECRET.to_vec(),
            ..Default::default()
        })),
    };
    let ready: http_kit::Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    Api { router: write_api::app(state, ready), queue }
}

fn token(sub: &str) -> String {
    mint_token(SECRET, sub, Duration::from_secs(600), &[], None, None).unwrap()
}

async fn send(api: &Api, req: Request<Body>) -> (StatusCode, String, serde_json::Value) {
    let resp = api.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype =
        resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, ctype, json)
}

fn req(method: &str, uri: &str, tok: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = tok {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some(body) => b.header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

/// Assert a problem+json answer with this status and a non-empty detail.
fn assert_problem(case: &str, got: (StatusCode, String, serde_json::Value), want: StatusCode) {
    let (status, ctype, json) = got;
    assert_eq!(status, want, "{case}: {json}");
    assert_eq!(ctype, "application/problem+json", "{case}");
    assert_eq!(json["status"], want.as_u16(), "{case}");
    assert!(json["title"].as_str().is_some_and(|t| !t.is_empty()), "{case}");
    assert!(json["detail"].as_str().is_some_and(|t| !t.is_empty()), "{case}");
    assert!(json["type"].as_str().is_some(), "{case}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_problem_never_a_5xx() {
    let api = api().await;
    let alice = token("alice");
    let post = "/v1/posts/0192f0c4-0000-7000-8000-000000000001";
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "malformed JSON",
            req("POST", "/v1/posts", Some(&alice), Some("{\"body\": ")),
            StatusCode::BAD_REQUEST,
        ),
        ("not an object", req("POST", "/v1/posts", Some(&alice), Some("[1,2]")), StatusCode::BAD_REQUEST),
        (
            "wrong type",
            req("POST", "/v1/posts", Some(&alice), Some(r#"{"body": 42}"#)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            req("POST", "/v1/posts", Some(&alice), Some(r#"{"body":"hi","admin":true}"#)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing field",
            req("POST", "/v1/users", Some(&alice), Some(r#"{"handle":"alice"}"#)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "blank body",
            req("POST", "/v1/posts", Some(&alice), Some(r#"{"body":"   "}"#)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "body too long",
            req("POST", "/v1/posts", Some(&alice), Some(&format!(r#"{{"body":"{}"}}"#, "x".repeat(2001)))),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad handle",
            req("POST", "/v1/users", Some(&alice), Some(r#"{"handle":"A!","display_name":"A"}"#)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bio too long",
            req(
                "POST",
                "/v1/users",
                Some(&alice),
                Some(&format!(r#"{{"handle":"alice","display_name":"A","bio":"{}"}}"#, "b".repeat(281))),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad reply_to",
            req("POST", "/v1/posts", Some(&alice), Some(r#"{"body":"x","reply_to":"nope"}"#)),
            StatusCode::BAD_REQUEST,
        ),
        ("bad post id", req("DELETE", "/v1/posts/not-a-uuid", Some(&alice), None), StatusCode::BAD_REQUEST),
        ("empty patch", req("PATCH", "/v1/users/alice", Some(&alice), Some("{}")), StatusCode::BAD_REQUEST),
        (
            "no content type",
            Request::builder()
                .method("POST")
                .uri("/v1/posts")
                .header("authorization", format!("Bearer {alice}"))
                .body(Body::from(r#"{"body":"x"}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversize body",
            req(
                "POST",
                "/v1/posts",
                Some(&alice),
                Some(&format!(r#"{{"body":"{}"}}"#, "x".repeat(1024 * 1024 + 10))),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("no token", req("POST", "/v1/posts", None, Some(r#"{"body":"x"}"#)), StatusCode::UNAUTHORIZED),
        (
            "not bearer",
            Request::builder()
                .method("POST")
                .uri("/v1/posts")
                .header("authorization", "Basic YTpi")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"body":"x"}"#))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "garbage token",
            req("POST", "/v1/posts", Some("abc.def.ghi"), Some(r#"{"body":"x"}"#)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong signature",
            req(
                "POST",
                "/v1/posts",
                Some(
                    &mint_token(b"another-secret-xx", "alice", Duration::from_secs(60), &[], None, None)
                        .unwrap(),
                ),
                Some(r#"{"body":"x"}"#),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "alg none",
            req("POST", "/v1/posts", Some(&alg_none("alice")), Some(r#"{"body":"x"}"#)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            req("POST", "/v1/posts", Some(&expired("alice")), Some(r#"{"body":"x"}"#)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bad subject",
            req("POST", "/v1/posts", Some(&token("has space")), Some(r#"{"body":"x"}"#)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "as another user: profile",
            req("PATCH", "/v1/users/bob", Some(&alice), Some(r#"{"bio":"hacked"}"#)),
            StatusCode::FORBIDDEN,
        ),
        (
            "as another user: follow",
            req("PUT", "/v1/users/bob/following/carol", Some(&alice), None),
            StatusCode::FORBIDDEN,
        ),
        (
            "as another user: unfollow",
            req("DELETE", "/v1/users/bob/following/carol", Some(&alice), None),
            StatusCode::FORBIDDEN,
        ),
        (
            "as another user: like",
            req("PUT", &format!("{post}/likes/bob"), Some(&alice), None),
            StatusCode::FORBIDDEN,
        ),
        (
            "as another user: unlike",
            req("DELETE", &format!("{post}/likes/bob"), Some(&alice), None),
            StatusCode::FORBIDDEN,
        ),
        (
            "bad idempotency key",
            Request::builder()
                .method("POST")
                .uri("/v1/posts")
                .header("authorization", format!("Bearer {alice}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "has space")
                .body(Body::from(r#"{"body":"x"}"#))
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        ("bad command id", req("GET", "/v1/commands/xyz", Some(&alice), None), StatusCode::BAD_REQUEST),
        (
            "old unknown command",
            req("GET", "/v1/commands/01890000-0000-7000-8000-000000000000", Some(&alice), None),
            StatusCode::NOT_FOUND,
        ),
        ("no such route", req("GET", "/v2/whatever", Some(&alice), None), StatusCode::NOT_FOUND),
    ];
    for (case, request, want) in cases {
        let got = send(&api, request).await;
        assert_problem(case, got, want);
    }
    assert_eq!(api.queue.depth(), 0, "no bad request may reach the queue");
}

fn b64(s: &str) -> String {
    testkit::base64(s.as_bytes(), true)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn alg_none(sub: &str) -> String {
    format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"{sub}","exp":{}}}"#, now() + 600))
    )
}

fn expired(sub: &str) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let claims = serde_json::json!({"sub": sub, "exp": now() - 3600});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

#[tokio::test]
async fn accepted_writes_answer_202_with_ids_and_reach_the_queue() {
    let api = api().await;
    let alice = token("alice");
    let (status, _, json) = send(
        &api,
        req("POST", "/v1/users", Some(&alice), Some(r#"{"handle":"alice","display_name":"Alice"}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["user_id"], "alice");
    assert_eq!(json["status"], "queued");
    let (status, _, json) =
        send(&api, req("POST", "/v1/posts", Some(&alice), Some(r#"{"body":"hello"}"#))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let post_id = json["post_id"].as_str().unwrap().to_owned();
    let routes = [
        ("PATCH", "/v1/users/alice".to_owned(), Some(r#"{"bio":"hi"}"#)),
        ("PUT", "/v1/users/alice/following/bob".to_owned(), None),
        ("DELETE", "/v1/users/alice/following/bob".to_owned(), None),
        ("PATCH", format!("/v1/posts/{post_id}"), Some(r#"{"body":"edited"}"#)),
        ("PUT", format!("/v1/posts/{post_id}/likes/alice"), None),
        ("DELETE", format!("/v1/posts/{post_id}/likes/alice"), None),
        ("POST", format!("/v1/posts/{post_id}/comments"), Some(r#"{"body":"nice"}"#)),
        ("DELETE", format!("/v1/posts/{post_id}"), None),
    ];
    for (method, uri, body) in routes {
        let (status, _, json) = send(&api, req(method, &uri, Some(&alice), body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{method} {uri}: {json}");
        assert!(json["command_id"].as_str().is_some());
    }
    assert_eq!(api.queue.depth(), 10);
}

#[tokio::test]
async fn one_idempotency_key_is_one_command() {
    let api = api().await;
    let alice = token("alice");
    let with_key = |body: &str| {
        Request::builder()
            .method("POST")
            .uri("/v1/posts")
            .header("authorization", format!("Bearer {alice}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "2b8f9d4e-1a7c-4e55-9a0b-3f1d2c4b5a69")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let (s1, _, first) = send(&api, with_key(r#"{"body":"once"}"#)).await;
    let (s2, _, second) = send(&api, with_key(r#"{"body":"once"}"#)).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["command_id"], second["command_id"]);
    assert_eq!(first["post_id"], second["post_id"]);
    // The queue took it once.
    let batch = api.queue.fetch(10, Duration::from_millis(20)).await.unwrap();
    assert_eq!(batch.len(), 1);
    // Another user's same key is another command.
    let bob = token("bob");
    let other = Request::builder()
        .method("POST")
        .uri("/v1/posts")
        .header("authorization", format!("Bearer {bob}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "2b8f9d4e-1a7c-4e55-9a0b-3f1d2c4b5a69")
        .body(Body::from(r#"{"body":"once"}"#))
        .unwrap();
    let (_, _, third) = send(&api, other).await;
    assert_ne!(third["command_id"], first["command_id"]);
}

#[tokio::test]
async fn ops_routes_and_openapi_need_no_token() {
    let api = api().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = api.router.clone().oneshot(req("GET", path, None, None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let (_, _, doc) = send(&api, req("GET", "/openapi.json", None, None)).await;
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/v1/users", "/v1/posts", "/v1/posts/{post_id}/likes/{user_id}", "/v1/commands/{command_id}"] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
}

#[tokio::test]
async fn a_queued_command_reports_its_outcome_after_ingestion() {
    let queue = MemoryQueue::new();
    let store: Arc<dyn eventstore::EventStore> =
        Arc::new(eventstore::SqliteEventStore::in_memory().await.unwrap());
    let api = api_on(queue.clone(), store.clone());
    let ing =
        ingester::Ingester::new(Default::default(), Arc::new(ingester::Processor::new(store)), None).await;
    let worker = tokio::spawn(ing.run(Arc::new(queue)));

    let alice = token("alice");
    let (_, _, json) =
        send(&api, req("POST", "/v1/posts", Some(&alice), Some(r#"{"body":"before registering"}"#))).await;
    let rejected_id = json["command_id"].as_str().unwrap().to_owned();
    let (_, _, json) = send(
        &api,
        req("POST", "/v1/users", Some(&alice), Some(r#"{"handle":"alice","display_name":"Alice"}"#)),
    )
    .await;
    let committed_id = json["command_id"].as_str().unwrap().to_owned();

    let status_of = |id: String| {
        let api = &api;
        let alice = alice.clone();
        async move { send(api, req("GET", &format!("/v1/commands/{id}"), Some(&alice), None)).await.2 }
    };
    let mut done = false;
    for _ in 0..200 {
        if status_of(committed_id.clone()).await["status"] == "committed" {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "registration never committed");
    let committed = status_of(committed_id).await;
    assert_eq!(committed["positions"].as_array().unwrap().len(), 2);
    let rejected = status_of(rejected_id).await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["code"], "not_registered");
    assert!(rejected["reason"].as_str().unwrap().contains("no profile"));
    worker.abort();
}

fn keyed(method: &str, uri: &str, tok: &str, key: &str, body: Option<&str>) -> Request<Body> {
    let mut r = req(method, uri, Some(tok), body);
    r.headers_mut().insert("idempotency-key", key.parse().unwrap());
    r
}

#[tokio::test]
async fn a_reused_key_with_another_request_is_422_and_queues_nothing() {
    let api = api().await;
    let alice = token("alice");
    let key = "0f6a2c1e-reuse";
    let (s, _, first) = send(&api, keyed("POST", "/v1/posts", &alice, key, Some(r#"{"body":"one"}"#))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Another body, another route, another path: each names the key in a 422 problem.
    let other_post_path = format!("/v1/posts/{}/likes/alice", first["post_id"].as_str().unwrap());
    let others = [
        ("POST", "/v1/posts", Some(r#"{"body":"two"}"#)),
        ("POST", "/v1/posts", Some(r#"{"body":"one","reply_to":"0190c4b3-0000-7000-8000-000000000000"}"#)),
        ("PUT", other_post_path.as_str(), None),
        ("PUT", "/v1/users/alice/following/bob", None),
    ];
    for (method, uri, body) in others {
        let (s, ctype, problem) = send(&api, keyed(method, uri, &alice, key, body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{method} {uri}: {problem}");
        assert_eq!(ctype, "application/problem+json");
        assert!(problem["detail"].as_str().unwrap().contains(key), "{problem}");
    }
    // The same request, spaced differently, is the first answer again.
    let (s, _, again) =
        send(&api, keyed("POST", "/v1/posts", &alice, key, Some(r#"{ "body" : "one" }"#))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!((&again["command_id"], &again["post_id"]), (&first["command_id"], &first["post_id"]));
    // One command in the queue: none for the refused requests, none for the retry.
    let batch = api.queue.fetch(10, Duration::from_millis(20)).await.unwrap();
    assert_eq!(batch.len(), 1);
}

#[tokio::test]
async fn a_command_is_visible_to_its_issuer_and_the_admin_only() {
    let api = api().await;
    let (alice, bob) = (token("alice"), token("bob"));
    let admin = mint_token(SECRET, "root", Duration::from_secs(600), &["admin".into()], None, None).unwrap();
    let (_, _, json) = send(&api, req("POST", "/v1/posts", Some(&alice), Some(r#"{"body":"mine"}"#))).await;
    let mine = format!("/v1/commands/{}", json["command_id"].as_str().unwrap());
    let (_, _, json) =
        send(&api, keyed("POST", "/v1/posts", &alice, "k1", Some(r#"{"body":"keyed"}"#))).await;
    let mine_keyed = format!("/v1/commands/{}", json["command_id"].as_str().unwrap());
    for uri in [&mine, &mine_keyed] {
        let (s, _, status) = send(&api, req("GET", uri, Some(&alice), None)).await;
        assert_eq!((s, status["status"].as_str()), (StatusCode::OK, Some("queued")), "{uri}");
        let (s, _, _) = send(&api, req("GET", uri, Some(&admin), None)).await;
        assert_eq!(s, StatusCode::OK, "the admin role reads any command");
        // To bob it is exactly what an unknown id is.
        let (s, ctype, theirs) = send(&api, req("GET", uri, Some(&bob), None)).await;
        let unknown_id = uuid::Uuid::now_v7();
        let (s2, ctype2, unknown) =
            send(&api, req("GET", &format!("/v1/commands/{unknown_id}"), Some(&bob), None)).await;
        assert_eq!((s, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
        assert_eq!((ctype, &theirs["title"]), (ctype2, &unknown["title"]));
        let id = uri.rsplit('/').next().unwrap();
        assert_eq!(
            theirs["detail"].as_str().unwrap().replace(id, "ID"),
            unknown["detail"].as_str().unwrap().replace(&unknown_id.to_string(), "ID")
        );
    }
}

#[tokio::test]
async fn a_dead_lettered_command_reports_failed_then_queued_then_committed() {
    use queue::DeadLetterQueue;
    let queue = MemoryQueue::new();
    let store: Arc<dyn eventstore::EventStore> =
        Arc::new(eventstore::SqliteEventStore::in_memory().await.unwrap());
    let api = api_on(queue.clone(), store.clone());
    let alice = token("alice");
    let body = r#"{"handle":"alice","display_name":"Alice"}"#;
    let (_, _, json) = send(&api, req("POST", "/v1/users", Some(&alice), Some(body))).await;
    let uri = format!("/v1/commands/{}", json["command_id"].as_str().unwrap());
    // The ingester gives up on it (as after max deliveries), with a reason.
    let delivery = queue.fetch(1, Duration::from_millis(50)).await.unwrap().pop().unwrap();
    let commands = queue::decode_batch(&delivery.payload).unwrap();
    delivery.dead_letter_commands("refused by policy", &commands).await.unwrap();
    let (s, _, failed) = send(&api, req("GET", &uri, Some(&alice), None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "refused by policy");
    assert_eq!(failed["deliveries"], 1);
    assert_eq!(send(&api, req("GET", &uri, Some(&token("bob")), None)).await.0, StatusCode::NOT_FOUND);
    // Requeued by an operator: queued again, then committed once an ingester runs.
    let letter = queue.list(10).await.unwrap().pop().unwrap();
    assert!(queue.requeue(letter.sequence).await.unwrap());
    assert_eq!(send(&api, req("GET", &uri, Some(&alice), None)).await.2["status"], "queued");
    let ing =
        ingester::Ingester::new(Default::default(), Arc::new(ingester::Processor::new(store)), None).await;
    let worker = tokio::spawn(ing.run(Arc::new(queue)));
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        last = send(&api, req("GET", &uri, Some(&alice), None)).await.2;
        if last["status"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last["status"], "committed", "{last}");
    worker.abort();
}
