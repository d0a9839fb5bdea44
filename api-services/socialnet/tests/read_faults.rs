//! Faults on the read side, with real processes and servers: a Redis Cluster master killed under reads (its
//! replica is promoted, no read fails, verify is clean); the primary Redis killed under continuous
//! reads (the standby serves, no read fails; the primary comes back empty, a rebuild restores it, verify
//! finds no difference); a "projection-directed attack" on Redis (single and cluster) found by verify and
//! repaired by a rebuild
//! while reads go on; the projector killed mid-batch; two transactions committing out of order.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Users a0..a{n}, all following a0, each with a few posts; returns the tokens.
async fn populate(stack: &Stack, n: usize, posts_each: usize) -> Vec<(String, String)> {
    let users = register_users(&stack.write, "a", n).await;
    let mut last = None;
    for (u, t) in users.iter().skip(1) {
        let (code, _) =
            stack.write.call("PUT", &format!("/v1/users/{u}/following/a0"), Some(t), None, &[]).await;
        assert_eq!(code, 202);
    }
    for (u, t) in &users {
        for i in 0..posts_each {
            let (code, a) = stack
                .write
                .call("POST", "/v1/posts", Some(t), Some(json!({"body": format!("{u} {i}")})), &[])
                .await;
            assert_eq!(code, 202);
            last = Some((t.clone(), a["command_id"].as_str().unwrap().to_owned()));
        }
    }
    if let Some((t, id)) = last {
        stack.write.wait_decided(&t, &id, Duration::from_secs(30)).await;
    }
    users
}

/// Wait until the read API shows `count` posts for a0.
async fn wait_posts(stack: &Stack, tok: &str, count: usize) {
    let ok = testkit::eventually(Duration::from_secs(30), || async {
        let (code, p) = stack.read.call("GET", "/v1/users/a0", Some(tok), None, &[]).await;
        code == 200 && p["posts_count"] == count
    })
    .await;
    assert!(ok, "the projection never showed {count} posts for a0");
}

/// Reads in a loop until stopped; counts answers that were not 200 (and which target served).
struct Reader {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Reader {
    fn start(port: u16, tok: String, paths: Vec<String>) -> Reader {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let http = Http::new(port);
            let mut failures = Vec::new();
            while !s.load(Ordering::SeqCst) {
                for p in &paths {
                    let (code, body) = http.call("GET", p, Some(&tok), None, &[]).await;
                    if code == 200 {
                        o.fetch_add(1, Ordering::SeqCst);
                    } else {
                        f.fetch_add(1, Ordering::SeqCst);
                        failures.push(format!("{p}: {code} {body}"));
                    }
                }
            }
            failures
        });
        Reader { stop, ok, failed, task }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.task.await.unwrap();
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_redis_killed_under_reads_standby_serves_then_rebuild_restores_it() {
    let mut primary = testkit::RedisServer::start();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (p, s) = (format!("p{tag}"), format!("s{tag}"));
    let targets =
        format!("{p}={},{s}={}", primary.url(), testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL"));
    let stack = Stack::start(&targets).await;
    let users = populate(&stack, 5, 4).await;
    let tok = users[1].1.clone();
    wait_posts(&stack, &tok, 4).await;

    let reader = Reader::start(
        stack.ports[3],
        tok.clone(),
        vec!["/v1/users/a0".into(), "/v1/users/a1/home?limit=10".into(), "/v1/users/a0/followers".into()],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    primary.stop();
    let killed_at = std::time::Instant::now();
    // Writes go on while the primary is gone; the standby shows them.
    let (code, _) = stack
        .write
        .call("POST", "/v1/posts", Some(&users[0].1), Some(json!({"body": "during the outage"})), &[])
        .await;
    assert_eq!(code, 202);
    wait_posts(&stack, &tok, 5).await;
    let served_by_standby = testkit::eventually(Duration::from_secs(5), || async {
        let admin =
            stack.read.call("GET", "/admin/projections", Some(&admin_token("ops")), None, &[]).await.1;
        admin["targets"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["name"] == p.as_str() && t["healthy"] == false))
    })
    .await;
    assert!(served_by_standby, "the read API never marked the dead primary unhealthy");
    eprintln!("primary marked unhealthy {:?} after the kill", killed_at.elapsed());

    // The primary returns empty; rebuild it and check it against the event store.
    primary.start_again();
    let (ok, out) = stack.wiring.projector_cmd("rebuild", &p, &targets);
    assert!(ok, "rebuild failed: {out}");
    assert!(out.contains("\"done\":true"), "{out}");
    let verified = testkit::eventually(Duration::from_secs(20), || async {
        stack.wiring.projector_cmd("verify", &p, &targets).0
    })
    .await;
    assert!(
        verified,
        "verify found differences after the rebuild:\n{}",
        stack.wiring.projector_cmd("verify", &p, &targets).1
    );
    assert!(stack.wiring.projector_cmd("verify", &s, &targets).0, "the standby differs");

    let (ok_reads, failed, failures) = reader.finish().await;
    assert_eq!(failed, 0, "client reads failed: {failures:?}");
    assert!(ok_reads > 10, "the reader barely ran ({ok_reads} reads)");
}

/// A master of the cluster target killed under reads: the read API serves from the standby meanwhile (no
/// read fails), the cluster promotes the master's replica, and the cluster target then holds every batch it
/// committed (each waited for a replica) and catches up: verify finds no difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_master_killed_under_reads_its_replica_takes_over_and_no_read_fails() {
    let mut cluster = testkit::RedisCluster::start();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (c, s) = (format!("c{tag}"), format!("s{tag}"));
    let targets = format!(
        "{c}=redis+cluster://{},{s}={}",
        cluster.seeds().join(","),
        testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL")
    );
    let stack = Stack::start(&targets).await;
    let users = populate(&stack, 5, 4).await;
    let tok = users[1].1.clone();
    wait_posts(&stack, &tok, 4).await;
    let reader = Reader::start(
        stack.ports[3],
        tok.clone(),
        vec!["/v1/users/a0".into(), "/v1/users/a1/home?limit=10".into(), "/v1/users/a0/followers".into()],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    cluster.kill(masters[0]);
    let killed_at = std::time::Instant::now();
    let (code, _) = stack
        .write
        .call("POST", "/v1/posts", Some(&users[0].1), Some(json!({"body": "during the failover"})), &[])
        .await;
    assert_eq!(code, 202);
    wait_posts(&stack, &tok, 5).await;
    // The node timeout is 1 s: the others first agree the master failed, then promote its replica.
    let promoted = testkit::eventually(Duration::from_secs(30), || async {
        cluster.masters().len() == 3
            && cluster.ports.iter().filter(|p| **p != masters[0]).all(|p| cluster.wait_ok(*p, Duration::ZERO))
    })
    .await;
    assert!(promoted, "the cluster never promoted the dead master's replica");
    eprintln!("replica promoted, cluster ok {:?} after the kill", killed_at.elapsed());
    let verified = testkit::eventually(Duration::from_secs(30), || async {
        stack.wiring.projector_cmd("verify", &c, &targets).0
    })
    .await;
    assert!(
        verified,
        "the cluster target differs:\n{}",
        stack.wiring.projector_cmd("verify", &c, &targets).1
    );
    let (ok_reads, failed, failures) = reader.finish().await;
    assert_eq!(failed, 0, "client reads failed: {failures:?}");
    assert!(ok_reads > 10, "the reader barely ran ({ok_reads} reads)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_directed_attack_is_found_by_verify_and_repaired_by_rebuild() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let p = format!("p{tag}");
    let url = testkit::env_url("SOCIALNET_TEST_REDIS_URL");
    attack_and_repair(&p, &format!("{p}={url}"), vec![url.clone()], format!("{p}:current"), |g, k| {
        format!("{p}:g{g}:{k}")
    })
    .await;
}

/// The same on a Redis Cluster target: the keys are found on whichever master holds their partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_directed_attack_on_a_cluster_is_found_by_verify_and_repaired_by_rebuild() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let p = format!("p{tag}");
    let urls = testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS");
    let seeds: Vec<&str> = urls.iter().map(|u| u.trim_start_matches("redis://")).collect();
    let targets = format!("{p}=redis+cluster://{}", seeds.join(","));
    attack_and_repair(&p, &targets, urls.clone(), format!("{{{p}}}:current"), |g, k| {
        format!("{p}:g{g}:*:{k}")
    })
    .await;
}

/// The node (of `urls`, masters only) holding the one key that matches `pattern`, and that key.
async fn locate(urls: &[String], pattern: &str) -> (redis::aio::MultiplexedConnection, String) {
    for url in urls {
        let mut conn =
            redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.unwrap();
        if !matches!(&role[0], redis::Value::BulkString(r) if r == b"master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap();
        if let Some(k) = keys.into_iter().next() {
            return (conn, k);
        }
    }
    panic!("no key matches {pattern}");
}

/// A home timeline deleted, a counter inflated, a post body rewritten behind the projector's back: verify
/// lists exactly those, a rebuild repairs them, and reads go on throughout.
async fn attack_and_repair(
    p: &str,
    targets: &str,
    urls: Vec<String>,
    current: String,
    pattern: impl Fn(u64, &str) -> String,
) {
    let stack = Stack::start(targets).await;
    let users = populate(&stack, 4, 3).await;
    let tok = users[1].1.clone();
    wait_posts(&stack, &tok, 3).await;
    let (ok, out) = stack.wiring.projector_cmd("verify", p, targets);
    assert!(ok, "differences before the attack:\n{out}");
    let reader =
        Reader::start(stack.ports[3], tok.clone(), vec!["/v1/users/a0".into(), "/v1/users/a1/home".into()]);

    let (mut conn, key) = locate(&urls, &current).await;
    let generation: u64 = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
    let (mut conn, utl) = locate(&urls, &pattern(generation, "utl:a0")).await;
    let post_ids: Vec<String> =
        redis::cmd("ZRANGE").arg(utl).arg(0).arg(0).query_async(&mut conn).await.unwrap();
    let (mut conn, home) = locate(&urls, &pattern(generation, "home:a2")).await;
    let _: () = redis::cmd("DEL").arg(home).query_async(&mut conn).await.unwrap();
    let (mut conn, user) = locate(&urls, &pattern(generation, "user:a0")).await;
    let _: () =
        redis::cmd("HSET").arg(user).arg("followers_count").arg(100000).query_async(&mut conn).await.unwrap();
    let (mut conn, post) = locate(&urls, &pattern(generation, &format!("post:{}", post_ids[0]))).await;
    let _: () = redis::cmd("HSET").arg(post).arg("body").arg("pwned").query_async(&mut conn).await.unwrap();

    let (ok, out) = stack.wiring.projector_cmd("verify", p, targets);
    assert!(!ok, "verify missed the attack");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(out.contains("missing key home:a2"), "{out}");
    assert!(out.contains("user:a0: field followers_count is \"100000\""), "{out}");
    assert!(out.contains("field body is \"pwned\""), "{out}");

    let (ok, out) = stack.wiring.projector_cmd("rebuild", p, targets);
    assert!(ok, "{out}");
    let (ok, out) = stack.wiring.projector_cmd("verify", p, targets);
    assert!(ok, "differences after the rebuild:\n{out}");
    let profile = stack.read.call("GET", "/v1/users/a0", Some(&tok), None, &[]).await.1;
    assert_eq!(profile["followers_count"], 3);

    let (_, failed, failures) = reader.finish().await;
    assert_eq!(failed, 0, "reads failed during attack and repair: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_mid_batch_resumes_without_double_counting() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let p = format!("p{tag}");
    let targets = format!("{p}={}", testkit::env_url("SOCIALNET_TEST_REDIS_URL"));
    let mut stack = Stack::start(&targets).await;
    let users = register_users(&stack.write, "k", 8).await;
    for (u, t) in users.iter().skip(1) {
        stack.write.call("PUT", &format!("/v1/users/{u}/following/k0"), Some(t), None, &[]).await;
    }
    // Many likes and posts, while the projector is killed twice.
    let (code, first) = stack
        .write
        .call("POST", "/v1/posts", Some(&users[0].1), Some(json!({"body": "liked a lot"})), &[])
        .await;
    assert_eq!(code, 202);
    let post = first["post_id"].as_str().unwrap().to_owned();
    for round in 0..3 {
        for (u, t) in &users {
            for i in 0..15 {
                stack
                    .write
                    .call(
                        "POST",
                        "/v1/posts",
                        Some(t),
                        Some(json!({"body": format!("{u} {round} {i}")})),
                        &[],
                    )
                    .await;
            }
        }
        if round < 2 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            stack.restart_projector();
        }
    }
    for (u, t) in &users {
        stack.write.call("PUT", &format!("/v1/posts/{post}/likes/{u}"), Some(t), None, &[]).await;
    }
    let tok = users[1].1.clone();
    let ok = testkit::eventually(Duration::from_secs(60), || async {
        let p = stack.read.call("GET", &format!("/v1/posts/{post}"), Some(&tok), None, &[]).await.1;
        p["like_count"] == 8
    })
    .await;
    assert!(ok, "likes never all arrived");
    let profile = stack.read.call("GET", "/v1/users/k0", Some(&tok), None, &[]).await.1;
    assert_eq!(profile["posts_count"], 46);
    assert_eq!(profile["followers_count"], 7);
    let (ok, out) = stack.wiring.projector_cmd("verify", &p, &targets);
    assert!(ok, "double counting or loss after projector restarts:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_commits_reach_every_projection() {
    use sqlx::Connection;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let targets = format!(
        "p{tag}={},s{tag}={}",
        testkit::env_url("SOCIALNET_TEST_REDIS_URL"),
        testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL")
    );
    let stack = Stack::start(&targets).await;
    let users = register_users(&stack.write, "o", 2).await;
    let tok = users[1].1.clone();

    // A: a post event inserted by a transaction that stays open while B commits through the system.
    let mut conn = sqlx::PgConnection::connect(&stack.wiring.database_url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let a_post = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (event_id, command_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES (gen_random_uuid(), gen_random_uuid(), $1, 1, 'PostPublished', 1, $2::jsonb, '{}'::jsonb)",
    )
    .bind(format!("post-{a_post}"))
    .bind(json!({"post_id": a_post, "author_id": "o0", "body": "committed late", "reply_to": null}).to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    let (code, b) = stack
        .write
        .call("POST", "/v1/posts", Some(&users[0].1), Some(json!({"body": "committed first"})), &[])
        .await;
    assert_eq!(code, 202);
    let b_post = b["post_id"].as_str().unwrap().to_owned();
    stack.write.wait_decided(&users[0].1, b["command_id"].as_str().unwrap(), Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B is committed but must not be projected past A's open transaction.
    assert_eq!(stack.read.call("GET", &format!("/v1/posts/{b_post}"), Some(&tok), None, &[]).await.0, 404);
    tx.commit().await.unwrap();

    for path in [format!("/v1/posts/{a_post}"), format!("/v1/posts/{b_post}")] {
        let seen = testkit::eventually(Duration::from_secs(20), || async {
            stack.read.call("GET", &path, Some(&tok), None, &[]).await.0 == 200
        })
        .await;
        assert!(seen, "{path} never reached the projection");
    }
    for t in [format!("p{tag}"), format!("s{tag}")] {
        let (ok, out) = stack.wiring.projector_cmd("verify", &t, &targets);
        assert!(ok, "{t}: {out}");
    }
    let timeline = stack.read.call("GET", "/v1/users/o0/timeline", Some(&tok), None, &[]).await.1;
    assert_eq!(timeline["items"].as_array().unwrap().len(), 2);
}
