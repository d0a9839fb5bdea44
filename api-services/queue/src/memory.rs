//! The in-process queue of dev mode: the same delivery contract (dedup by message id, ack, delayed
//! redelivery, dead letters) in memory. It does not survive a restart of the process.

use crate::delivery::{DeadLetter, Delivery, Handle, Letter};
use crate::{CommandPublisher, CommandSource, DeadLetterQueue, PublishReceipt, QueueError};
use async_trait::async_trait;
use bytes::Bytes;
use domain::CommandEnvelope;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone)]
struct Msg {
    payload: Bytes,
    msg_id: String,
    delivered: u64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    ready: VecDeque<(u64, Msg)>,
    in_flight: HashMap<u64, Msg>,
    seen: HashSet<String>,
    dead: BTreeMap<u64, DeadLetter>,
    next_dead: u64,
}

#[derive(Clone, Default)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryQueue")
    }
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain collections; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, msg: Msg) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.ready.push_back((id, msg));
        drop(s);
        self.notify.notify_one();
        id
    }

    pub(crate) fn ack(&self, id: u64) {
        self.lock().in_flight.remove(&id);
    }

    pub(crate) fn nak(&self, id: u64, delay: Duration) {
        let Some(msg) = self.lock().in_flight.remove(&id) else {
            return;
        };
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(msg);
        });
    }

    pub(crate) fn dead_letter(&self, id: u64, reason: &str, letters: Vec<Letter>) {
        let mut s = self.lock();
        if let Some(msg) = s.in_flight.remove(&id) {
            for l in letters {
                s.next_dead += 1;
                let sequence = s.next_dead;
                let letter = DeadLetter {
                    sequence,
                    command_id: l.command_id,
                    reason: reason.to_owned(),
                    deliveries: msg.delivered,
                    payload: String::from_utf8_lossy(&l.payload).into_owned(),
                };
                s.dead.insert(sequence, letter);
            }
        }
    }

    /// Messages waiting or being processed (for dev-mode readiness and tests).
    pub fn depth(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.in_flight.len()
    }
}

#[async_trait]
impl CommandPublisher for MemoryQueue {
    async fn publish(&self, envelope: &CommandEnvelope) -> Result<PublishReceipt, QueueError> {
        let msg_id = envelope.command_id.to_string();
        if !self.lock().seen.insert(msg_id.clone()) {
            return Ok(PublishReceipt { queue: "memory".into(), sequence: 0, duplicate: true });
        }
        let sequence = self.push(Msg { payload: Bytes::from(envelope.encode()), msg_id, delivered: 0 });
        Ok(PublishReceipt { queue: "memory".into(), sequence, duplicate: false })
    }

    async fn ready(&self) -> bool {
        true
    }
}

#[async_trait]
impl CommandSource for MemoryQueue {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                let mut out = Vec::new();
                while out.len() < max {
                    let Some((id, mut msg)) = s.ready.pop_front() else {
                        break;
                    };
                    msg.delivered += 1;
                    s.in_flight.insert(id, msg.clone());
                    out.push(Delivery {
                        payload: msg.payload,
                        msg_id: Some(msg.msg_id),
                        delivered: msg.delivered,
                        handle: Handle::Memory { queue: self.clone(), id },
                    });
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn name(&self) -> &str {
        "memory"
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self.lock().dead.values().take(limit).cloned().collect())
    }

    async fn requeue(&self, sequence: u64) -> Result<bool, QueueError> {
        let Some(dead) = self.lock().dead.remove(&sequence) else {
            return Ok(false);
        };
        self.push(Msg {
            payload: Bytes::from(dead.payload.into_bytes()),
            msg_id: dead.command_id.unwrap_or_default(),
            delivered: 0,
        });
        Ok(true)
    }

    async fn find(&self, command_id: &str) -> Result<Option<DeadLetter>, QueueError> {
        Ok(self.lock().dead.values().find(|d| d.command_id.as_deref() == Some(command_id)).cloned())
    }

    async fn purge(&self) -> Result<u64, QueueError> {
        let mut s = self.lock();
        let n = s.dead.len() as u64;
        s.dead.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Command, CommandId, PostId, UserId};

    fn env() -> CommandEnvelope {
        CommandEnvelope::new(
            CommandId::new_v7(),
            UserId::parse("a").unwrap(),
            Command::LikePost { post_id: PostId(uuid::Uuid::nil()) },
        )
    }

    #[tokio::test]
    async fn dedups_acks_redelivers_and_dead_letters() {
        let q = MemoryQueue::new();
        let e = env();
        assert!(!q.publish(&e).await.unwrap().duplicate);
        assert!(q.publish(&e).await.unwrap().duplicate);
        let batch = q.fetch(10, Duration::from_millis(10)).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].delivered, 1);
        batch[0].retry_later(Duration::from_millis(5)).await.unwrap();
        let again = q.fetch(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(again[0].delivered, 2);
        again[0].dead_letter("boom").await.unwrap();
        assert_eq!(q.depth(), 0);
        let dead = q.list(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "boom");
        assert!(q.requeue(dead[0].sequence).await.unwrap());
        let back = q.fetch(10, Duration::from_millis(10)).await.unwrap();
        assert_eq!(CommandEnvelope::decode(&back[0].payload).unwrap(), e);
        back[0].ack().await.unwrap();
        assert_eq!(q.depth(), 0);
        assert!(q.fetch(1, Duration::from_millis(10)).await.unwrap().is_empty());
    }
}
