//! Fault tests against real servers and real `socialnet` processes: the ingester killed under load, the
//! primary PostgreSQL stopped while writes continue, the primary NATS stopped, a node of a 3-node NATS
//! cluster killed under writes with two ingesters consuming partitions side by side, both queues down at
//! once (503 with `Retry-After`), both event stores down at once (nothing acknowledged), the write API
//! killed mid-request. In each, every write that was answered 202 becomes exactly one event.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use testkit::{NatsCluster, NatsServer, PgServer, free_port};

/// The write side of a test: a write API and an ingester on `wiring`, the API ready, `users` registered.
struct WriteSide {
    api: testkit::ChildGuard,
    api_port: u16,
    _ingester: testkit::ChildGuard,
    http: Arc<Http>,
    users: Vec<(String, String)>,
}

async fn write_side(wiring: &Wiring, prefix: &str, users: usize) -> WriteSide {
    let (api_port, ing_port) = (free_port(), free_port());
    let api = wiring.write_api(api_port);
    let ingester = wiring.ingester(ing_port, &[]);
    let http = Arc::new(Http::new(api_port));
    http.wait_ready(Duration::from_secs(20)).await;
    let users = register_users(&http, prefix, users).await;
    WriteSide { api, api_port, _ingester: ingester, http, users }
}

/// Post `n` times as each of `users`, `clients` requests in flight; returns the accepted command ids
/// (in acceptance order per client) and the number of non-202 answers.
async fn post_many(
    http: &Arc<Http>,
    users: &[(String, String)],
    per_user: usize,
    tag: &str,
) -> (Vec<uuid::Uuid>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for (user, tok) in users {
        let (user, tok) = (user.clone(), tok.clone());
        let http = http.clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            let mut ok = Vec::new();
            let mut failed = 0;
            for i in 0..per_user {
                let body = serde_json::json!({"body": format!("{tag} {user} #{i}")});
                let (code, answer) = http.call("POST", "/v1/posts", Some(&tok), Some(body), &[]).await;
                if code == 202 {
                    ok.push(uuid::Uuid::parse_str(answer["command_id"].as_str().unwrap()).unwrap());
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        });
    }
    let mut all = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (ok, f) = r.unwrap();
        all.extend(ok);
        failed += f;
    }
    (all, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingester_killed_mid_batch_loses_and_doubles_nothing() {
    let wiring = Wiring::fresh().await;
    let (api_port, ing_port) = (free_port(), free_port());
    let _api = wiring.write_api(api_port);
    let mut ingester = wiring.ingester(ing_port, &["--batch-size", "64"]);
    let http = Arc::new(Http::new(api_port));
    http.wait_ready(Duration::from_secs(20)).await;
    let users = register_users(&http, "k", 16).await;
    let pool = pg(&wiring.database_url).await;

    // Load in the background; kill the ingester twice while batches are being committed.
    let load = {
        let (http, users) = (http.clone(), users.clone());
        tokio::spawn(async move { post_many(&http, &users, 120, "kill").await })
    };
    for round in 0..2 {
        wait_recorded(&pool, "publish_post", 300 * (round + 1), Duration::from_secs(60)).await;
        ingester.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        ingester = wiring.ingester(ing_port, &["--batch-size", "64"]);
    }
    let (accepted, failed) = load.await.unwrap();
    assert_eq!(failed, 0, "the write API answered non-202 while the ingester restarted");
    assert_eq!(accepted.len(), 16 * 120);
    wait_recorded(&pool, "publish_post", accepted.len(), Duration::from_secs(90)).await;
    assert_exactly_once(&pool, &accepted, "PostPublished").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_store_down_writes_park_in_backup_then_drain_in_order() {
    let primary = PgServer::start();
    let wiring = Wiring {
        backup_database_url: Some(
            testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_BACKUP_URL")).await,
        ),
        ..Wiring::shared(testkit::fresh_database(&primary.admin_url()).await)
    };
    let side = write_side(&wiring, "p", 4).await;
    let (http, users) = (side.http.clone(), side.users.clone());
    let (mut accepted, failed) = post_many(&http, &users, 25, "before").await;
    assert_eq!(failed, 0);

    primary.stop();
    // One writer, in sequence: the order these are accepted is the order they must commit in.
    let (writer, tok) = users[0].clone();
    let mut during = Vec::new();
    for i in 0..60 {
        let body = serde_json::json!({"body": format!("during {writer} #{i}")});
        let (code, answer) = http.call("POST", "/v1/posts", Some(&tok), Some(body), &[]).await;
        assert_eq!(code, 202, "write {i} refused while the primary store is down: {answer}");
        during.push(uuid::Uuid::parse_str(answer["command_id"].as_str().unwrap()).unwrap());
    }
    let (more, failed) = post_many(&http, &users[1..], 20, "during").await;
    assert_eq!(failed, 0);

    // They are parked in the backup, and the API says so.
    let backup = pg(wiring.backup_database_url.as_ref().unwrap()).await;
    let parked = testkit::eventually(Duration::from_secs(30), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM parked_commands").fetch_one(&backup).await.unwrap();
        n >= 60
    })
    .await;
    assert!(parked, "writes made while the primary was down were not parked in the backup");
    let last = during.last().unwrap().to_string();
    let status = http.call("GET", &format!("/v1/commands/{last}"), Some(&tok), None, &[]).await.1;
    assert_eq!(status["status"], "queued");
    assert_eq!(status["stored_in"], "backup", "{status}");

    primary.start_again();
    accepted.extend(during.iter().copied());
    accepted.extend(more);
    let pool = pg(&wiring.database_url).await;
    wait_recorded(&pool, "publish_post", accepted.len(), Duration::from_secs(60)).await;
    assert_exactly_once(&pool, &accepted, "PostPublished").await;
    // A drained batch is deleted from the backup after it is recorded in the primary (two databases: no
    // common transaction), so the last delete may follow the last record by a moment.
    let drained = testkit::eventually(Duration::from_secs(10), || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM parked_commands").fetch_one(&backup).await.unwrap();
        left == 0
    })
    .await;
    assert!(drained, "the backup is drained");

    // The single writer's posts committed in the order they were accepted.
    let positions: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT command_id, position FROM events WHERE command_id = ANY($1)")
            .bind(&during)
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_id: std::collections::HashMap<_, _> = positions.into_iter().collect();
    let ordered: Vec<i64> = during.iter().map(|id| by_id[id]).collect();
    assert!(ordered.windows(2).all(|w| w[0] < w[1]), "drained out of order: {ordered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_queue_down_writes_go_to_the_secondary_and_are_ingested() {
    let mut nats_primary = NatsServer::start();
    let nats_secondary = NatsServer::start();
    let wiring = Wiring {
        nats_url: nats_primary.url(),
        nats_secondary_url: Some(nats_secondary.url()),
        ..Wiring::fresh().await
    };
    let side = write_side(&wiring, "n", 4).await;
    let (http, users) = (side.http.clone(), side.users.clone());

    let (mut accepted, failed) = post_many(&http, &users, 25, "before").await;
    assert_eq!(failed, 0);
    nats_primary.stop();
    let (during, failed) = post_many(&http, &users, 25, "during").await;
    assert_eq!(failed, 0, "writes were refused although the secondary queue was up");
    accepted.extend(during.iter().copied());

    // Ingested from the secondary while the primary is still down.
    let pool = pg(&wiring.database_url).await;
    let per = testkit::eventually(Duration::from_secs(30), || async {
        events_per_command(&pool, &during).await.len() == during.len()
    })
    .await;
    assert!(per, "writes queued on the secondary were not ingested");

    // The primary returns with whatever it still held; everything ends exactly once.
    nats_primary.start_again();
    let (after, failed) = post_many(&http, &users, 10, "after").await;
    assert_eq!(failed, 0);
    accepted.extend(after);
    wait_recorded(&pool, "publish_post", accepted.len(), Duration::from_secs(60)).await;
    assert_exactly_once(&pool, &accepted, "PostPublished").await;
}

/// Post `per_user` times as each user, one request at a time per user, as a well-behaved client does: each
/// post under its own idempotency key, retried with it until it is answered 202. Returns each user's
/// command ids in acceptance order and the number of retries.
async fn post_retrying(
    http: &Arc<Http>,
    users: &[(String, String)],
    per_user: usize,
) -> (Vec<Vec<uuid::Uuid>>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (user, tok)) in users.iter().enumerate() {
        let (user, tok, http) = (user.clone(), tok.clone(), http.clone());
        tasks.spawn(async move {
            let (mut ids, mut retries) = (Vec::new(), 0);
            for n in 0..per_user {
                let key = format!("{user}-{n}");
                let body = serde_json::json!({"body": format!("{user} #{n}")});
                loop {
                    let headers = [("idempotency-key", key.as_str())];
                    let (code, answer) =
                        http.call("POST", "/v1/posts", Some(&tok), Some(body.clone()), &headers).await;
                    if code == 202 {
                        ids.push(uuid::Uuid::parse_str(answer["command_id"].as_str().unwrap()).unwrap());
                        break;
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (i, ids, retries)
        });
    }
    let mut out = vec![Vec::new(); users.len()];
    let mut retries = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, ids, r) = r.unwrap();
        out[i] = ids;
        retries += r;
    }
    (out, retries)
}

/// Wait until the cluster has elected its JetStream leader and can place a replicated stream.
async fn jetstream_ready(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let name = format!("READY_{}", uuid::Uuid::new_v4().simple());
    let ready = testkit::eventually(Duration::from_secs(30), || async {
        let config = async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("ready.{name}")],
            num_replicas: 3,
            ..Default::default()
        };
        js.get_or_create_stream(config).await.is_ok()
    })
    .await;
    assert!(ready, "the NATS cluster never accepted a replicated stream");
    let _ = js.delete_stream(&name).await;
}

/// A 3-node NATS cluster with the streams replicated on every node (R3) and the commands in 4 partitions,
/// consumed by two ingesters at once. A node is killed in the middle of the writes: every accepted post is
/// exactly one event, and each writer's posts are stored in the order they were accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_node_killed_under_writes_two_ingesters_lose_nothing_and_keep_each_writer_s_order() {
    let mut nats = NatsCluster::start();
    let mut wiring = Wiring { nats_url: nats.url(), ..Wiring::fresh().await };
    wiring.env = vec![
        ("SOCIALNET_STREAM_REPLICAS".into(), "3".into()),
        ("SOCIALNET_QUEUE_PARTITIONS".into(), "4".into()),
        ("SOCIALNET_INGESTER_REPLICAS".into(), "2".into()),
    ];
    jetstream_ready(&format!("nats://127.0.0.1:{}", nats.ports[1])).await;
    let api_port = free_port();
    let _api = wiring.write_api(api_port);
    let _first = wiring.ingester(free_port(), &["--index", "0", "--batch-size", "64"]);
    let _second = wiring.ingester(free_port(), &["--index", "1", "--batch-size", "64"]);
    let http = Arc::new(Http::new(api_port));
    http.wait_ready(Duration::from_secs(30)).await;
    let users = register_users(&http, "r", 12).await;
    let pool = pg(&wiring.database_url).await;

    let load = {
        let (http, users) = (http.clone(), users.clone());
        tokio::spawn(async move { post_retrying(&http, &users, 40).await })
    };
    wait_recorded(&pool, "publish_post", 150, Duration::from_secs(60)).await;
    nats.kill(0);
    let (accepted, retries) = load.await.unwrap();
    eprintln!("{retries} retries after the node was killed");
    let all: Vec<uuid::Uuid> = accepted.iter().flatten().copied().collect();
    assert_eq!(all.len(), 12 * 40);
    wait_recorded(&pool, "publish_post", all.len(), Duration::from_secs(90)).await;
    assert_exactly_once(&pool, &all, "PostPublished").await;
    // Each writer's posts in acceptance order have increasing positions in the event store.
    for ids in &accepted {
        let rows: Vec<(uuid::Uuid, i64)> =
            sqlx::query_as("SELECT command_id, position FROM events WHERE command_id = ANY($1)")
                .bind(ids)
                .fetch_all(&pool)
                .await
                .unwrap();
        let at: std::collections::HashMap<uuid::Uuid, i64> = rows.into_iter().collect();
        let positions: Vec<i64> = ids.iter().map(|id| at[id]).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "a writer's posts out of order: {positions:?}");
    }
    // Both ingesters took part: every partition's own consumer delivered commands.
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.ports[1])).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(format!("{}_COMMANDS", wiring.queue_prefix)).await.unwrap();
    assert_eq!(stream.cached_info().config.num_replicas, 3);
    for p in 0..4 {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&format!("ingester-p{p}")).await.unwrap();
        let info = consumer.info().await.unwrap().clone();
        assert!(info.delivered.stream_sequence > 0, "partition {p} was never consumed");
        // Acks go out in the background after each commit.
        let acked = testkit::eventually(Duration::from_secs(15), || {
            let mut consumer = consumer.clone();
            async move { consumer.info().await.is_ok_and(|i| i.num_ack_pending == 0) }
        })
        .await;
        assert!(acked, "partition {p} left commands unacknowledged");
    }
}

/// Both queues down: a write is refused with 503 and a `Retry-After` (refused, never accepted and lost);
/// once a queue is back, the client's retry with the same idempotency key is accepted and committed exactly
/// once, and retrying again answers with the same command.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_queues_down_a_write_is_refused_with_retry_after_and_its_retry_commits_once() {
    let mut nats_primary = NatsServer::start();
    let mut nats_secondary = NatsServer::start();
    let wiring = Wiring {
        nats_url: nats_primary.url(),
        nats_secondary_url: Some(nats_secondary.url()),
        ..Wiring::fresh().await
    };
    let side = write_side(&wiring, "q", 1).await;
    let (http, users) = (side.http.clone(), side.users.clone());
    let (_, tok) = &users[0];

    nats_primary.stop();
    nats_secondary.stop();
    let body = serde_json::json!({"body": "written while both queues were down"});
    let key = [("idempotency-key", "both-queues-down-1")];
    let (code, headers, problem) =
        http.call_full("POST", "/v1/posts", Some(tok), Some(body.clone()), &key).await;
    assert_eq!(code, 503, "{problem}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert_eq!(headers["content-type"], "application/problem+json");

    nats_primary.start_again();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        let (code, answer) = http.call("POST", "/v1/posts", Some(tok), Some(body.clone()), &key).await;
        if code == 202 {
            break answer["command_id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the retry was never accepted: {code} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (code, again) = http.call("POST", "/v1/posts", Some(tok), Some(body), &key).await;
    assert_eq!(
        (code, again["command_id"].as_str()),
        (202, Some(id.as_str())),
        "the same key, the same command"
    );
    let pool = pg(&wiring.database_url).await;
    wait_recorded(&pool, "publish_post", 1, Duration::from_secs(30)).await;
    assert_exactly_once(&pool, &[uuid::Uuid::parse_str(&id).unwrap()], "PostPublished").await;
}

/// Both event stores down, the primary and the backup: the write API still accepts (the queue is up), the
/// ingester acknowledges none of the commands (they stay in the queue, none goes to the dead-letter queue),
/// and once the primary returns each is committed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_stores_down_the_ingester_acknowledges_nothing_and_loses_nothing() {
    let (primary, backup) = (PgServer::start(), PgServer::start());
    let wiring = Wiring {
        backup_database_url: Some(testkit::fresh_database(&backup.admin_url()).await),
        ..Wiring::shared(testkit::fresh_database(&primary.admin_url()).await)
    };
    let side = write_side(&wiring, "b", 3).await;
    let (http, users) = (side.http.clone(), side.users.clone());
    let (mut accepted, failed) = post_many(&http, &users, 5, "before").await;
    assert_eq!(failed, 0);
    let pool = pg(&wiring.database_url).await;
    wait_recorded(&pool, "publish_post", accepted.len(), Duration::from_secs(30)).await;
    pool.close().await;
    // Commands travel grouped in messages, so the queue is checked in messages: every one acknowledged now.
    let names =
        queue::QueueNames::with_prefix(&wiring.queue_prefix, &wiring.queue_prefix.to_ascii_lowercase());
    let js = async_nats::jetstream::new(async_nats::connect(&wiring.nats_url).await.unwrap());
    let settled = testkit::eventually(Duration::from_secs(10), || async {
        let mut stream = js.get_stream(&names.commands_stream).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        stream.consumer_info(&names.consumer).await.unwrap().ack_floor.stream_sequence == last
    })
    .await;
    assert!(settled, "the commands written before the outage were never all acknowledged");
    let mut stream = js.get_stream(&names.commands_stream).await.unwrap();
    let floor = stream.info().await.unwrap().state.last_sequence;

    primary.stop();
    backup.stop();
    let (during, failed) = post_many(&http, &users, 10, "during").await;
    assert_eq!(failed, 0, "the queue is up, so writes are accepted");
    // Long enough for the ingester to try both stores, fail and try again several times.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let last = stream.info().await.unwrap().state.last_sequence;
    assert!(last > floor, "the writes made during the outage are in the queue");
    let info = stream.consumer_info(&names.consumer).await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, floor, "a command was acknowledged with both stores down");
    assert_eq!(
        info.num_pending + info.num_ack_pending as u64,
        last - floor,
        "every message written while both stores were down is still unacknowledged: {info:?}"
    );
    let mut dlq = js.get_stream(&names.dlq_stream).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 0, "nothing was dead-lettered");

    primary.start_again();
    accepted.extend(during);
    let pool = pg(&wiring.database_url).await;
    wait_recorded(&pool, "publish_post", accepted.len(), Duration::from_secs(60)).await;
    assert_exactly_once(&pool, &accepted, "PostPublished").await;
}

/// The write API SIGKILLed twice while writers post (each post under its own idempotency key, retried
/// until answered 202, as a well-behaved client does): requests cut off by the kill are retried against
/// the restarted API, and every post ends as exactly one event — none lost, none doubled by its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_api_killed_mid_request_every_write_commits_exactly_once() {
    let wiring = Wiring::fresh().await;
    let mut side = write_side(&wiring, "w", 8).await;
    let (http, users) = (side.http.clone(), side.users.clone());
    let pool = pg(&wiring.database_url).await;

    let load = {
        let (http, users) = (http.clone(), users.clone());
        tokio::spawn(async move { post_retrying(&http, &users, 40).await })
    };
    for round in 0..2 {
        wait_recorded(&pool, "publish_post", 80 * (round + 1), Duration::from_secs(60)).await;
        side.api.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        side.api = wiring.write_api(side.api_port);
    }
    let (ids, retries) = load.await.unwrap();
    let accepted: Vec<uuid::Uuid> = ids.into_iter().flatten().collect();
    assert_eq!(accepted.len(), 8 * 40);
    assert!(retries > 0, "no request met the killed write API: the test did not test the kill");
    wait_recorded(&pool, "publish_post", accepted.len(), Duration::from_secs(60)).await;
    assert_exactly_once(&pool, &accepted, "PostPublished").await;
}
