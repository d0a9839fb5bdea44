//! The write path end to end on real NATS and PostgreSQL: duplicates in every form become one event, a
//! poison command (alone, or grouped in one message with good ones) is dead-lettered with its reason and
//! committed after a fix and a requeue, and dev mode
//! works from a bare data directory and keeps its data across restarts.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use domain::{Command, CommandEnvelope, CommandId, PostBody, PostId, UserId};
use eventstore::{EventStore, PgEventStore};
use ingester::{Ingester, IngesterConfig, Processor};
use queue::{CommandSource, JetStreamQueue, JetStreamSource, QueueNames};
use std::sync::Arc;
use std::time::Duration;
use testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_published_twice_delivered_twice_or_sent_twice_is_one_event() {
    let db = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
    let store = Arc::new(PgEventStore::connect(&db).await.unwrap());
    let prefix = testkit::queue_prefix();
    let names = QueueNames::with_prefix(&prefix, &prefix.to_lowercase());
    let q = JetStreamQueue::connect(
        "primary",
        &testkit::env_url("SOCIALNET_TEST_NATS_URL"),
        names,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(testkit::eventually(Duration::from_secs(5), || async { q.is_connected() }).await);

    let alice = UserId::parse("alice").unwrap();
    let register = CommandEnvelope::new(
        CommandId::new_v7(),
        alice.clone(),
        Command::RegisterUser {
            handle: domain::Handle::parse("alice").unwrap(),
            display_name: domain::DisplayName::parse("Alice").unwrap(),
            bio: domain::Bio::default(),
        },
    );
    let post = CommandEnvelope::new(
        CommandId::new_v7(),
        alice.clone(),
        Command::PublishPost {
            post_id: PostId(uuid::Uuid::now_v7()),
            body: PostBody::parse("once").unwrap(),
            reply_to: None,
        },
    );
    // Published twice under one message id: JetStream drops the second.
    let first = q.publish_raw(&register.command_id.to_string(), register.encode().into()).await.unwrap();
    let again = q.publish_raw(&register.command_id.to_string(), register.encode().into()).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    // Published twice under different message ids (e.g. primary then secondary): both are delivered.
    q.publish_raw("post-a", post.encode().into()).await.unwrap();
    q.publish_raw("post-b", post.encode().into()).await.unwrap();

    // Delivered twice: process the first delivery, commit, then "lose" the ack (nak) so it comes again.
    let source = JetStreamSource::new(q.clone());
    let processor = Arc::new(Processor::new(store.clone() as Arc<dyn EventStore>));
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(source.fetch(10, Duration::from_secs(5)).await.unwrap());
    }
    let envs: Vec<_> = got.iter().map(|d| CommandEnvelope::decode(&d.payload).unwrap()).collect();
    processor.process(&envs).await.unwrap();
    for d in &got {
        d.retry_later(Duration::from_millis(10)).await.unwrap();
    }
    // The real ingester loop now sees every message a second time.
    let ing = Ingester::new(IngesterConfig::default(), processor, None).await;
    let worker = tokio::spawn(ing.run(Arc::new(source) as Arc<dyn CommandSource>));
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.abort();

    let pool = pg(&db).await;
    let per = events_per_command(&pool, &[register.command_id.0, post.command_id.0]).await;
    assert_eq!(per.get(&register.command_id.0), Some(&2), "UserRegistered + HandleClaimed, once");
    assert_eq!(per.get(&post.command_id.0), Some(&1), "one PostPublished");
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM commands").fetch_one(&pool).await.unwrap();
    assert_eq!(commands, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_sent_twice_over_http_is_one_event() {
    let wiring = Wiring::fresh().await;
    let (api_port, ing_port) = (free_port(), free_port());
    let _api = wiring.write_api(api_port);
    let _ing = wiring.ingester(ing_port, &[]);
    let http = Http::new(api_port);
    http.wait_ready(Duration::from_secs(20)).await;
    let users = register_users(&http, "i", 1).await;
    let tok = &users[0].1;
    let key = [("idempotency-key", "7d0e5f7a-3c1b-4a8e-9f2d-6b5c4a3e2d1f")];
    let body = || Some(serde_json::json!({"body": "exactly once"}));
    let (c1, a1) = http.call("POST", "/v1/posts", Some(tok), body(), &key).await;
    let outcome = http.wait_decided(tok, a1["command_id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(outcome["status"], "committed");
    // The retry comes after the commit (and could come after the queue's dedup window): still one event.
    let (c2, a2) = http.call("POST", "/v1/posts", Some(tok), body(), &key).await;
    assert_eq!((c1, c2), (202, 202));
    assert_eq!(a1["post_id"], a2["post_id"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pool = pg(&wiring.database_url).await;
    let id = uuid::Uuid::parse_str(a1["command_id"].as_str().unwrap()).unwrap();
    assert_exactly_once(&pool, &[id], "PostPublished").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_stays_bound_across_a_write_api_restart() {
    let wiring = Wiring::fresh().await;
    let (api_port, ing_port) = (free_port(), free_port());
    let api = wiring.write_api(api_port);
    let _ing = wiring.ingester(ing_port, &[]);
    let http = Http::new(api_port);
    http.wait_ready(Duration::from_secs(20)).await;
    let users = register_users(&http, "k", 1).await;
    let tok = &users[0].1;
    let key = [("idempotency-key", "c0ffee00-restart")];
    let body = |text: &str| Some(serde_json::json!({ "body": text }));
    let (c1, first) = http.call("POST", "/v1/posts", Some(tok), body("before the restart"), &key).await;
    assert_eq!(c1, 202, "{first}");

    // A new write API process: the key lives in the queue servers' key-value bucket, not in the process.
    drop(api);
    let _api = wiring.write_api(api_port);
    http.wait_ready(Duration::from_secs(20)).await;
    let (c2, again) = http.call("POST", "/v1/posts", Some(tok), body("before the restart"), &key).await;
    assert_eq!(c2, 202, "{again}");
    assert_eq!((&again["command_id"], &again["post_id"]), (&first["command_id"], &first["post_id"]));
    let (c3, problem) = http.call("POST", "/v1/posts", Some(tok), body("another body"), &key).await;
    assert_eq!(c3, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("c0ffee00-restart"), "{problem}");

    let outcome =
        http.wait_decided(tok, first["command_id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(outcome["status"], "committed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pool = pg(&wiring.database_url).await;
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'PostPublished'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(posts, 1, "one post: the retry and the refused reuse made none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_command_is_dead_lettered_with_its_reason_and_commits_after_requeue() {
    let wiring = Wiring::fresh().await;
    let (api_port, ing_port) = (free_port(), free_port());
    let _api = wiring.write_api(api_port);
    let _ing = wiring.ingester(ing_port, &["--max-deliver", "3", "--backoff-ms", "100"]);
    let http = Http::new(api_port);
    http.wait_ready(Duration::from_secs(20)).await;
    let users = register_users(&http, "d", 1).await;
    let tok = &users[0].1;

    // The "cause": a database rule (here a trigger) that refuses one particular post.
    let pool = pg(&wiring.database_url).await;
    sqlx::query(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.payload->>'body' = 'poison' THEN RAISE EXCEPTION 'poison post refused by policy'; END IF; \
           RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .execute(&pool)
    .await
    .unwrap();

    let (_, poison) =
        http.call("POST", "/v1/posts", Some(tok), Some(serde_json::json!({"body": "poison"})), &[]).await;
    let (_, fine) =
        http.call("POST", "/v1/posts", Some(tok), Some(serde_json::json!({"body": "fine"})), &[]).await;
    let poison_id = poison["command_id"].as_str().unwrap().to_owned();
    // The good command next to it is not held up.
    assert_eq!(
        http.wait_decided(tok, fine["command_id"].as_str().unwrap(), Duration::from_secs(20)).await["status"],
        "committed"
    );

    // A second poison command travels in one message with two good ones, as the write API's group
    // commit sends them under load: the good ones commit, only the poison one is dead-lettered.
    let author = UserId::parse(&users[0].0).unwrap();
    let post = |body: &str| {
        CommandEnvelope::new(
            // Minted for its issuer, as the write API mints ids: so its issuer may read it while queued.
            CommandId::issued(&author),
            author.clone(),
            Command::PublishPost {
                post_id: PostId(uuid::Uuid::now_v7()),
                body: PostBody::parse(body).unwrap(),
                reply_to: None,
            },
        )
    };
    let group = vec![post("before"), post("poison"), post("after")];
    let names = QueueNames::with_prefix(&wiring.queue_prefix, &wiring.queue_prefix.to_lowercase());
    let q =
        JetStreamQueue::connect("primary", &wiring.nats_url, names, Duration::from_secs(5)).await.unwrap();
    assert!(testkit::eventually(Duration::from_secs(5), || async { q.is_connected() }).await);
    q.publish_raw("batch-poison-test", queue::encode_batch(&group)).await.unwrap();
    for good in [&group[0], &group[2]] {
        let outcome = http.wait_decided(tok, &good.command_id.to_string(), Duration::from_secs(20)).await;
        assert_eq!(outcome["status"], "committed", "{outcome}");
    }
    let grouped_poison_id = group[1].command_id.to_string();

    let dead = testkit::eventually(Duration::from_secs(20), || async {
        let listing = wiring.admin(&["admin", "dlq", "list"]).1;
        listing.contains(&poison_id) && listing.contains(&grouped_poison_id)
    })
    .await;
    assert!(dead, "the poison commands never reached the dead-letter queue");
    let (ok, listing) = wiring.admin(&["admin", "dlq", "list"]);
    assert!(ok);
    let letters: Vec<serde_json::Value> = listing.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 2, "{listing}");
    let letter_of = |id: &str| letters.iter().find(|l| l["command_id"] == id).unwrap().clone();
    for letter in [letter_of(&poison_id), letter_of(&grouped_poison_id)] {
        assert!(letter["reason"].as_str().unwrap().contains("poison post refused by policy"), "{letter}");
        assert_eq!(letter["deliveries"], 3);
    }
    // The grouped one's letter holds that command alone, not its committed neighbours.
    let payload = letter_of(&grouped_poison_id)["payload"].as_str().unwrap().to_owned();
    assert_eq!(queue::decode_batch(payload.as_bytes()).unwrap(), vec![group[1].clone()]);
    // Its issuer learns that it failed, and why.
    for id in [&poison_id, &grouped_poison_id] {
        let (code, outcome) = http.call("GET", &format!("/v1/commands/{id}"), Some(tok), None, &[]).await;
        assert_eq!((code, outcome["status"].as_str()), (200, Some("failed")), "{outcome}");
        assert!(outcome["reason"].as_str().unwrap().contains("poison post refused by policy"), "{outcome}");
        assert_eq!(outcome["deliveries"], 3);
    }

    // Fix the cause, requeue, and it commits; it is never unknown to its issuer on the way.
    sqlx::query("DROP TRIGGER refuse_poison ON events").execute(&pool).await.unwrap();
    let (ok, out) = wiring.admin(&["admin", "dlq", "requeue", "--all"]);
    assert!(ok, "{out}");
    for id in [&poison_id, &grouped_poison_id] {
        let started = std::time::Instant::now();
        let outcome = loop {
            let (code, outcome) = http.call("GET", &format!("/v1/commands/{id}"), Some(tok), None, &[]).await;
            assert_eq!(code, 200, "a requeued command is never 404 to its issuer: {outcome}");
            if outcome["status"] != "queued" || started.elapsed() > Duration::from_secs(20) {
                break outcome;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(outcome["status"], "committed", "{outcome}");
    }
    assert_eq!(wiring.admin(&["admin", "dlq", "list"]).1.trim(), "");
    let ids: Vec<uuid::Uuid> = [poison_id.as_str(), &grouped_poison_id]
        .iter()
        .map(|id| uuid::Uuid::parse_str(id).unwrap())
        .chain(group.iter().map(|e| e.command_id.0))
        .collect();
    let per = events_per_command(&pool, &ids).await;
    assert!(ids.iter().all(|id| per.get(id) == Some(&1)), "one event per command: {per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_from_an_empty_directory_and_keeps_its_data() {
    let dir = std::env::temp_dir().join(format!("socialnet-dev-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port();
    // A stand-in OTLP collector: dev mode sends the gateway's and the services' spans to it.
    let collector = testkit::OtlpCollector::start().await;
    let start = || {
        let mut c = socialnet();
        c.env_remove("SOCIALNET_JWT_SECRET")
            .env("SOCIALNET_OTLP_ENDPOINT", collector.endpoint())
            .args(["dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&dir);
        testkit::ChildGuard::spawn(&mut c)
    };
    let mut dev = start();
    let http = Http::new(port);
    http.wait_ready(Duration::from_secs(20)).await;

    // A token from the CLI, signed with the secret dev mode generated.
    let out = socialnet()
        .env_remove("SOCIALNET_JWT_SECRET")
        .args(["token", "--sub", "alice", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // The environment's secret is not dev mode's: a token signed with it is refused.
    assert_eq!(
        http.call("POST", "/v1/posts", Some(&token("alice")), Some(serde_json::json!({"body": "x"})), &[])
            .await
            .0,
        401
    );

    let (code, reg) = http
        .call(
            "POST",
            "/v1/users",
            Some(&tok),
            Some(serde_json::json!({"handle": "alice", "display_name": "Alice"})),
            &[],
        )
        .await;
    assert_eq!(code, 202);
    let (_, post) = http
        .call("POST", "/v1/posts", Some(&tok), Some(serde_json::json!({"body": "hello from dev mode"})), &[])
        .await;
    let post_cmd = post["command_id"].as_str().unwrap().to_owned();
    assert_eq!(
        http.wait_decided(&tok, reg["command_id"].as_str().unwrap(), Duration::from_secs(10)).await["status"],
        "committed"
    );
    assert_eq!(http.wait_decided(&tok, &post_cmd, Duration::from_secs(10)).await["status"], "committed");
    // The post is one trace: the gateway's span, and the services' span as its child.
    let traced = testkit::eventually(Duration::from_secs(5), || {
        let collector = collector.clone();
        async move {
            let spans = collector.spans();
            spans.iter().any(|(s, span)| {
                s == "socialnet-dev-services"
                    && span["name"] == "POST /v1/posts"
                    && spans.iter().any(|(g, parent)| {
                        g == "socialnet-gateway"
                            && parent["spanId"] == span["parentSpanId"]
                            && parent["traceId"] == span["traceId"]
                    })
            })
        }
    })
    .await;
    assert!(traced, "no gateway → services trace of the post: {:?}", collector.spans());

    // The gateway is in front: it answers CORS preflights itself, and tags answers with a request id and
    // the caller's remaining rate limit.
    let (code, h, _) = http
        .call_full(
            "OPTIONS",
            "/v1/posts",
            None,
            None,
            &[("origin", "http://localhost:3000"), ("access-control-request-method", "POST")],
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    let (code, h, _) =
        http.call_full("GET", &format!("/v1/commands/{post_cmd}"), Some(&tok), None, &[]).await;
    assert_eq!(code, 200);
    assert!(h.contains_key("x-request-id") && h.contains_key("ratelimit-remaining"), "{h:?}");
    // And it serves the whole public API's document: write and read routes, without a token.
    let (code, doc) = http.call("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(code, 200);
    for path in
        ["/v1/posts", "/v1/commands/{command_id}", "/v1/users/{user_id}/home", "/v1/posts/{post_id}/comments"]
    {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from /openapi.json");
    }

    dev.kill();
    let _dev = start();
    http.wait_ready(Duration::from_secs(20)).await;
    let after = http.call("GET", &format!("/v1/commands/{post_cmd}"), Some(&tok), None, &[]).await;
    assert_eq!(after.0, 200, "the old token still works after a restart");
    assert_eq!(after.1["status"], "committed", "the event store survived the restart");
    let _ = std::fs::remove_dir_all(&dir);
}
