//! The ingester's fast path decides a batch without asking PostgreSQL which of its commands are recorded
//! already. A redelivered command in such a batch must make the append refuse the whole batch, after
//! which the batch is decided again with that check: one event per command, whatever the delivery.
#![allow(clippy::unwrap_used)]

use domain::*;
use eventstore::{EventStore, PgEventStore, StoreError};
use ingester::{Processed, Processor};
use std::sync::Arc;

fn register(user: &str) -> CommandEnvelope {
    CommandEnvelope::new(
        CommandId::new_v7(),
        UserId::parse(user).unwrap(),
        Command::RegisterUser {
            handle: Handle::parse(format!("h_{user}")).unwrap(),
            display_name: DisplayName::parse(user).unwrap(),
            bio: Bio::default(),
        },
    )
}

#[tokio::test]
async fn a_redelivered_command_in_an_unchecked_batch_is_refused_then_seen_as_a_duplicate() {
    let url = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
    let store = Arc::new(PgEventStore::connect(&url).await.unwrap());
    let processor = Processor::new(store.clone() as Arc<dyn EventStore>);
    let first = register("ann");
    assert!(matches!(
        processor.process(std::slice::from_ref(&first)).await.unwrap()[0],
        Processed::Committed { .. }
    ));

    // A second processor (another replica, or a restart: nothing cached) gets ann's command again.
    let other = Processor::new(store.clone() as Arc<dyn EventStore>);
    let batch = vec![register("bob"), first.clone(), register("cid")];
    let plan = other.plan(&batch, None).await.unwrap();
    let err = other.commit(&batch, plan).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    let ids: Vec<CommandId> = batch.iter().map(|e| e.command_id).collect();
    assert_eq!(store.recorded(&ids).await.unwrap(), vec![first.command_id], "nothing of the batch landed");

    // Decided again with the check, as the ingester does after a conflict.
    let out = other.process(&batch).await.unwrap();
    assert!(matches!(out[0], Processed::Committed { .. }), "{out:?}");
    assert!(matches!(out[1], Processed::Duplicate), "{out:?}");
    assert!(matches!(out[2], Processed::Committed { .. }), "{out:?}");
    let streams = store.read_streams(&[StreamId::user(&UserId::parse("ann").unwrap())]).await.unwrap();
    assert_eq!(streams.values().map(Vec::len).sum::<usize>(), 1, "ann registered once");

    // A batch planned with the check (the ingester does so when a message was redelivered) is appended
    // at once, its recorded command a duplicate.
    let third = Processor::new(store.clone() as Arc<dyn EventStore>);
    let batch = vec![register("fay"), first.clone()];
    let plan = third.plan_checked(&batch, None).await.unwrap();
    let out = third.commit(&batch, plan).await.unwrap();
    assert!(matches!(out[0], Processed::Committed { .. }), "{out:?}");
    assert!(matches!(out[1], Processed::Duplicate), "{out:?}");

    // And a batch of new commands goes through the fast path in one append.
    let batch = vec![register("dan"), register("eve")];
    let plan = other.plan(&batch, None).await.unwrap();
    let out = other.commit(&batch, plan).await.unwrap();
    assert!(out.iter().all(|p| matches!(p, Processed::Committed { .. })), "{out:?}");
}
