//! The event-store contract, run against real PostgreSQL (from `make test`) and SQLite: idempotent appends,
//! expected-version conflicts, stream reads, batched global reads, command outcomes; plus gap safety:
//! two PostgreSQL transactions that commit out of order are both seen, in a stable order, never skipped.
#![allow(clippy::unwrap_used)]

use domain::*;
use eventstore::*;
use std::sync::Arc;

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn register(user: &str) -> CommandCommit {
    let env = CommandEnvelope::new(
        CommandId::new_v7(),
        uid(user),
        Command::RegisterUser {
            handle: Handle::parse(format!("h_{user}")).unwrap(),
            display_name: DisplayName::parse(user).unwrap(),
            bio: Bio::default(),
        },
    );
    let mut streams = Streams::default();
    for s in read_set(&env) {
        streams.insert(s.clone(), StreamState::empty(&s));
    }
    let decision = decide(&env, &streams);
    CommandCommit { envelope: env, decision }
}

fn post(user: &str, expected_version: u64) -> CommandCommit {
    let post_id = PostId(uuid::Uuid::now_v7());
    let env = CommandEnvelope::new(
        CommandId::new_v7(),
        uid(user),
        Command::PublishPost { post_id, body: PostBody::parse("hello").unwrap(), reply_to: None },
    );
    let decision = Decision::Commit(vec![StreamWrite {
        stream: StreamId::post(&post_id),
        expected_version,
        events: vec![Event::PostPublished {
            post_id,
            author_id: uid(user),
            body: PostBody::parse("hello").unwrap(),
            reply_to: None,
        }],
    }]);
    CommandCommit { envelope: env, decision }
}

/// `read_all`, retried until it returns `want` events. PostgreSQL transaction ids are cluster-wide, so a
/// transaction of a test running in parallel (another database, same server) briefly holds readers back:
/// that delay is the price of gap safety, and tests must wait it out instead of reading once.
async fn read_settled(
    store: &dyn EventStore,
    after: GlobalCursor,
    limit: usize,
    want: usize,
) -> Vec<RecordedEvent> {
    let started = std::time::Instant::now();
    loop {
        let got = store.read_all(after, limit).await.unwrap();
        if got.len() >= want || started.elapsed() > std::time::Duration::from_secs(10) {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn pg() -> Arc<PgEventStore> {
    let url = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
    Arc::new(PgEventStore::connect(&url).await.unwrap())
}

async fn sqlite() -> Arc<SqliteEventStore> {
    Arc::new(SqliteEventStore::in_memory().await.unwrap())
}

async fn contract(store: Arc<dyn EventStore>) {
    // Append: two commands, three events, in one batch.
    let a = register("alice");
    let b = register("bob");
    let st = store.append(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(st, vec![AppendStatus::Appended, AppendStatus::Appended]);

    // The same commands again: duplicates, nothing appended.
    let st = store.append(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(st, vec![AppendStatus::Duplicate, AppendStatus::Duplicate]);
    let all = read_settled(store.as_ref(), GlobalCursor::START, 100, 4).await;
    assert_eq!(all.len(), 4, "two UserRegistered and two HandleClaimed, once each");
    assert!(all.windows(2).all(|w| w[0].cursor() < w[1].cursor()), "global order is strictly increasing");

    // Streams read back in version order with their envelopes.
    let streams =
        store.read_streams(&[StreamId::user(&uid("alice")), StreamId::user(&uid("nobody"))]).await.unwrap();
    let alice = &streams[&StreamId::user(&uid("alice"))];
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].stream_version, 1);
    assert_eq!(alice[0].command_id, a.envelope.command_id);
    assert_eq!(alice[0].metadata["actor"], "alice");
    assert!(!streams.contains_key(&StreamId::user(&uid("nobody"))));

    // Expected version: a second "register alice" expecting version 0 conflicts; nothing of its batch lands.
    let again = register("alice");
    let ok = register("carol");
    let err = store.append(&[ok.clone(), again]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert!(store.recorded(&[ok.envelope.command_id]).await.unwrap().is_empty(), "the batch is atomic");

    // `append_new` (a batch decided without checking for recorded commands): one recorded command and the
    // whole batch is refused as a conflict, so it can be decided again; all new and it appends.
    let fresh = register("dora");
    let err = store.append_new(&[fresh.clone(), b.clone()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert!(store.recorded(&[fresh.envelope.command_id]).await.unwrap().is_empty(), "nothing of it lands");
    // A recorded command without events (a rejection) is refused the same way (by the commands table).
    let mut rejected = post("carl", 0);
    rejected.decision =
        Decision::Reject(Rejection { code: RejectionCode::NotRegistered, reason: "no such user".into() });
    assert_eq!(store.append(std::slice::from_ref(&rejected)).await.unwrap(), vec![AppendStatus::Appended]);
    let err = store.append_new(&[fresh.clone(), rejected.clone()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert!(store.recorded(&[fresh.envelope.command_id]).await.unwrap().is_empty(), "nothing of it lands");
    let st = store.append_new(std::slice::from_ref(&fresh)).await.unwrap();
    assert_eq!(st, vec![AppendStatus::Appended]);
    assert_eq!(store.recorded(&[fresh.envelope.command_id]).await.unwrap(), vec![fresh.envelope.command_id]);

    // Batched global reads walk everything exactly once.
    for i in 0..25 {
        store.append(&[post(&format!("u{i}"), 0)]).await.unwrap();
    }
    // 4 events of alice and bob, 2 of dora, 25 posts.
    read_settled(store.as_ref(), GlobalCursor::START, 100, 31).await;
    let mut cursor = GlobalCursor::START;
    let mut seen = Vec::new();
    loop {
        let batch = store.read_all(cursor, 7).await.unwrap();
        let Some(last) = batch.last() else { break };
        cursor = last.cursor();
        seen.extend(batch.into_iter().map(|e| e.event_id));
    }
    assert_eq!(seen.len(), 31);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 31);

    // Outcomes: committed with positions; rejected with its reason; unknown is None.
    let outcome = store.command_outcome(a.envelope.command_id).await.unwrap().unwrap();
    assert_eq!(outcome.status, CommandStatus::Committed);
    assert_eq!(outcome.positions.len(), 2);
    let rejected = CommandCommit {
        envelope: CommandEnvelope::new(
            CommandId::new_v7(),
            uid("zed"),
            Command::LikePost { post_id: PostId(uuid::Uuid::nil()) },
        ),
        decision: Decision::Reject(Rejection {
            code: RejectionCode::NotRegistered,
            reason: "no profile".into(),
        }),
    };
    store.append(std::slice::from_ref(&rejected)).await.unwrap();
    let outcome = store.command_outcome(rejected.envelope.command_id).await.unwrap().unwrap();
    assert_eq!(outcome.status, CommandStatus::Rejected);
    assert_eq!(outcome.reason.as_deref(), Some("no profile"));
    assert_eq!(outcome.rejection_code.as_deref(), Some("not_registered"));
    assert!(outcome.positions.is_empty());
    assert!(store.command_outcome(CommandId::new_v7()).await.unwrap().is_none());
}

#[tokio::test]
async fn postgres_meets_the_contract() {
    contract(pg().await).await;
}

#[tokio::test]
async fn sqlite_meets_the_contract() {
    contract(sqlite().await).await;
}

/// Transaction A takes the lower position but commits after B. A reader that polls in between must not
/// return B (it would then skip A forever); after A commits it returns both, A first, and re-reading from
/// the start gives the same order.
#[tokio::test]
async fn out_of_order_commits_are_never_skipped() {
    use sqlx::Connection;
    let url = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
    let store = PgEventStore::connect(&url).await.unwrap();
    store.append(&[post("early", 0)]).await.unwrap();
    let before = read_settled(&store, GlobalCursor::START, 100, 1).await;
    assert_eq!(before.len(), 1);
    let checkpoint = before[0].cursor();

    // A: insert and hold the transaction open.
    let mut conn_a = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx_a = conn_a.begin().await.unwrap();
    let a_post = PostId(uuid::Uuid::now_v7());
    let a_event = Event::PostPublished {
        post_id: a_post,
        author_id: uid("slow"),
        body: PostBody::parse("A").unwrap(),
        reply_to: None,
    };
    let a_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (event_id, command_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES ($1, $2, $3, 1, $4, 1, $5::jsonb, '{}'::jsonb) RETURNING position",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(uuid::Uuid::now_v7())
    .bind(StreamId::post(&a_post).to_string())
    .bind(a_event.event_type())
    .bind(a_event.payload().to_string())
    .fetch_one(&mut *tx_a)
    .await
    .unwrap();

    // B: appended and committed through the store, after A took its position.
    let b = post("fast", 0);
    store.append(std::slice::from_ref(&b)).await.unwrap();
    let b_position = store.command_outcome(b.envelope.command_id).await.unwrap().unwrap().positions[0];
    assert!(a_position < b_position, "A holds the lower position");

    // While A is open the reader must stop short of B.
    let during = store.read_all(checkpoint, 100).await.unwrap();
    assert!(during.is_empty(), "a reader passed an in-flight event: {during:?}");

    tx_a.commit().await.unwrap();
    let after = read_settled(&store, checkpoint, 100, 2).await;
    let positions: Vec<i64> = after.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![a_position, b_position], "both seen, A then B");
    assert_eq!(after[0].event, a_event);

    let from_start: Vec<i64> =
        store.read_all(GlobalCursor::START, 100).await.unwrap().iter().map(|e| e.position).collect();
    assert_eq!(&from_start[1..], &positions[..], "the order is stable across reads");
}

/// A rolled-back transaction leaves a hole in positions; readers pass it without waiting forever.
#[tokio::test]
async fn aborted_transactions_do_not_block_readers() {
    use sqlx::Connection;
    let url = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
    let store = PgEventStore::connect(&url).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, command_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'post-x', 1, 'PostDeleted', 1, '{}', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    store.append(&[post("p", 0)]).await.unwrap();
    tx.rollback().await.unwrap();
    let all = read_settled(&store, GlobalCursor::START, 10, 1).await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn the_backup_store_parks_commands_in_order() {
    let url = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_BACKUP_URL")).await;
    let backup = BackupStore::new(PgEventStore::connect(&url).await.unwrap());
    let envs: Vec<_> = (0..5).map(|i| post(&format!("u{i}"), 0).envelope).collect();
    backup.park(&envs[..3]).await.unwrap();
    backup.park(&envs[2..]).await.unwrap(); // envs[2] parked twice: kept once, in its first place
    assert_eq!(backup.count().await.unwrap(), 5);
    assert!(backup.is_parked(envs[4].command_id).await.unwrap());
    let oldest = backup.oldest(10).await.unwrap();
    let ids: Vec<_> = oldest.iter().map(|(_, e)| e.command_id).collect();
    assert_eq!(ids, envs.iter().map(|e| e.command_id).collect::<Vec<_>>());
    assert_eq!(backup.remove_through(oldest[1].0).await.unwrap(), 2);
    assert_eq!(backup.count().await.unwrap(), 3);
}
