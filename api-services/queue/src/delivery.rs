//! One delivered message and what the consumer can do with it: ack after commit, retry later, or give up
//! and dead-letter it with a reason.

use crate::QueueError;
use crate::jetstream::JetStreamQueue;
use crate::memory::MemoryQueue;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use domain::CommandEnvelope;
use std::sync::Arc;
use std::time::Duration;

pub(crate) enum Handle {
    JetStream { message: Box<Message>, queue: Arc<JetStreamQueue> },
    Memory { queue: MemoryQueue, id: u64 },
}

/// A message handed to the ingester. Drop it without acking and it is redelivered later.
pub struct Delivery {
    pub payload: Bytes,
    /// The command id it was published under (`Nats-Msg-Id`), when present.
    pub msg_id: Option<String>,
    /// How many times this message has been delivered, this time included.
    pub delivered: u64,
    pub(crate) handle: Handle,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("msg_id", &self.msg_id).field("delivered", &self.delivered).finish()
    }
}

impl Delivery {
    /// Acknowledge: the command is durably recorded and must not come back.
    pub async fn ack(&self) -> Result<(), QueueError> {
        match &self.handle {
            Handle::JetStream { message, .. } => {
                message.ack().await.map_err(|e| QueueError::Unavailable(e.to_string()))
            }
            Handle::Memory { queue, id } => {
                queue.ack(*id);
                Ok(())
            }
        }
    }

    /// Ask for redelivery after `delay` (backoff).
    pub async fn retry_later(&self, delay: Duration) -> Result<(), QueueError> {
        match &self.handle {
            Handle::JetStream { message, .. } => message
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string())),
            Handle::Memory { queue, id } => {
                queue.nak(*id, delay);
                Ok(())
            }
        }
    }

    /// Move the whole message to the dead-letter queue with `reason` (it cannot be decoded into commands),
    /// then ack it here.
    pub async fn dead_letter(&self, reason: &str) -> Result<(), QueueError> {
        let letter = Letter { command_id: self.msg_id.clone(), payload: self.payload.clone() };
        self.dead_letter_each(reason, vec![letter]).await
    }

    /// Dead-letter some commands of this message, one letter each under its command id (so its issuer can
    /// look it up, and an operator requeue it alone); the message's other commands are committed already.
    /// The whole message is acked here.
    pub async fn dead_letter_commands(
        &self,
        reason: &str,
        commands: &[CommandEnvelope],
    ) -> Result<(), QueueError> {
        let letters = commands
            .iter()
            .map(|c| Letter {
                command_id: Some(c.command_id.to_string()),
                payload: crate::encode_batch(std::slice::from_ref(c)),
            })
            .collect();
        self.dead_letter_each(reason, letters).await
    }

    async fn dead_letter_each(&self, reason: &str, letters: Vec<Letter>) -> Result<(), QueueError> {
        match &self.handle {
            Handle::JetStream { message, queue } => {
                for l in letters {
                    queue
                        .publish_dead_letter(l.payload, l.command_id.as_deref(), self.delivered, reason)
                        .await?;
                }
                message.ack().await.map_err(|e| QueueError::Unavailable(e.to_string()))
            }
            Handle::Memory { queue, id } => {
                queue.dead_letter(*id, reason, letters);
                Ok(())
            }
        }
    }
}

/// One dead letter to be written: a command (or an undecodable message) and the id it is filed under.
pub(crate) struct Letter {
    pub command_id: Option<String>,
    pub payload: Bytes,
}

/// A message that failed too often, as the DLQ shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter queue (what `requeue` takes).
    pub sequence: u64,
    pub command_id: Option<String>,
    pub reason: String,
    pub deliveries: u64,
    pub payload: String,
}

impl DeadLetter {
    /// Who issued the command in this letter, if it decodes.
    pub fn actor(&self) -> Option<domain::UserId> {
        crate::decode_batch(self.payload.as_bytes()).ok()?.into_iter().next().map(|e| e.actor)
    }
}
