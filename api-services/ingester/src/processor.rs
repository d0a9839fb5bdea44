//! Deciding and appending a batch of commands. State is cached per stream between batches; the cache is
//! only ever a hint, because every append carries expected versions and the store rejects a stale one.

use domain::{CommandEnvelope, Decision, StreamId, StreamState, Streams, created_stream, decide, read_set};
use eventstore::{AppendStatus, CommandCommit, EventStore, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What happened to one command of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Events appended (possibly none: a no-op).
    Committed {
        events: usize,
    },
    Rejected {
        reason: String,
    },
    /// Recorded before (redelivery or duplicate publish): nothing done.
    Duplicate,
}

const CACHE_LIMIT: usize = 200_000;
const CONFLICT_RETRIES: usize = 8;

pub struct Processor {
    store: Arc<dyn EventStore>,
    cache: Mutex<HashMap<StreamId, StreamState>>,
    /// Woken after every commit (dev mode's in-process projector; PostgreSQL uses NOTIFY instead).
    on_commit: Option<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Processor")
    }
}

impl Processor {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store, cache: Mutex::new(HashMap::new()), on_commit: None }
    }

    /// Also bump `signal` after each successful append.
    pub fn with_commit_signal(mut self, signal: tokio::sync::watch::Sender<u64>) -> Self {
        self.on_commit = Some(signal);
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, StreamState>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decide and append a batch in one transaction. On an expected-version conflict (another writer moved
    /// a stream) it falls back to one command at a time with fresh state. Any other store error fails the
    /// whole batch and nothing is appended.
    pub async fn process(&self, batch: &[CommandEnvelope]) -> Result<Vec<Processed>, StoreError> {
        match self.process_batch(batch, true).await {
            Err(StoreError::Conflict(_)) => {
                let mut out = Vec::with_capacity(batch.len());
                for env in batch {
                    out.push(self.process_one(env).await?);
                }
                Ok(out)
            }
            other => other,
        }
    }

    /// Process each command on its own (to isolate one that the store refuses).
    pub async fn process_each(&self, batch: &[CommandEnvelope]) -> Vec<Result<Processed, StoreError>> {
        let mut out = Vec::with_capacity(batch.len());
        for env in batch {
            out.push(self.process_one(env).await);
        }
        out
    }

    async fn process_one(&self, env: &CommandEnvelope) -> Result<Processed, StoreError> {
        let mut attempt = 0;
        loop {
            match self.process_batch(std::slice::from_ref(env), false).await {
                Err(StoreError::Conflict(_)) if attempt < CONFLICT_RETRIES => attempt += 1,
                Ok(mut v) => return Ok(v.pop().unwrap_or(Processed::Duplicate)),
                Err(e) => return Err(e),
            }
        }
    }

    async fn process_batch(
        &self,
        batch: &[CommandEnvelope],
        use_cache: bool,
    ) -> Result<Vec<Processed>, StoreError> {
        // Only the first occurrence of a command id counts; repeats inside the batch are duplicates.
        let mut seen = HashSet::new();
        let firsts: Vec<bool> = batch.iter().map(|e| seen.insert(e.command_id)).collect();
        let ids: Vec<_> = seen.into_iter().collect();

        // Streams to load: from the cache where possible, else from the store. A stream the command itself
        // creates is assumed empty on the fast path (see `domain::created_stream`).
        let mut overlay = Streams::default();
        let mut missing = Vec::new();
        {
            let cache = self.cache();
            for (env, first) in batch.iter().zip(&firsts) {
                if !first {
                    continue;
                }
                let created = created_stream(env).filter(|_| use_cache);
                for s in read_set(env) {
                    if overlay.0.contains_key(&s) {
                        continue;
                    }
                    match cache.get(&s).filter(|_| use_cache) {
                        Some(state) => overlay.insert(s, state.clone()),
                        None => {
                            overlay.insert(s.clone(), StreamState::empty(&s));
                            if created.as_ref() != Some(&s) {
                                missing.push(s);
                            }
                        }
                    }
                }
            }
        }
        // Which commands are already recorded, and the missing streams, in one round trip's time.
        let (recorded, loaded) = if missing.is_empty() {
            (self.store.recorded(&ids).await?, Default::default())
        } else {
            let (r, l) = tokio::join!(self.store.recorded(&ids), self.store.read_streams(&missing));
            (r?, l?)
        };
        let recorded: HashSet<_> = recorded.into_iter().collect();
        for (stream, events) in loaded {
            let state = StreamState::fold(&stream, events.iter().map(|r| &r.event));
            overlay.insert(stream, state);
        }
        let todo: Vec<&CommandEnvelope> = batch
            .iter()
            .zip(&firsts)
            .filter(|(e, first)| **first && !recorded.contains(&e.command_id))
            .map(|(e, _)| e)
            .collect();

        // Decide in order, each decision seeing the ones before it.
        let mut commits = Vec::with_capacity(todo.len());
        for env in &todo {
            let decision = decide(env, &overlay);
            if let Decision::Commit(writes) = &decision {
                for w in writes {
                    let entry =
                        overlay.0.entry(w.stream.clone()).or_insert_with(|| StreamState::empty(&w.stream));
                    for e in &w.events {
                        entry.state.apply(e);
                        entry.version += 1;
                    }
                }
            }
            commits.push(CommandCommit { envelope: (*env).clone(), decision });
        }

        let statuses = match self.store.append(&commits).await {
            Ok(s) => s,
            Err(e) => {
                let mut cache = self.cache();
                for s in overlay.0.keys() {
                    cache.remove(s);
                }
                return Err(e);
            }
        };

        if let Some(n) = &self.on_commit {
            n.send_modify(|v| *v = v.wrapping_add(1));
        }
        {
            let mut cache = self.cache();
            if cache.len() > CACHE_LIMIT {
                cache.clear();
            }
            for (stream, state) in overlay.0 {
                cache.insert(stream, state);
            }
        }

        // Map back to the input order.
        let mut by_id: HashMap<_, Processed> = HashMap::new();
        for (commit, status) in commits.iter().zip(statuses) {
            let processed = match (status, &commit.decision) {
                (AppendStatus::Duplicate, _) => Processed::Duplicate,
                (AppendStatus::Appended, Decision::Commit(w)) => {
                    Processed::Committed { events: w.iter().map(|w| w.events.len()).sum() }
                }
                (AppendStatus::Appended, Decision::Reject(r)) => {
                    Processed::Rejected { reason: r.reason.clone() }
                }
            };
            by_id.insert(commit.envelope.command_id, processed);
        }
        let out: Vec<Processed> = batch
            .iter()
            .zip(firsts)
            .map(|(e, first)| {
                if first {
                    by_id.remove(&e.command_id).unwrap_or(Processed::Duplicate)
                } else {
                    Processed::Duplicate
                }
            })
            .collect();
        for p in &out {
            let outcome = match p {
                Processed::Committed { .. } => "committed",
                Processed::Rejected { .. } => "rejected",
                Processed::Duplicate => "duplicate",
            };
            metrics::counter!("socialnet_ingester_commands_total", "outcome" => outcome).increment(1);
        }
        Ok(out)
    }
}
