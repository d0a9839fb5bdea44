//! Idempotency keys in a JetStream key-value bucket on a real server: a key is bound to the first request's
//! fingerprint, a retry finds the same one, another request finds another, a released key is free again,
//! and a second handle on the same bucket (another write API replica, or the same after a restart) sees it.
#![allow(clippy::unwrap_used)]

use queue::{Claim, IdempotencyKeys, JetStreamKeys, JetStreamQueue, QueueNames};
use std::time::Duration;

async fn keys(prefix: &str) -> JetStreamKeys {
    let names = QueueNames::with_prefix(prefix, &prefix.to_lowercase());
    let url = testkit::env_url("SOCIALNET_TEST_NATS_URL");
    let q = JetStreamQueue::connect("primary", &url, names, Duration::from_secs(5)).await.unwrap();
    assert!(testkit::eventually(Duration::from_secs(5), || async { q.is_connected() }).await);
    JetStreamKeys::new(vec![q], queue::DEFAULT_RETENTION)
}

#[tokio::test]
async fn a_key_is_bound_to_its_first_request_for_every_replica() {
    let prefix = testkit::queue_prefix();
    let (one, two) = (keys(&prefix).await, keys(&prefix).await);
    assert_eq!(one.claim("k1", "f-a").await.unwrap(), Claim::New);
    assert_eq!(one.claim("k1", "f-a").await.unwrap(), Claim::Same);
    assert_eq!(two.claim("k1", "f-a").await.unwrap(), Claim::Same, "another replica sees the binding");
    assert_eq!(two.claim("k1", "f-b").await.unwrap(), Claim::Other);
    assert_eq!(one.claim("k2", "f-b").await.unwrap(), Claim::New, "keys are independent");
    one.release("k1").await;
    assert_eq!(two.claim("k1", "f-b").await.unwrap(), Claim::New, "a released key is free again");
}
