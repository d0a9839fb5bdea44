//! The read model on real Redis and in memory: the same events give identical images; replaying a batch
//! changes nothing; the queries answer every list and count right, with hybrid fan-out, backfill,
//! unfollow, edit and delete; pagination walks every item exactly once.
#![allow(clippy::unwrap_used)]

use domain::*;
use eventstore::{EventStore, GlobalCursor, SqliteEventStore};
use ingester::Processor;
use projection::*;

use std::sync::Arc;

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

struct World {
    store: Arc<SqliteEventStore>,
    processor: Processor,
}

impl World {
    async fn new() -> Self {
        let store = Arc::new(SqliteEventStore::in_memory().await.unwrap());
        let processor = Processor::new(store.clone() as Arc<dyn EventStore>);
        Self { store, processor }
    }

    async fn run(&self, actor: &str, command: Command) -> CommandId {
        let env = CommandEnvelope::new(CommandId::new_v7(), uid(actor), command);
        let out = self.processor.process(std::slice::from_ref(&env)).await.unwrap();
        assert!(matches!(out[0], ingester::Processed::Committed { .. }), "{actor}: {out:?}");
        env.command_id
    }

    async fn register(&self, user: &str) {
        self.run(
            user,
            Command::RegisterUser {
                handle: Handle::parse(format!("h_{user}")).unwrap(),
                display_name: DisplayName::parse(user).unwrap(),
                bio: Bio::default(),
            },
        )
        .await;
    }

    async fn post(&self, user: &str, body: &str) -> PostId {
        let post_id = PostId(uuid::Uuid::now_v7());
        self.run(
            user,
            Command::PublishPost { post_id, body: PostBody::parse(body).unwrap(), reply_to: None },
        )
        .await;
        post_id
    }

    async fn follow(&self, a: &str, b: &str) {
        self.run(a, Command::FollowUser { target: uid(b) }).await;
    }
}

/// alice, bob, carol, dave. With a fan-out threshold of 2, carol (3 followers) becomes a "celebrity".
async fn scenario(w: &World) -> (PostId, PostId, PostId) {
    for u in ["alice", "bob", "carol", "dave"] {
        w.register(u).await;
    }
    let early = w.post("bob", "bob before anyone follows").await;
    w.follow("alice", "bob").await; // backfills bob's early post into alice's home
    w.follow("alice", "carol").await;
    w.follow("bob", "carol").await;
    w.follow("dave", "carol").await; // carol passes the threshold
    let carol_post = w.post("carol", "carol to her fans").await;
    let gone = w.post("bob", "bob, soon deleted").await;
    for i in 0..25 {
        w.post("bob", &format!("bob #{i}")).await;
    }
    w.run("carol", Command::LikePost { post_id: early }).await;
    w.run("alice", Command::LikePost { post_id: early }).await;
    w.run("alice", Command::LikePost { post_id: early }).await; // no-op
    w.run("alice", Command::UnlikePost { post_id: early }).await;
    w.run(
        "dave",
        Command::AddComment {
            post_id: early,
            comment_id: CommentId(uuid::Uuid::now_v7()),
            body: PostBody::parse("nice").unwrap(),
        },
    )
    .await;
    w.run("bob", Command::EditPost { post_id: early, body: PostBody::parse("bob, edited").unwrap() }).await;
    w.run("bob", Command::LikePost { post_id: gone }).await;
    w.run("bob", Command::DeletePost { post_id: gone }).await;
    w.run(
        "alice",
        Command::UpdateProfile { display_name: Some(DisplayName::parse("Alice A.").unwrap()), bio: None },
    )
    .await;
    w.follow("dave", "bob").await;
    w.run("dave", Command::UnfollowUser { target: uid("bob") }).await;
    (early, carol_post, gone)
}

fn config() -> PlannerConfig {
    PlannerConfig { fanout_threshold: 2 }
}

async fn project(w: &World, target: &dyn ProjectionTarget, batch: usize) -> u64 {
    target.set_current(1).await.unwrap();
    let mut planner = Planner::new(config(), false);
    apply_range(w.store.as_ref(), target, 1, &mut planner, batch, None, &mut |_| {}).await.unwrap()
}

/// Every item of a paged list, following `next_cursor` page by page.
async fn walk<T, F, Fut>(f: F) -> Vec<T>
where
    F: Fn(Option<i64>) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, Option<String>)>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let (items, next) = f(cursor).await;
        all.extend(items);
        match next {
            Some(c) => cursor = Some(c.parse().unwrap()),
            None => return all,
        }
    }
}

async fn check_queries(view: Arc<dyn KvRead>, early: PostId, carol_post: PostId, gone: PostId) {
    let v = view.as_ref();
    let bob = queries::profile(v, &uid("bob")).await.unwrap().unwrap();
    assert_eq!(bob.posts_count, 26, "27 posted, 1 deleted");
    assert_eq!(bob.followers_count, 1, "alice (dave unfollowed)");
    assert_eq!(bob.following_count, 1);
    let alice = queries::profile(v, &uid("alice")).await.unwrap().unwrap();
    assert_eq!(alice.display_name, "Alice A.");
    assert_eq!(alice.following_count, 2);
    assert!(queries::profile(v, &uid("nobody")).await.unwrap().is_none());

    let p = queries::post(v, &early).await.unwrap().unwrap();
    assert_eq!(p.body, "bob, edited");
    assert!(p.edited_at.is_some());
    assert_eq!(p.like_count, 1, "carol's like stays, alice liked twice then unliked");
    assert_eq!(p.comment_count, 1);
    assert!(queries::post(v, &gone).await.unwrap().is_none(), "a deleted post is gone");

    // Alice's home: bob's 26 live posts (one backfilled) + carol's post merged at read time (carol is a
    // celebrity, so it was never fanned out). Walk it 7 at a time: every item once, newest first.
    let home = walk(|c| async move {
        let p = queries::home(v, &uid("alice"), c, 7).await.unwrap();
        (p.items, p.next_cursor)
    })
    .await;
    let ids: Vec<&str> = home.iter().map(|p| p.post_id.as_str()).collect();
    assert_eq!(ids.len(), 27, "{ids:?}");
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 27);
    assert!(ids.contains(&early.to_string().as_str()));
    assert!(ids.contains(&carol_post.to_string().as_str()));
    assert!(!ids.contains(&gone.to_string().as_str()));
    let created: Vec<&str> = home.iter().map(|p| p.created_at.as_str()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Dave followed and unfollowed bob: none of bob's posts stay in his home; carol's is merged in.
    let dave = queries::home(v, &uid("dave"), None, 100).await.unwrap();
    assert_eq!(dave.items.len(), 1);
    assert_eq!(dave.items[0].post_id, carol_post.to_string());

    let bob_tl = walk(|c| async move {
        let p = queries::user_timeline(v, &uid("bob"), c, 10).await.unwrap();
        (p.items, p.next_cursor)
    })
    .await;
    assert_eq!(bob_tl.len(), 26);
    let carol_followers = queries::followers(v, &uid("carol"), None, 2).await.unwrap();
    assert_eq!(carol_followers.items.len(), 2);
    assert!(carol_followers.next_cursor.is_some());
    let all_followers = walk(|c| async move {
        let p = queries::followers(v, &uid("carol"), c, 2).await.unwrap();
        (p.items, p.next_cursor)
    })
    .await;
    let mut names: Vec<&str> = all_followers.iter().map(|f| f.user_id.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["alice", "bob", "dave"]);
    assert_eq!(all_followers[0].handle, "h_dave", "newest follower first");
    let following = queries::following(v, &uid("alice"), None, 10).await.unwrap();
    assert_eq!(following.items.len(), 2);
    let comments = queries::comments(v, &early, None, 10).await.unwrap();
    assert_eq!(comments.items.len(), 1);
    assert_eq!(comments.items[0].author_id, "dave");
}

#[tokio::test]
async fn memory_target_answers_every_query_right() {
    let w = World::new().await;
    let (early, carol, gone) = scenario(&w).await;
    let memory = MemoryTarget::new("m");
    project(&w, &memory, 7).await;
    check_queries(memory.view(1), early, carol, gone).await;
}

#[tokio::test]
async fn redis_and_memory_agree_and_replays_change_nothing() {
    let w = World::new().await;
    let (early, carol, gone) = scenario(&w).await;
    let memory = MemoryTarget::new("m");
    // Different batch sizes on the two sides: batching must not change the result.
    project(&w, &memory, 1000).await;
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let redis = RedisTarget::connect(&name, &testkit::env_url("SOCIALNET_TEST_REDIS_URL")).unwrap();
    let applied = project(&w, &redis, 5).await;
    assert!(applied > 40);
    check_queries(redis.view(1), early, carol, gone).await;
    let redis_dump = redis.dump(1).await.unwrap();
    assert_eq!(diff(&memory.dump(1).await.unwrap(), &redis_dump), Vec::<String>::new());

    // Replaying the first batch against the checkpoint it was planned from is refused and changes nothing.
    let first = w.store.read_all(GlobalCursor::START, 5).await.unwrap();
    let mut ops = Vec::new();
    let mut planner = Planner::new(config(), true);
    for e in &first {
        planner.plan(e, redis.view(1).as_ref(), &mut ops).await.unwrap();
    }
    let next = TargetState { cursor: first.last().unwrap().cursor(), events: 5, last_event_ms: 0 };
    let err = redis.apply(1, &ops, None, next).await.unwrap_err();
    assert!(matches!(err, ProjectionError::Conflict(_)), "{err:?}");
    assert_eq!(redis.dump(1).await.unwrap(), redis_dump);
    // And running the projector again from its checkpoint finds nothing to do.
    let mut planner = Planner::new(config(), false);
    assert_eq!(
        apply_range(w.store.as_ref(), &redis, 1, &mut planner, 5, None, &mut |_| {}).await.unwrap(),
        0
    );
    redis.drop_generation(1).await.unwrap();
}

#[tokio::test]
async fn a_rebuild_flips_to_a_new_generation_and_drops_the_old() {
    let w = World::new().await;
    let (early, carol, gone) = scenario(&w).await;
    let (memory, g) = replay_into_memory(w.store.as_ref(), config(), None).await.unwrap();
    let expected = memory.dump(g).await.unwrap();
    // Both ways of replaying (the image loaded at once, and event by event) build the same generation.
    for replay in [Replay::InMemory, Replay::Streaming] {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let redis = RedisTarget::connect(&name, &testkit::env_url("SOCIALNET_TEST_REDIS_URL")).unwrap();
        project(&w, &redis, 50).await;
        let (generation, applied) = rebuild_generation(
            w.store.as_ref(),
            &redis,
            config(),
            11,
            std::time::Duration::ZERO,
            replay,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(generation, 2);
        assert_eq!(redis.current_generation().await.unwrap(), Some(2));
        assert_eq!(applied, w.store.count_after(GlobalCursor::START).await.unwrap());
        assert!(redis.dump(1).await.unwrap().is_empty(), "the old generation is removed");
        assert_eq!(diff(&expected, &redis.dump(2).await.unwrap()), Vec::<String>::new(), "{replay:?}");
        let state = redis.state(2).await.unwrap().unwrap();
        assert_eq!(state.events, applied, "{replay:?}: the checkpoint counts every event");
        check_queries(redis.view(2), early, carol, gone).await;
        // The live projector continues from the loaded checkpoint with nothing left to do.
        let mut planner = Planner::new(config(), false);
        let more = apply_range(w.store.as_ref(), &redis, 2, &mut planner, 5, None, &mut |_| {}).await;
        assert_eq!(more.unwrap(), 0);
        redis.drop_generation(2).await.unwrap();
    }
}

#[tokio::test]
async fn verify_style_diff_finds_tampering() {
    let w = World::new().await;
    scenario(&w).await;
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let url = testkit::env_url("SOCIALNET_TEST_REDIS_URL");
    let redis = RedisTarget::connect(&name, &url).unwrap();
    project(&w, &redis, 100).await;
    let (memory, g) = replay_into_memory(w.store.as_ref(), config(), None).await.unwrap();
    let expected = memory.dump(g).await.unwrap();
    assert!(diff(&expected, &redis.dump(1).await.unwrap()).is_empty());

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{name}:g1:home:alice")).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{name}:g1:user:bob"))
        .arg("followers_count")
        .arg(9999)
        .query_async(&mut conn)
        .await
        .unwrap();
    let d = diff(&expected, &redis.dump(1).await.unwrap());
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().any(|l| l == "missing key home:alice"));
    assert!(d.iter().any(|l| l.contains("user:bob: field followers_count is \"9999\"")));
    redis.drop_generation(1).await.unwrap();
}

/// The Redis home page caches post documents by version: a like, a comment or an edit after a page was
/// read shows on the next read, and a deleted post disappears.
#[tokio::test]
async fn cached_home_posts_are_never_stale() {
    let w = World::new().await;
    for u in ["ann", "ben"] {
        w.register(u).await;
    }
    w.follow("ann", "ben").await;
    let kept = w.post("ben", "first").await;
    let gone = w.post("ben", "second").await;
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let redis = RedisTarget::connect(&name, &testkit::env_url("SOCIALNET_TEST_REDIS_URL")).unwrap();
    project(&w, &redis, 100).await;
    let view = redis.view(1);
    let home = || async { queries::home(view.as_ref(), &uid("ann"), None, 10).await.unwrap().items };
    let before = home().await;
    assert_eq!(before.len(), 2);
    assert_eq!(home().await, before, "a second read (from the cache) is the same");

    w.run("ann", Command::LikePost { post_id: kept }).await;
    w.run("ben", Command::EditPost { post_id: kept, body: PostBody::parse("first, edited").unwrap() }).await;
    w.run("ben", Command::DeletePost { post_id: gone }).await;
    let mut planner = Planner::new(config(), false);
    apply_range(w.store.as_ref(), &redis, 1, &mut planner, 100, None, &mut |_| {}).await.unwrap();

    let after = home().await;
    assert_eq!(after.len(), 1, "the deleted post is gone: {after:?}");
    assert_eq!(after[0].post_id, kept.to_string());
    assert_eq!(after[0].like_count, 1);
    assert_eq!(after[0].body, "first, edited");
    redis.drop_generation(1).await.unwrap();
}

/// Past the home cap, both ways of rebuilding keep exactly the newest `HOME_CAP` posts, as the live
/// projector does: the in-memory trim and Redis's `ZREMRANGEBYRANK` agree.
#[tokio::test]
async fn capped_homes_agree_between_in_memory_and_streaming_rebuilds() {
    let w = World::new().await;
    w.register("alice").await;
    w.register("bob").await;
    w.follow("alice", "bob").await;
    let mut posts = Vec::new();
    for i in 0..HOME_CAP + 15 {
        posts.push(w.post("bob", &format!("bob #{i}")).await);
    }
    let url = testkit::env_url("SOCIALNET_TEST_REDIS_URL");
    let live = RedisTarget::connect(&format!("t{}", uuid::Uuid::new_v4().simple()), &url).unwrap();
    project(&w, &live, 100).await;
    let live_image = live.dump(1).await.unwrap();
    let Some(Value::ZSet(home)) = live_image.get("home:alice") else { panic!("no home for alice") };
    assert_eq!(home.len(), HOME_CAP);
    assert!(!home.contains_key(&posts[14].to_string()), "the oldest posts are trimmed");
    assert!(
        home.contains_key(&posts[15].to_string()) && home.contains_key(&posts.last().unwrap().to_string())
    );
    for replay in [Replay::InMemory, Replay::Streaming] {
        let redis = RedisTarget::connect(&format!("t{}", uuid::Uuid::new_v4().simple()), &url).unwrap();
        let (generation, _) = rebuild_generation(
            w.store.as_ref(),
            &redis,
            config(),
            64,
            std::time::Duration::ZERO,
            replay,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            diff(&live_image, &redis.dump(generation).await.unwrap()),
            Vec::<String>::new(),
            "{replay:?}"
        );
        redis.drop_generation(generation).await.unwrap();
    }
    live.drop_generation(1).await.unwrap();
}

/// A reader that caches depends on two things: every applied batch announces its keys, and losing Redis
/// ends the notice stream (a restarted, empty Redis may reuse generation numbers, so cached pages must go).
#[tokio::test]
async fn change_notices_name_each_batch_s_keys_and_end_when_redis_goes_away() {
    use futures::StreamExt;
    let mut server = testkit::RedisServer::start();
    let name = format!("n{}", uuid::Uuid::new_v4().simple());
    let redis = RedisTarget::connect_for_writing(&name, &server.url()).unwrap();
    let mut notices = redis.invalidations().await.unwrap().expect("Redis sends change notices");
    let generation = redis.allocate_generation().await.unwrap();
    let ops = vec![
        Op::ZAdd { key: "home:ann".into(), score: 3, member: "p1".into() },
        Op::HIncr { key: "post:p1".into(), field: "like_count".into(), by: 1 },
        Op::ZKeepTop { key: "home:ann".into(), keep: 800 },
    ];
    let next = TargetState { cursor: GlobalCursor { tx_id: 0, position: 3 }, events: 1, last_event_ms: 0 };
    redis.apply(generation, &ops, None, next).await.unwrap();
    let notice = tokio::time::timeout(std::time::Duration::from_secs(5), notices.next())
        .await
        .expect("a notice within 5 s")
        .expect("the stream is open");
    assert_eq!(notice.generation, generation);
    let mut want = vec![invalidation::key_id("home:ann"), invalidation::key_id("post:p1")];
    want.sort_unstable();
    assert_eq!(notice.keys, want);
    // A refused batch (stale checkpoint) changes nothing and announces nothing.
    assert!(redis.apply(generation, &ops, None, next).await.is_err());
    server.stop();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), notices.next())
        .await
        .expect("the notice stream must end once Redis is gone");
    assert_eq!(end, None, "no notice came from the refused batch");
}

/// A rebuild's progress lives in the target, outside every generation, where the projector (and through
/// it the operator) reads it; the newest record wins and survives a flip.
#[tokio::test]
async fn rebuild_progress_is_kept_in_the_target_outside_its_generations() {
    use contract::admin::{RebuildProgress, RebuildStage};
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let redis = RedisTarget::connect(&name, &testkit::env_url("SOCIALNET_TEST_REDIS_URL")).unwrap();
    let memory = MemoryTarget::new("m");
    let targets: [&dyn ProjectionTarget; 2] = [&redis, &memory];
    for t in targets {
        assert_eq!(t.last_rebuild().await.unwrap(), None);
        let running = RebuildProgress::at(Some("job-1".into()), 40, 100, 1_000, 3_000);
        t.record_rebuild(&running).await.unwrap();
        assert_eq!(t.last_rebuild().await.unwrap(), Some(running.clone()));
        let done = running.finished(4_000, None);
        t.record_rebuild(&done).await.unwrap();
        let read = t.last_rebuild().await.unwrap().unwrap();
        assert_eq!((read.stage, read.done, read.total), (RebuildStage::Done, 100, 100));
    }
    redis.set_current(7).await.unwrap();
    assert!(redis.dump(7).await.unwrap().is_empty(), "the record is no key of a generation");
}

fn cluster_target(name: &str) -> RedisClusterTarget {
    RedisClusterTarget::connect_for_writing(name, &testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS"))
        .unwrap()
}

/// The same events on a Redis Cluster target (3 masters, partitioned by owner) give the image the memory
/// target has, every query answers right, replays change nothing, and the keys spread over every master.
#[tokio::test]
async fn a_redis_cluster_target_agrees_with_memory_and_replays_change_nothing() {
    let w = World::new().await;
    let (early, carol, gone) = scenario(&w).await;
    let memory = MemoryTarget::new("m");
    project(&w, &memory, 1000).await;
    let name = format!("c{}", uuid::Uuid::new_v4().simple());
    let cluster = cluster_target(&name);
    let applied = project(&w, &cluster, 5).await;
    assert!(applied > 40);
    check_queries(cluster.view(1), early, carol, gone).await;
    let image = cluster.dump(1).await.unwrap();
    assert_eq!(diff(&memory.dump(1).await.unwrap(), &image), Vec::<String>::new());

    // A replayed first batch is refused at the checkpoint and changes nothing.
    let first = w.store.read_all(GlobalCursor::START, 5).await.unwrap();
    let mut ops = Vec::new();
    let mut planner = Planner::new(config(), true);
    for e in &first {
        planner.plan(e, cluster.view(1).as_ref(), &mut ops).await.unwrap();
    }
    let next = TargetState { cursor: first.last().unwrap().cursor(), events: 5, last_event_ms: 0 };
    let err = cluster.apply(1, &ops, None, next).await.unwrap_err();
    assert!(matches!(err, ProjectionError::Conflict(_)), "{err:?}");
    assert_eq!(cluster.dump(1).await.unwrap(), image);
    let mut planner = Planner::new(config(), false);
    assert_eq!(
        apply_range(w.store.as_ref(), &cluster, 1, &mut planner, 5, None, &mut |_| {}).await.unwrap(),
        0
    );

    // Every master holds a share of the model.
    let per_master = keys_per_master(&format!("{name}:g1:*")).await;
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(per_master.iter().all(|n| *n > 0), "{per_master:?}");
    cluster.drop_generation(1).await.unwrap();
    assert!(keys_per_master(&format!("{name}:g1:*")).await.iter().all(|n| *n == 0));
}

/// Keys matching `pattern` on each master of the test cluster.
async fn keys_per_master(pattern: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for url in testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS") {
        let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.unwrap();
        if !matches!(&role[0], redis::Value::BulkString(r) if r == b"master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap();
        counts.push(keys.len());
    }
    counts
}

/// A writer that died after announcing a batch leaves it pending; the next run of the projector applies
/// exactly that batch first, then the rest, and the image is the memory target's.
#[tokio::test]
async fn a_batch_left_pending_on_a_cluster_is_finished_first() {
    let w = World::new().await;
    scenario(&w).await;
    let (memory, g) = replay_into_memory(w.store.as_ref(), config(), None).await.unwrap();
    let name = format!("c{}", uuid::Uuid::new_v4().simple());
    let cluster = cluster_target(&name);
    cluster.set_current(1).await.unwrap();
    let mut planner = Planner::new(config(), false);
    let until = w.store.read_all(GlobalCursor::START, 10).await.unwrap().last().unwrap().cursor();
    apply_range(w.store.as_ref(), &cluster, 1, &mut planner, 10, Some(until), &mut |_| {}).await.unwrap();
    let at = cluster.state(1).await.unwrap().unwrap();
    assert_eq!(at.events, 10);
    // The intent of a 7-event batch, as a writer records it before touching any partition.
    let seven = w.store.read_all(at.cursor, 7).await.unwrap();
    let pending = TargetState {
        cursor: seven.last().unwrap().cursor(),
        events: 17,
        last_event_ms: seven.last().unwrap().recorded_at.timestamp_millis(),
    };
    let url = testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS").remove(0);
    let client = redis::cluster::ClusterClient::new(vec![url]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{{{name}}}:g1:~pending"))
        .arg(serde_json::to_string(&pending).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cluster.pending(1).await.unwrap(), Some(pending));
    // Another batch from the same checkpoint is refused while one is pending.
    let other = TargetState { events: 11, ..pending };
    assert!(matches!(cluster.apply(1, &[], Some(at), other).await, Err(ProjectionError::Conflict(_))));
    let mut planner = Planner::new(config(), false);
    apply_range(w.store.as_ref(), &cluster, 1, &mut planner, 5, None, &mut |_| {}).await.unwrap();
    assert_eq!(cluster.pending(1).await.unwrap(), None);
    assert_eq!(diff(&memory.dump(g).await.unwrap(), &cluster.dump(1).await.unwrap()), Vec::<String>::new());
    cluster.drop_generation(1).await.unwrap();
}

/// Blue/green rebuilds (image load and streaming) and verify-style tamper detection on a cluster target.
#[tokio::test]
async fn a_cluster_target_rebuilds_and_verify_finds_tampering() {
    let w = World::new().await;
    let (early, carol, gone) = scenario(&w).await;
    let (memory, g) = replay_into_memory(w.store.as_ref(), config(), None).await.unwrap();
    let expected = memory.dump(g).await.unwrap();
    for replay in [Replay::InMemory, Replay::Streaming] {
        let name = format!("c{}", uuid::Uuid::new_v4().simple());
        let cluster = cluster_target(&name);
        project(&w, &cluster, 50).await;
        let (generation, applied) = rebuild_generation(
            w.store.as_ref(),
            &cluster,
            config(),
            11,
            std::time::Duration::ZERO,
            replay,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!((generation, cluster.current_generation().await.unwrap()), (2, Some(2)));
        assert_eq!(applied, w.store.count_after(GlobalCursor::START).await.unwrap());
        assert!(cluster.dump(1).await.unwrap().is_empty(), "the old generation is removed");
        assert_eq!(diff(&expected, &cluster.dump(2).await.unwrap()), Vec::<String>::new(), "{replay:?}");
        check_queries(cluster.view(2), early, carol, gone).await;
        let mut planner = Planner::new(config(), false);
        assert_eq!(
            apply_range(w.store.as_ref(), &cluster, 2, &mut planner, 5, None, &mut |_| {}).await.unwrap(),
            0
        );
        if replay == Replay::InMemory {
            tamper(&cluster, &name, &expected).await;
        }
        cluster.drop_generation(2).await.unwrap();
    }
}

/// Delete alice's home and one copy of `celebs`: the dump shows both.
async fn tamper(cluster: &RedisClusterTarget, name: &str, expected: &Dump) {
    let url = testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS").remove(0);
    let mut conn =
        redis::cluster::ClusterClient::new(vec![url]).unwrap().get_async_connection().await.unwrap();
    let pattern = |rel: &str| format!("{name}:g2:*:{rel}");
    for rel in ["home:alice", "celebs"] {
        let mut found = Vec::new();
        for url in testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS") {
            let mut node =
                redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(pattern(rel)).query_async(&mut node).await.unwrap();
            found.extend(keys);
        }
        found.sort();
        found.dedup();
        let victim = found.last().expect("the key exists").clone();
        let _: () = redis::cmd("DEL").arg(victim).query_async(&mut conn).await.unwrap();
    }
    let d = diff(expected, &cluster.dump(2).await.unwrap());
    assert!(d.iter().any(|l| l == "missing key home:alice"), "{d:?}");
    assert!(d.iter().any(|l| l.contains("celebs@missing")), "{d:?}");
}
