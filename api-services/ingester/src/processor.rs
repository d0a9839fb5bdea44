//! Deciding and appending a batch of commands. State is cached per stream between batches; the cache is
//! only ever a hint, because every append carries expected versions and the store rejects a stale one.

use domain::{CommandEnvelope, Decision, StreamId, StreamState, Streams, created_stream, decide, read_set};
use eventstore::{AppendStatus, CommandCommit, EventStore, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A decided batch, not yet appended: [`Processor::commit`] appends it.
#[derive(Debug)]
pub struct Plan {
    firsts: Vec<bool>,
    commits: Vec<CommandCommit>,
    /// Whether the store was asked which commands are recorded; if not, it must refuse the append when
    /// one is ([`EventStore::append_new`]).
    checked: bool,
    /// Every stream the batch read or wrote, as it will be once the batch is committed.
    overlay: Arc<Streams>,
}

impl Plan {
    /// What the next batch must assume while this one is being appended.
    pub fn ahead(&self) -> Ahead {
        Ahead {
            overlay: self.overlay.clone(),
            ids: self.commits.iter().map(|c| c.envelope.command_id).collect(),
        }
    }
}

/// The state a batch in flight will leave behind: see [`Processor::plan`].
#[derive(Debug, Clone)]
pub struct Ahead {
    overlay: Arc<Streams>,
    ids: HashSet<domain::CommandId>,
}

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
/// Below this many commands one transaction is cheaper than splitting.
const PARALLEL_MIN: usize = 64;
const CONFLICT_RETRIES: usize = 8;

pub struct Processor {
    store: Arc<dyn EventStore>,
    cache: Mutex<HashMap<StreamId, StreamState>>,
    /// Woken after every commit (dev mode's in-process projector; PostgreSQL uses NOTIFY instead).
    on_commit: Option<tokio::sync::watch::Sender<u64>>,
    /// Transactions a batch may be split into (groups sharing no stream); 1 = one transaction.
    append_parallelism: usize,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Processor")
    }
}

impl Processor {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store, cache: Mutex::new(HashMap::new()), on_commit: None, append_parallelism: 1 }
    }

    /// Append a large batch as up to `n` parallel transactions over groups of commands that share no
    /// stream (see [`crate::split`]). For PostgreSQL; SQLite has one writer anyway.
    pub fn with_append_parallelism(mut self, n: usize) -> Self {
        self.append_parallelism = n.max(1);
        self
    }

    /// Also add to `signal`, after each successful append, the number of commands it newly recorded
    /// (committed or rejected; duplicates excluded). Dev mode's projector only uses it as a wake-up; the
    /// write benchmark counts with it instead of scanning the commands table.
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
        let plan = self.plan_with(batch, use_cache, None, true).await?;
        self.commit(batch, plan).await
    }

    /// Load and decide a batch without appending it. With `after`, the batch is planned as if `after`
    /// (still being appended) had committed: its streams' states come first, and its commands count as
    /// duplicates. This lets the ingester decide batch N+1 while batch N is in PostgreSQL; if N does not
    /// commit as planned, the ingester must plan N+1 again without `after`.
    ///
    /// This fast path does not ask the store which commands are recorded already (a redelivery or a
    /// second publish): nearly none are, and the append refuses the batch if one is (`Conflict`), after
    /// which [`Processor::process`] decides it again with that check.
    pub async fn plan(&self, batch: &[CommandEnvelope], after: Option<&Ahead>) -> Result<Plan, StoreError> {
        self.plan_with(batch, true, after, false).await
    }

    /// [`Processor::plan`] with the "already recorded?" check: for batches holding a redelivered message,
    /// whose commands were likely appended before (a refused append would cost more than the check).
    pub async fn plan_checked(
        &self,
        batch: &[CommandEnvelope],
        after: Option<&Ahead>,
    ) -> Result<Plan, StoreError> {
        self.plan_with(batch, true, after, true).await
    }

    async fn plan_with(
        &self,
        batch: &[CommandEnvelope],
        use_cache: bool,
        after: Option<&Ahead>,
        check_recorded: bool,
    ) -> Result<Plan, StoreError> {
        // Only the first occurrence of a command id counts; repeats inside the batch are duplicates.
        let mut seen = HashSet::new();
        let firsts: Vec<bool> = batch.iter().map(|e| seen.insert(e.command_id)).collect();
        let ids: Vec<_> = seen.iter().copied().collect();

        // Streams to load: from the batch in flight, then the cache, else from the store. A stream the
        // command itself creates is assumed empty on the fast path (see `domain::created_stream`).
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
                    let known = after
                        .and_then(|a| a.overlay.0.get(&s))
                        .or_else(|| cache.get(&s))
                        .filter(|_| use_cache);
                    match known {
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
        let started = std::time::Instant::now();
        let recorded =
            async { if check_recorded { self.store.recorded(&ids).await } else { Ok(Vec::new()) } };
        let (recorded, loaded) = if missing.is_empty() {
            (recorded.await?, Default::default())
        } else {
            let (r, l) = tokio::join!(recorded, self.store.read_streams(&missing));
            (r?, l?)
        };
        let mut recorded: HashSet<_> = recorded.into_iter().collect();
        if let Some(a) = after {
            recorded.extend(a.ids.iter().copied());
        }
        for (stream, events) in loaded {
            let state = StreamState::fold(&stream, events.iter().map(|r| &r.event));
            overlay.insert(stream, state);
        }
        let loaded_in = started.elapsed();

        // Decide in order, each decision seeing the ones before it.
        let mut commits = Vec::with_capacity(batch.len());
        for (env, first) in batch.iter().zip(&firsts) {
            if !*first || recorded.contains(&env.command_id) {
                continue;
            }
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
            commits.push(CommandCommit { envelope: env.clone(), decision });
        }
        tracing::debug!(
            commands = commits.len(),
            load_ms = loaded_in.as_secs_f64() * 1e3,
            decide_ms = (started.elapsed() - loaded_in).as_secs_f64() * 1e3,
            "batch planned"
        );
        Ok(Plan { firsts, commits, checked: check_recorded, overlay: Arc::new(overlay) })
    }

    /// Append in one transaction, or in parallel ones over independent groups when allowed and worth it.
    /// A failed group leaves the others committed; that is safe because appends are idempotent by command
    /// id: whoever handles the error processes the whole batch again and finds those recorded.
    async fn append(
        &self,
        commits: Vec<CommandCommit>,
        checked: bool,
    ) -> (Vec<CommandCommit>, Result<Vec<AppendStatus>, StoreError>) {
        let groups = if self.append_parallelism > 1 && commits.len() >= PARALLEL_MIN {
            crate::split::independent_groups(&commits, self.append_parallelism)
        } else {
            Vec::new()
        };
        if groups.len() < 2 {
            let result = self.append_part(&commits, checked).await;
            return (commits, result);
        }
        let mut slots: Vec<Option<CommandCommit>> = commits.into_iter().map(Some).collect();
        let parts: Vec<Vec<CommandCommit>> =
            groups.iter().map(|g| g.iter().filter_map(|&i| slots[i].take()).collect()).collect();
        let results = futures::future::join_all(parts.iter().map(|p| self.append_part(p, checked))).await;
        let mut statuses = vec![AppendStatus::Duplicate; slots.len()];
        let mut error: Option<StoreError> = None;
        for ((group, part), result) in groups.iter().zip(parts).zip(results) {
            match result {
                Ok(s) => group.iter().zip(s).for_each(|(&i, status)| statuses[i] = status),
                // An outage outranks a conflict: the batch must be parked, not retried on the primary.
                Err(e) if error.as_ref().is_none_or(|old| !old.is_unavailable()) => error = Some(e),
                Err(_) => {}
            }
            group.iter().zip(part).for_each(|(&i, c)| slots[i] = Some(c));
        }
        let commits = slots.into_iter().flatten().collect();
        (commits, error.map_or(Ok(statuses), Err))
    }

    async fn append_part(
        &self,
        part: &[CommandCommit],
        checked: bool,
    ) -> Result<Vec<AppendStatus>, StoreError> {
        if checked { self.store.append(part).await } else { self.store.append_new(part).await }
    }

    /// Append a planned batch (one transaction, or parallel ones: see `append`) and report each command's outcome in input order.
    pub async fn commit(&self, batch: &[CommandEnvelope], plan: Plan) -> Result<Vec<Processed>, StoreError> {
        let Plan { firsts, commits, checked, overlay } = plan;
        let started = std::time::Instant::now();
        let (commits, appended) = self.append(commits, checked).await;
        let statuses = match appended {
            Ok(s) => s,
            Err(e) => {
                let mut cache = self.cache();
                for s in overlay.0.keys() {
                    cache.remove(s);
                }
                return Err(e);
            }
        };
        tracing::debug!(
            commands = commits.len(),
            append_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch appended"
        );
        if let Some(n) = &self.on_commit {
            let recorded = statuses.iter().filter(|s| matches!(s, AppendStatus::Appended)).count();
            n.send_modify(|v| *v = v.wrapping_add(recorded as u64));
        }
        {
            let mut cache = self.cache();
            if cache.len() > CACHE_LIMIT {
                cache.clear();
            }
            // The next batch's plan may still hold the overlay; then copy it.
            cache.extend(Arc::try_unwrap(overlay).unwrap_or_else(|a| Streams::clone(&a)).0);
        }

        // Map back to the input order.
        let mut by_id: HashMap<_, Processed> = HashMap::with_capacity(commits.len());
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
        // Counted per outcome, not per command: a labelled counter lookup per command showed in profiles.
        let mut counts = [0u64; 3];
        for p in &out {
            counts[match p {
                Processed::Committed { .. } => 0,
                Processed::Rejected { .. } => 1,
                Processed::Duplicate => 2,
            }] += 1;
        }
        for (outcome, n) in ["committed", "rejected", "duplicate"].into_iter().zip(counts) {
            if n > 0 {
                metrics::counter!("socialnet_ingester_commands_total", "outcome" => outcome).increment(n);
            }
        }
        Ok(out)
    }
}
