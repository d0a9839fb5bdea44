//! Idempotency keys bound to their request. A key is claimed once, with the fingerprint of the request
//! that first used it, in a store every write API replica shares: a JetStream key-value bucket (create-only
//! writes, entries expire after the retention window) on the queue servers, tried in the publisher's order;
//! an in-process map in dev mode.

use crate::{JetStreamQueue, QueueError};
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a key stays bound to its request unless configured otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What claiming a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and now names this request.
    New,
    /// The key already names this very request (a retry).
    Same,
    /// The key already names another request.
    Other,
}

#[async_trait]
pub trait IdempotencyKeys: Send + Sync {
    /// Bind `scope` (the caller's key, hashed) to `fingerprint` unless it is bound already.
    async fn claim(&self, scope: &str, fingerprint: &str) -> Result<Claim, QueueError>;
    /// Unbind a key this request claimed but whose command no queue took (best effort).
    async fn release(&self, scope: &str);
}

/// The bucket on one queue server, created on first use.
struct Bucket {
    queue: Arc<JetStreamQueue>,
    store: OnceCell<kv::Store>,
}

/// Keys in a JetStream key-value bucket on the first reachable queue server (the publisher's order).
pub struct JetStreamKeys {
    buckets: Vec<Bucket>,
    name: String,
    retention: Duration,
}

impl JetStreamKeys {
    pub fn new(queues: Vec<Arc<JetStreamQueue>>, retention: Duration) -> Self {
        let name = queues.first().map(|q| format!("{}_KEYS", q.names().commands_stream)).unwrap_or_default();
        let buckets = queues.into_iter().map(|queue| Bucket { queue, store: OnceCell::new() }).collect();
        Self { buckets, name, retention }
    }

    async fn store<'a>(&self, bucket: &'a Bucket) -> Result<&'a kv::Store, QueueError> {
        if !bucket.queue.is_connected() {
            return Err(QueueError::Unavailable(format!("{} queue is not connected", bucket.queue.label())));
        }
        bucket
            .store
            .get_or_try_init(|| async {
                let js = bucket.queue.context();
                if let Ok(store) = js.get_key_value(&self.name).await {
                    return Ok(store);
                }
                // The bucket's stream made directly: the client's `create_key_value` first reads the
                // account info, whose shape it no longer parses from NATS 2.9 servers.
                js.get_or_create_stream(self.bucket_stream(bucket.queue.names().replicas))
                    .await
                    .map_err(unavailable)?;
                js.get_key_value(&self.name).await.map_err(unavailable)
            })
            .await
    }

    /// A key-value bucket's stream, as NATS defines it: one value per key, values expire after the
    /// retention window, a key's first write must not exist yet (create-only).
    fn bucket_stream(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: format!("KV_{}", self.name),
            subjects: vec![format!("$KV.{}.>", self.name)],
            max_messages_per_subject: 1,
            max_age: self.retention,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        }
    }

    /// One round trip for a new key (a write that expects the key never to have been written); a key
    /// already bound costs a second one, to read whose request it names.
    async fn claim_in(&self, store: &kv::Store, scope: &str, fingerprint: &str) -> Result<Claim, QueueError> {
        let value = Bytes::copy_from_slice(fingerprint.as_bytes());
        if store.update(scope, value.clone(), 0).await.is_ok() {
            return Ok(Claim::New);
        }
        let bound = |f: Bytes| if f.as_ref() == fingerprint.as_bytes() { Claim::Same } else { Claim::Other };
        if let Some(f) = store.get(scope).await.map_err(unavailable)? {
            return Ok(bound(f));
        }
        // Released (a tombstone is there) or expired: `create` writes over a tombstone.
        match store.create(scope, value).await {
            Ok(_) => Ok(Claim::New),
            // Bound meanwhile by a concurrent request: whose?
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                Ok(store.get(scope).await.map_err(unavailable)?.map_or(Claim::Other, bound))
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

#[async_trait]
impl IdempotencyKeys for JetStreamKeys {
    async fn claim(&self, scope: &str, fingerprint: &str) -> Result<Claim, QueueError> {
        let mut last = QueueError::Unavailable("no queue server is configured".into());
        for bucket in &self.buckets {
            match self.store(bucket).await {
                Ok(store) => match self.claim_in(store, scope, fingerprint).await {
                    Ok(claim) => return Ok(claim),
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn release(&self, scope: &str) {
        for bucket in &self.buckets {
            if let Some(store) = bucket.store.get()
                && bucket.queue.is_connected()
                && store.delete(scope).await.is_ok()
            {
                return;
            }
        }
    }
}

/// Dev mode's keys: in memory, for the life of the process (as its queue).
pub struct MemoryKeys {
    keys: Mutex<HashMap<String, (String, Instant)>>,
    retention: Duration,
}

impl MemoryKeys {
    pub fn new(retention: Duration) -> Self {
        Self { keys: Mutex::new(HashMap::new()), retention }
    }
}

#[async_trait]
impl IdempotencyKeys for MemoryKeys {
    async fn claim(&self, scope: &str, fingerprint: &str) -> Result<Claim, QueueError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if keys.len() > 100_000 {
            keys.retain(|_, (_, at)| now.duration_since(*at) < self.retention);
        }
        match keys.get(scope) {
            Some((f, at)) if now.duration_since(*at) < self.retention => {
                Ok(if f == fingerprint { Claim::Same } else { Claim::Other })
            }
            _ => {
                keys.insert(scope.to_owned(), (fingerprint.to_owned(), now));
                Ok(Claim::New)
            }
        }
    }

    async fn release(&self, scope: &str) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).remove(scope);
    }
}
