//! The MongoDB document target against a real MongoDB, when `MONGODB_URL` names one (a replica set, e.g.
//! `mongodb://127.0.0.1:27017/socialnet_test?replicaSet=rs0`). No MongoDB server can be installed on the
//! development machines, so here this test prints that it is skipped; the kind end-to-end test runs
//! MongoDB for real.
#![allow(clippy::unwrap_used)]

use domain::*;
use eventstore::{EventStore, SqliteEventStore};
use projection::*;
use std::sync::Arc;

#[tokio::test]
async fn mongo_documents_follow_the_events_and_replays_are_refused() {
    let Ok(url) = std::env::var("MONGODB_URL") else {
        eprintln!("SKIPPED: MONGODB_URL is not set, so the MongoDB target is untested in this run");
        return;
    };
    let store = Arc::new(SqliteEventStore::in_memory().await.unwrap());
    let processor = ingester::Processor::new(store.clone() as Arc<dyn EventStore>);
    let alice = UserId::parse("alice").unwrap();
    let post_id = PostId(uuid::Uuid::now_v7());
    for cmd in [
        Command::RegisterUser {
            handle: Handle::parse("alice").unwrap(),
            display_name: DisplayName::parse("Alice").unwrap(),
            bio: Bio::default(),
        },
        Command::PublishPost { post_id, body: PostBody::parse("hello").unwrap(), reply_to: None },
        Command::LikePost { post_id },
        Command::AddComment {
            post_id,
            comment_id: CommentId(uuid::Uuid::now_v7()),
            body: PostBody::parse("hi").unwrap(),
        },
    ] {
        processor.process(&[CommandEnvelope::new(CommandId::new_v7(), alice.clone(), cmd)]).await.unwrap();
    }
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let mongo = MongoTarget::connect(&name, &url).await.unwrap();
    let mut planner = Planner::new(PlannerConfig::default(), true);
    let n = apply_range(store.as_ref(), &mongo, 1, &mut planner, 2, None, &mut |_| {}).await.unwrap();
    assert_eq!(n, 5);
    let state = mongo.state(1).await.unwrap().unwrap();
    assert_eq!(state.events, 5);
    // A replay from the start is refused: the checkpoint moved.
    let mut planner = Planner::new(PlannerConfig::default(), true);
    let all = store.read_all(eventstore::GlobalCursor::START, 10).await.unwrap();
    let mut ops = Vec::new();
    for e in &all {
        planner.plan(e, mongo.view(1).as_ref(), &mut ops).await.unwrap();
    }
    let err = mongo.apply(1, &ops, None, state).await.unwrap_err();
    assert!(matches!(err, ProjectionError::Conflict(_)));
    mongo.drop_generation(1).await.unwrap();
}
