//! Publishing with failover: try the primary queue, and if it is down, slow or refusing, the secondary.
//! A failed queue is skipped for a cool-down so that every request does not pay its timeout again.

use crate::jetstream::JetStreamQueue;
use crate::{CommandPublisher, PublishReceipt, QueueError};
use async_trait::async_trait;
use bytes::Bytes;
use domain::CommandEnvelope;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Target {
    queue: Arc<JetStreamQueue>,
    skip_until: Mutex<Option<Instant>>,
}

pub struct FailoverPublisher {
    targets: Vec<Target>,
    timeout: Duration,
    cool_down: Duration,
}

impl std::fmt::Debug for FailoverPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverPublisher").field("targets", &self.targets.len()).finish()
    }
}

impl FailoverPublisher {
    /// `queues` in order of preference: primary first.
    pub fn new(queues: Vec<Arc<JetStreamQueue>>, timeout: Duration, cool_down: Duration) -> Self {
        let targets =
            queues.into_iter().map(|queue| Target { queue, skip_until: Mutex::new(None) }).collect();
        Self { targets, timeout, cool_down }
    }

    fn skipped(target: &Target) -> bool {
        let guard = target.skip_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|t| Instant::now() < t)
    }

    fn set_skip(target: &Target, until: Option<Instant>) {
        *target.skip_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

impl FailoverPublisher {
    /// Publish one message (one command, or a group: see [`crate::GroupPublisher`]) under `msg_id`.
    /// The queue's names (partitions and replicas are the same on every server).
    pub fn names(&self) -> Option<&crate::QueueNames> {
        self.targets.first().map(|t| t.queue.names())
    }

    /// The partition an envelope's commands go to.
    pub fn partition_of(&self, envelope: &CommandEnvelope) -> u16 {
        self.names().map_or(0, |n| n.partition_of(&envelope.actor))
    }

    pub async fn publish_payload(
        &self,
        partition: u16,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<PublishReceipt, QueueError> {
        let mut errors = Vec::new();
        let last = self.targets.len().saturating_sub(1);
        for (i, target) in self.targets.iter().enumerate() {
            // A cooling-down queue is still tried when it is the last resort.
            if i < last && Self::skipped(target) {
                continue;
            }
            let attempt = tokio::time::timeout(
                self.timeout,
                target.queue.publish_to(partition, msg_id, payload.clone()),
            )
            .await;
            match attempt {
                Ok(Ok(receipt)) => {
                    Self::set_skip(target, None);
                    if i > 0 {
                        metrics::counter!("socialnet_queue_failover_publishes_total").increment(1);
                    }
                    return Ok(receipt);
                }
                Ok(Err(e)) => errors.push(format!("{}: {e}", target.queue.label())),
                Err(_) => errors.push(format!("{}: no ack within {:?}", target.queue.label(), self.timeout)),
            }
            Self::set_skip(target, Some(Instant::now() + self.cool_down));
            tracing::warn!(queue = target.queue.label(), "publish failed, trying the next queue");
        }
        Err(QueueError::Unavailable(errors.join("; ")))
    }
}

#[async_trait]
impl CommandPublisher for FailoverPublisher {
    async fn publish(&self, envelope: &CommandEnvelope) -> Result<PublishReceipt, QueueError> {
        let partition = self.partition_of(envelope);
        self.publish_payload(partition, &envelope.command_id.to_string(), Bytes::from(envelope.encode()))
            .await
    }

    async fn ready(&self) -> bool {
        self.targets.iter().any(|t| t.queue.is_connected())
    }
}
