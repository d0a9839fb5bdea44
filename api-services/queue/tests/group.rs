//! Group commit on a real JetStream server: commands that arrive while a publish awaits its ack share the
//! next message, every command lands exactly once and in its message's order, and a lone command is still
//! published under its own id (so JetStream deduplicates a repeat of it).
#![allow(clippy::unwrap_used)]

use domain::{Command, CommandEnvelope, CommandId, PostBody, PostId, UserId};
use queue::{
    CommandPublisher, CommandSource, FailoverPublisher, GroupLimits, GroupPublisher, JetStreamQueue,
    JetStreamSource, QueueNames,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn post(n: usize) -> CommandEnvelope {
    CommandEnvelope::new(
        CommandId::new_v7(),
        UserId::parse("alice").unwrap(),
        Command::PublishPost {
            post_id: PostId(uuid::Uuid::now_v7()),
            body: PostBody::parse(format!("post {n}")).unwrap(),
            reply_to: None,
        },
    )
}

// One thread: the 100 publishing tasks all queue their commands before the publishing task runs again.
#[tokio::test(flavor = "current_thread")]
async fn commands_arriving_during_a_publish_share_messages_and_each_lands_once() {
    let prefix = testkit::queue_prefix();
    let names = QueueNames::with_prefix(&prefix, &prefix.to_lowercase());
    let url = testkit::env_url("SOCIALNET_TEST_NATS_URL");
    let q = JetStreamQueue::connect("primary", &url, names, Duration::from_secs(5)).await.unwrap();
    for _ in 0..50 {
        if q.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    q.ensure_streams().await.unwrap();
    let failover =
        Arc::new(FailoverPublisher::new(vec![q.clone()], Duration::from_secs(5), Duration::from_secs(1)));
    let limits = GroupLimits { max_commands: 16, in_flight: 1, ..GroupLimits::default() };
    let group = Arc::new(GroupPublisher::new(failover, limits));
    let stats = group.stats();

    // Alone, a command is its own message under its own id: a repeat is JetStream's duplicate.
    let lone = post(0);
    assert!(!group.publish(&lone).await.unwrap().duplicate);
    assert!(group.publish(&lone).await.unwrap().duplicate, "a lone command keeps Nats-Msg-Id = command id");
    assert_eq!(stats.messages.load(Ordering::Relaxed), 2);

    let many: Vec<CommandEnvelope> = (1..=100).map(post).collect();
    let tasks: Vec<_> = many
        .iter()
        .cloned()
        .map(|e| {
            let g = group.clone();
            tokio::spawn(async move { g.publish(&e).await })
        })
        .collect();
    let mut sequences = HashSet::new();
    for t in tasks {
        let receipt = t.await.unwrap().unwrap();
        assert!(!receipt.duplicate);
        sequences.insert(receipt.sequence);
    }
    let messages = stats.messages.load(Ordering::Relaxed) - 2;
    assert_eq!(stats.commands.load(Ordering::Relaxed), 102);
    assert_eq!(sequences.len() as u64, messages, "every command got its message's receipt");
    assert!(messages <= 100 / 16 + 2, "100 commands in {messages} messages: they were not grouped");

    // What the ingester sees: the lone command once, then each of the 100 once.
    let source = JetStreamSource::new(q.clone());
    let mut got = Vec::new();
    let mut deliveries = 0;
    while got.len() < 101 {
        let batch = source.fetch(1024, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "only {} of 101 commands arrived", got.len());
        for d in batch {
            deliveries += 1;
            got.extend(queue::decode_batch(&d.payload).unwrap());
            d.ack().await.unwrap();
        }
    }
    assert_eq!(deliveries, 1 + messages);
    assert_eq!(got[0], lone);
    let ids: Vec<CommandId> = got[1..].iter().map(|e| e.command_id).collect();
    let expected: Vec<CommandId> = many.iter().map(|e| e.command_id).collect();
    let (mut sorted_ids, mut sorted_expected) = (ids.clone(), expected.clone());
    sorted_ids.sort_by_key(|i| i.0);
    sorted_expected.sort_by_key(|i| i.0);
    assert_eq!(sorted_ids, sorted_expected, "each of the 100 exactly once");
    let _ = q.context().delete_stream(&q.names().commands_stream).await;
    let _ = q.context().delete_stream(&q.names().dlq_stream).await;
}
