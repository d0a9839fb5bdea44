//! The command queue between the write API and the ingester. The write API publishes each command once
//! (deduplicated by command id; under load several commands share a message, see [`GroupPublisher`]) and
//! answers `202` only after the queue acknowledged it; the ingester pulls
//! batches, acks after commit, retries failures with backoff and moves a message that keeps failing to the
//! dead-letter queue with its reason. NATS JetStream in production (a primary and a secondary server), an
//! in-process queue in dev mode.

mod delivery;
mod failover;
mod group;
mod jetstream;
mod keys;
mod memory;
mod wire;

pub use delivery::{DeadLetter, Delivery};
pub use failover::FailoverPublisher;
pub use group::{GroupLimits, GroupPublisher, GroupStats};
pub use jetstream::{JetStreamQueue, JetStreamSource, QueueNames};
pub use keys::{Claim, DEFAULT_RETENTION, IdempotencyKeys, JetStreamKeys, MemoryKeys};
pub use memory::MemoryQueue;
pub use wire::{command_count, decode_batch, encode_batch};

use async_trait::async_trait;
use domain::CommandEnvelope;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// No queue server took the message (or answered in time): the caller should retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The queue refused the request itself (bad subject, message too large, unknown sequence).
    #[error("queue refused the request: {0}")]
    Refused(String),
}

/// Where a published command landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// Which queue took it (`primary`, `secondary`, `memory`).
    pub queue: String,
    pub sequence: u64,
    /// The queue had already seen this command id within its deduplication window.
    pub duplicate: bool,
}

/// The write API's side: durably enqueue a command.
#[async_trait]
pub trait CommandPublisher: Send + Sync {
    async fn publish(&self, envelope: &CommandEnvelope) -> Result<PublishReceipt, QueueError>;
    /// Whether at least one queue is reachable now (for `/readyz`).
    async fn ready(&self) -> bool;
}

/// The ingester's side: pull what is waiting.
#[async_trait]
pub trait CommandSource: Send + Sync {
    /// Messages holding up to about `max` commands (a message may hold several; the last one may pass
    /// `max`), waiting at most `wait` for the first one; an empty batch means none came.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError>;
    /// A name for logs and metrics.
    fn name(&self) -> &str;
}

/// The operator's side of the error queue: `socialnet admin dlq list|requeue|purge`.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Put one dead letter (by its DLQ sequence) back on the command queue; false if there is no such one.
    async fn requeue(&self, sequence: u64) -> Result<bool, QueueError>;
    /// The dead letter of one command, if it is in this queue's dead letters.
    async fn find(&self, command_id: &str) -> Result<Option<DeadLetter>, QueueError>;
    /// Drop every dead letter; returns how many.
    async fn purge(&self) -> Result<u64, QueueError>;
}
