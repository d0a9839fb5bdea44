//! Group commit for the write API: commands that arrive while earlier publishes await their acks travel
//! together in one queue message. Nothing waits for a batch to fill: a command goes out at once when a
//! publish slot is free, so a lone request pays no extra latency; under load the slots are busy and what
//! queues behind them leaves as one message. JetStream's per-message work (store, deliver, ack) is then
//! shared by the batch. Every command of a batch gets the batch's receipt only after the queue acked it.
//!
//! A one-command message keeps `Nats-Msg-Id = command id`; a batch is published under a batch id, so a
//! failover retry of the same batch is still deduplicated, and the event store's unique command id makes
//! any command that arrives twice (a client retry in another batch) a no-op.

use crate::failover::FailoverPublisher;
use crate::wire::join_encoded;
use crate::{CommandPublisher, PublishReceipt, QueueError};
use async_trait::async_trait;
use domain::CommandEnvelope;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Limits of the group commit.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Most commands in one message.
    pub max_commands: usize,
    /// Most payload bytes in one message (NATS refuses messages over its `max_payload`, 1 MiB by default).
    pub max_bytes: usize,
    /// Publishes awaiting their ack at once; commands arriving while all are busy are grouped.
    pub in_flight: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self { max_commands: 128, max_bytes: 256 * 1024, in_flight: 4 }
    }
}

struct Pending {
    command_id: String,
    encoded: Vec<u8>,
    reply: oneshot::Sender<Result<PublishReceipt, QueueError>>,
}

/// Counters of what the group commit sent (for benchmarks).
#[derive(Debug, Default)]
pub struct GroupStats {
    pub messages: AtomicU64,
    pub commands: AtomicU64,
}

impl GroupStats {
    /// (messages, commands) sent so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.messages.load(Ordering::Relaxed), self.commands.load(Ordering::Relaxed))
    }
}

pub struct GroupPublisher {
    /// One grouping task per partition: a message goes to one partition.
    tx: Vec<mpsc::Sender<Pending>>,
    inner: Arc<FailoverPublisher>,
    stats: Arc<GroupStats>,
}

impl std::fmt::Debug for GroupPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupPublisher").finish()
    }
}

impl GroupPublisher {
    /// Start the publishing task on the current runtime; it ends when the publisher is dropped.
    pub fn new(inner: Arc<FailoverPublisher>, limits: GroupLimits) -> Self {
        let limits = GroupLimits {
            max_commands: limits.max_commands.max(1),
            in_flight: limits.in_flight.max(1),
            ..limits
        };
        // Bounded: when the queue is slower than the clients, requests wait here rather than pile up.
        let stats = Arc::new(GroupStats::default());
        let partitions = inner.names().map_or(1, |n| n.partitions.max(1));
        let tx = (0..partitions)
            .map(|partition| {
                let (tx, rx) = mpsc::channel(limits.max_commands * limits.in_flight * 4);
                tokio::spawn(run(inner.clone(), rx, limits, stats.clone(), partition));
                tx
            })
            .collect();
        Self { tx, inner, stats }
    }

    pub fn stats(&self) -> Arc<GroupStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl CommandPublisher for GroupPublisher {
    async fn publish(&self, envelope: &CommandEnvelope) -> Result<PublishReceipt, QueueError> {
        let (reply, answer) = oneshot::channel();
        let pending =
            Pending { command_id: envelope.command_id.to_string(), encoded: envelope.encode(), reply };
        let gone = || QueueError::Unavailable("the publishing task has stopped".into());
        let partition = usize::from(self.inner.partition_of(envelope));
        let tx = self.tx.get(partition).or(self.tx.first()).ok_or_else(gone)?;
        tx.send(pending).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn ready(&self) -> bool {
        self.inner.ready().await
    }
}

async fn run(
    inner: Arc<FailoverPublisher>,
    mut rx: mpsc::Receiver<Pending>,
    limits: GroupLimits,
    stats: Arc<GroupStats>,
    partition: u16,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    // A command that did not fit the previous batch starts the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.encoded.len();
        let mut batch = vec![first];
        while batch.len() < limits.max_commands {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + 1 + next.encoded.len() > limits.max_bytes {
                carried = Some(next);
                break;
            }
            bytes += 1 + next.encoded.len();
            batch.push(next);
        }
        stats.messages.fetch_add(1, Ordering::Relaxed);
        stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let inner = inner.clone();
        tokio::spawn(async move {
            publish(&inner, partition, batch).await;
            drop(slot);
        });
    }
}

async fn publish(inner: &FailoverPublisher, partition: u16, batch: Vec<Pending>) {
    let msg_id = match batch.as_slice() {
        [one] => one.command_id.clone(),
        _ => format!("batch-{}", uuid::Uuid::now_v7()),
    };
    let payload = join_encoded(batch.iter().map(|p| p.encoded.as_slice()));
    metrics::histogram!("socialnet_queue_commands_per_message").record(batch.len() as f64);
    let result = inner.publish_payload(partition, &msg_id, payload).await;
    for p in batch {
        // The request may have gone away (client disconnect); its command is queued all the same.
        let _ = p.reply.send(result.clone());
    }
}
