//! The whole system through HTTP, in dev mode (one process) and in distributed mode (separate write API,
//! ingester, projector with two Redis targets, read API, on real PostgreSQL, NATS and Redis): users follow,
//! post, like, comment, edit, delete, unfollow; every list and count is right and pagination walks every
//! item exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Issue a write and return its command id.
async fn write(http: &Http, tok: &str, method: &str, path: &str, body: Option<Value>) -> String {
    let (code, answer) = http.call(method, path, Some(tok), body, &[]).await;
    assert_eq!(code, 202, "{method} {path}: {answer}");
    answer["command_id"].as_str().unwrap().to_owned()
}

/// Poll a read until `check` holds.
async fn until(read: &Http, tok: &str, path: &str, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (code, body) = read.call("GET", path, Some(tok), None, &[]).await;
        if check(code, &body) {
            return body;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: GET {path} still {code} {body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Walk a list with `limit` per page; returns every item and checks none repeats.
async fn walk(read: &Http, tok: &str, path: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (code, page) = read.call("GET", &url, Some(tok), None, &[]).await;
        assert_eq!(code, 200, "{url}: {page}");
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let ids: std::collections::HashSet<String> = items
        .iter()
        .map(|i| i.get("post_id").or(i.get("user_id")).or(i.get("comment_id")).unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), items.len(), "an item came twice walking {path}");
    items
}

/// The scenario, given where to write and read and how to get tokens.
async fn scenario(w: &Http, r: &Http, token: &dyn Fn(&str) -> String, admin: Option<String>) {
    let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));
    let mut last = Vec::new();
    for (u, t) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        last.push((
            t.clone(),
            write(w, t, "POST", "/v1/users", Some(json!({"handle": u, "display_name": u.to_uppercase()})))
                .await,
        ));
    }
    for (t, id) in &last {
        assert_eq!(w.wait_decided(t, id, Duration::from_secs(20)).await["status"], "committed");
    }
    write(w, &alice, "PUT", "/v1/users/alice/following/bob", None).await;
    write(w, &carol, "PUT", "/v1/users/carol/following/bob", None).await;
    write(w, &bob, "PUT", "/v1/users/bob/following/alice", None).await;
    let mut bob_posts = Vec::new();
    for i in 0..25 {
        let (code, a) = w
            .call("POST", "/v1/posts", Some(&bob), Some(json!({"body": format!("bob post {i}")})), &[])
            .await;
        assert_eq!(code, 202);
        bob_posts.push(a["post_id"].as_str().unwrap().to_owned());
    }
    for i in 0..3 {
        write(w, &alice, "POST", "/v1/posts", Some(json!({"body": format!("alice post {i}")}))).await;
    }
    let first = bob_posts[0].clone();
    let gone = bob_posts[5].clone();
    write(w, &alice, "PUT", &format!("/v1/posts/{first}/likes/alice"), None).await;
    write(w, &alice, "PUT", &format!("/v1/posts/{first}/likes/alice"), None).await; // a second like: no-op
    write(w, &carol, "PUT", &format!("/v1/posts/{first}/likes/carol"), None).await;
    write(w, &alice, "POST", &format!("/v1/posts/{first}/comments"), Some(json!({"body": "first!"}))).await;
    write(w, &carol, "POST", &format!("/v1/posts/{first}/comments"), Some(json!({"body": "second"}))).await;
    write(w, &bob, "PATCH", &format!("/v1/posts/{first}"), Some(json!({"body": "bob post 0 (edited)"})))
        .await;
    write(w, &bob, "DELETE", &format!("/v1/posts/{gone}"), None).await;
    write(w, &bob, "PATCH", "/v1/users/bob", Some(json!({"bio": "posting a lot"}))).await;
    let final_cmd = write(w, &carol, "DELETE", "/v1/users/carol/following/bob", None).await;
    assert_eq!(w.wait_decided(&carol, &final_cmd, Duration::from_secs(20)).await["status"], "committed");

    // Wait until the projection shows the last write, then check everything.
    until(r, &alice, "/v1/users/bob", "carol's unfollow", |c, b| c == 200 && b["followers_count"] == 1).await;
    let profile = r.call("GET", "/v1/users/bob", Some(&alice), None, &[]).await.1;
    assert_eq!(profile["posts_count"], 24);
    assert_eq!(profile["following_count"], 1);
    assert_eq!(profile["handle"], "bob");
    assert_eq!(profile["bio"], "posting a lot");
    let post = r.call("GET", &format!("/v1/posts/{first}"), Some(&carol), None, &[]).await.1;
    assert_eq!(post["like_count"], 2);
    assert_eq!(post["comment_count"], 2);
    assert_eq!(post["body"], "bob post 0 (edited)");
    assert!(post["edited_at"].is_string());
    assert_eq!(post["author_id"], "bob");
    assert_eq!(r.call("GET", &format!("/v1/posts/{gone}"), Some(&carol), None, &[]).await.0, 404);

    let home = walk(r, &alice, "/v1/users/alice/home", 4).await;
    assert_eq!(home.len(), 27, "24 live posts of bob + 3 of alice");
    assert!(home.iter().all(|p| p["post_id"] != gone.as_str()));
    assert!(
        home.iter().all(|p| p["like_count"].is_number() && p["created_at"].is_string()),
        "hydrated posts"
    );
    let created: Vec<&str> = home.iter().map(|p| p["created_at"].as_str().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(walk(r, &carol, "/v1/users/carol/home", 10).await.len(), 0, "carol unfollowed bob");
    assert_eq!(walk(r, &bob, "/v1/users/bob/home", 100).await.len(), 27, "bob follows alice");
    assert_eq!(walk(r, &carol, "/v1/users/bob/timeline", 7).await.len(), 24);
    let followers = walk(r, &carol, "/v1/users/bob/followers", 1).await;
    assert_eq!(followers, vec![json!({"user_id": "alice", "handle": "alice"})]);
    assert_eq!(walk(r, &carol, "/v1/users/alice/following", 1).await.len(), 1);
    let comments = walk(r, &bob, &format!("/v1/posts/{first}/comments"), 1).await;
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[0]["body"], "second", "newest first");

    // Only the owner reads a home; paging parameters are checked; ETags work.
    assert_eq!(r.call("GET", "/v1/users/bob/home", Some(&alice), None, &[]).await.0, 403);
    assert_eq!(r.call("GET", "/v1/users/bob/timeline?limit=0", Some(&alice), None, &[]).await.0, 400);
    assert_eq!(r.call("GET", "/v1/users/bob/timeline?limit=101", Some(&alice), None, &[]).await.0, 400);
    assert_eq!(r.call("GET", "/v1/users/bob/timeline?cursor=abc", Some(&alice), None, &[]).await.0, 400);
    assert_eq!(r.call("GET", "/v1/users/bob/timeline?bogus=1", Some(&alice), None, &[]).await.0, 400);
    assert_eq!(r.call("GET", "/v1/users/nobody", Some(&alice), None, &[]).await.0, 404);
    assert_eq!(r.call("GET", "/v1/users/bob", None, None, &[]).await.0, 401);
    let etag = etag_of(r, &alice, "/v1/users/bob").await;
    let (code, _) =
        r.call("GET", "/v1/users/bob", Some(&alice), None, &[("if-none-match", etag.as_str())]).await;
    assert_eq!(code, 304);

    // The audit trail: admins only.
    assert_eq!(r.call("GET", "/v1/streams/user-bob/events", Some(&alice), None, &[]).await.0, 403);
    if let Some(admin) = admin {
        let (code, trail) = r.call("GET", "/v1/streams/user-bob/events", Some(&admin), None, &[]).await;
        assert_eq!(code, 200, "{trail}");
        let types: Vec<&str> =
            trail["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, vec!["UserRegistered", "UserFollowed", "ProfileUpdated"]);
        assert_eq!(r.call("GET", "/v1/streams/nonsense/events", Some(&admin), None, &[]).await.0, 400);
    }
}

async fn etag_of(r: &Http, tok: &str, path: &str) -> String {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = hyper::Request::get(format!("{}{path}", r.base))
        .header("authorization", format!("Bearer {tok}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let tag = resp.headers().get("etag").unwrap().to_str().unwrap().to_owned();
    let _ = resp.into_body().collect().await;
    tag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_in_dev_mode() {
    let dir = std::env::temp_dir().join(format!("socialnet-dev-{}", uuid::Uuid::new_v4().simple()));
    let port = testkit::free_port();
    let mut c = socialnet();
    c.env_remove("SOCIALNET_JWT_SECRET")
        .args(["dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir);
    let _dev = testkit::ChildGuard::spawn(&mut c);
    let http = Http::new(port);
    http.wait_ready(Duration::from_secs(20)).await;
    let token = |sub: &str| {
        let out = socialnet()
            .env_remove("SOCIALNET_JWT_SECRET")
            .args(["token", "--sub", sub, "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let admin = {
        let out = socialnet()
            .args(["token", "--sub", "root", "--role", "admin", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    scenario(&http, &http, &token, Some(admin)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scenario_distributed_over_two_redis_targets() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let targets = format!(
        "p{tag}={},s{tag}={}",
        testkit::env_url("SOCIALNET_TEST_REDIS_URL"),
        testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL")
    );
    let stack = Stack::start(&targets).await;
    scenario(&stack.write, &stack.read, &|s| token(s), Some(admin_token("root"))).await;

    // Both targets hold the same model: verify each against a replay of the event store.
    for t in [format!("p{tag}"), format!("s{tag}")] {
        let (ok, out) = stack.wiring.projector_cmd("verify", &t, &targets);
        assert!(ok, "verify {t} found differences:\n{out}");
    }
    // The projector reports both targets, caught up.
    let admin = stack.projector_admin.call("GET", "/admin/projections", None, None, &[]).await.1;
    let listed = admin["targets"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|t| t["healthy"] == true && t["lag_events"] == 0), "{admin}");
}

/// The same, with a Redis Cluster (3 masters with a replica each) as the primary target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scenario_distributed_over_a_redis_cluster_and_a_redis() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let targets = format!(
        "{},s{tag}={}",
        cluster_target(&format!("c{tag}")),
        testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL")
    );
    let stack = Stack::start(&targets).await;
    scenario(&stack.write, &stack.read, &|s| token(s), Some(admin_token("root"))).await;
    for t in [format!("c{tag}"), format!("s{tag}")] {
        let (ok, out) = stack.wiring.projector_cmd("verify", &t, &targets);
        assert!(ok, "verify {t} found differences:\n{out}");
    }
    let admin = stack.read.call("GET", "/admin/projections", Some(&admin_token("ops")), None, &[]).await.1;
    let cluster =
        admin["targets"].as_array().unwrap().iter().find(|t| t["name"] == format!("c{tag}").as_str());
    assert!(cluster.is_some_and(|t| t["healthy"] == true), "{admin}");
}

/// The titles (bodies) on a home page, and whether the page came from the read API's cache.
/// `None` until the read API can answer (a fresh stack's target has no generation yet).
async fn home_bodies_of(r: &Http, tok: &str, user: &str) -> Option<(Vec<String>, bool)> {
    let (code, headers, page) =
        r.call_full("GET", &format!("/v1/users/{user}/home"), Some(tok), None, &[]).await;
    if code == 503 {
        return None;
    }
    assert_eq!(code, 200, "{page}");
    let bodies = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} likes={}", p["body"].as_str().unwrap(), p["like_count"]))
        .collect();
    Some((bodies, headers.get("x-cache").is_some_and(|v| v == "hit")))
}

/// Poll a home until it reads `want` (cached pages live ten minutes here, so only the projector's
/// change notices can bring each change in).
async fn home_becomes_of(r: &Http, tok: &str, user: &str, want: &[&str], what: &str) {
    let started = std::time::Instant::now();
    loop {
        let got = home_bodies_of(r, tok, user).await.map(|(b, _)| b);
        if got.as_ref().is_some_and(|g| g == want) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: the home of {user} is still {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `name=redis+cluster://…` for the test command's Redis Cluster.
fn cluster_target(name: &str) -> String {
    let seeds: Vec<String> = testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS")
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect();
    format!("{name}=redis+cluster://{}", seeds.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_home_pages_follow_every_kind_of_change() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    cached_home_pages_follow_changes(
        &tag,
        &format!("p{tag}={}", testkit::env_url("SOCIALNET_TEST_REDIS_URL")),
    )
    .await;
}

/// The same on a Redis Cluster target: its notices come from every partition's script.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_home_pages_on_a_cluster_follow_every_kind_of_change() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    cached_home_pages_follow_changes(&tag, &cluster_target(&format!("p{tag}"))).await;
}

async fn cached_home_pages_follow_changes(tag: &str, targets: &str) {
    let stack = Stack::start(targets).await;
    let (w, r) = (&stack.write, &stack.read);
    let t = |u: &str| token(&format!("{u}{}", &tag[..6]));
    let id = |u: &str| format!("{u}{}", &tag[..6]);
    let (ann, bob, cat) = (id("ann"), id("bob"), id("cat"));
    let mut last = String::new();
    for u in ["ann", "bob", "cat", "dan", "eve"] {
        last = write(w, &t(u), "POST", "/v1/users", Some(json!({"handle": id(u), "display_name": u}))).await;
    }
    w.wait_decided(&t("eve"), &last, Duration::from_secs(20)).await;
    let ann_tok = t("ann");
    let home = |want: &'static [&'static str], what: &'static str| {
        let ann_tok = ann_tok.clone();
        let ann = ann.clone();
        async move { home_becomes_of(r, &ann_tok, &ann, want, what).await }
    };

    write(w, &ann_tok, "PUT", &format!("/v1/users/{ann}/following/{bob}"), None).await;
    let (_, a) = w.call("POST", "/v1/posts", Some(&t("bob")), Some(json!({"body": "b1"})), &[]).await;
    let b1 = a["post_id"].as_str().unwrap().to_owned();
    home(&["b1 likes=0"], "a followed user's post").await;
    // Nothing changed: the same page again comes from the cache.
    let (_, hit) = home_bodies_of(r, &ann_tok, &ann).await.unwrap();
    assert!(hit, "an unchanged home page is served from the cache");

    write(w, &t("cat"), "PUT", &format!("/v1/posts/{b1}/likes/{cat}"), None).await;
    home(&["b1 likes=1"], "a like").await;
    write(w, &t("bob"), "PATCH", &format!("/v1/posts/{b1}"), Some(json!({"body": "b1 edited"}))).await;
    home(&["b1 edited likes=1"], "an edit").await;

    // cat has a post before ann follows her: following backfills it.
    write(w, &t("cat"), "POST", "/v1/posts", Some(json!({"body": "c1"}))).await;
    write(w, &ann_tok, "PUT", &format!("/v1/users/{ann}/following/{cat}"), None).await;
    home(&["c1 likes=0", "b1 edited likes=1"], "a backfill").await;

    // Three more followers make bob a celebrity (the tests' threshold is 2): his posts are no longer
    // fanned out but merged in at read time, from his own timeline.
    for u in ["cat", "dan", "eve"] {
        write(w, &t(u), "PUT", &format!("/v1/users/{}/following/{bob}", id(u)), None).await;
    }
    until(r, &ann_tok, &format!("/v1/users/{bob}"), "bob's followers", |c, b| {
        c == 200 && b["followers_count"] == 4
    })
    .await;
    home(&["c1 likes=0", "b1 edited likes=1"], "a celebrity's home").await;
    write(w, &t("bob"), "POST", "/v1/posts", Some(json!({"body": "b2"}))).await;
    home(&["b2 likes=0", "c1 likes=0", "b1 edited likes=1"], "a celebrity's new post").await;

    write(w, &t("bob"), "DELETE", &format!("/v1/posts/{b1}"), None).await;
    home(&["b2 likes=0", "c1 likes=0"], "a deletion").await;
    write(w, &ann_tok, "DELETE", &format!("/v1/users/{ann}/following/{bob}"), None).await;
    home(&["c1 likes=0"], "unfollowing a celebrity").await;
    write(w, &ann_tok, "DELETE", &format!("/v1/users/{ann}/following/{cat}"), None).await;
    home(&[], "unfollowing").await;

    let (code, admin) = r.call("GET", "/admin/projections", Some(&admin_token("root")), None, &[]).await;
    assert_eq!(code, 200);
    let cache = &admin["targets"][0]["home_cache"];
    assert_eq!(cache["live"], true, "{admin}");
    assert!(cache["hits"].as_u64().unwrap() >= 1, "{admin}");
}
