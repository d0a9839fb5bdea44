//! The ingester's loop: fetch a batch from each queue, process it, ack after commit; park in the backup
//! store when the primary is down; retry with backoff; dead-letter what keeps failing.

use crate::drain::{DrainError, drain_backup};
use crate::processor::{Ahead, Plan, Processed, Processor};
use domain::CommandEnvelope;
use eventstore::{BackupStore, StoreError};
use queue::{CommandSource, Delivery};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IngesterConfig {
    pub batch_size: usize,
    pub fetch_wait: Duration,
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliver: u64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// After the primary store failed, how long to park without trying it again.
    pub primary_retry_after: Duration,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            batch_size: 4096,
            fetch_wait: Duration::from_secs(1),
            max_deliver: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            primary_retry_after: Duration::from_secs(2),
        }
    }
}

impl IngesterConfig {
    fn backoff(&self, delivered: u64) -> Duration {
        let exp = u32::try_from(delivered.saturating_sub(1).min(16)).unwrap_or(16);
        self.backoff_base.saturating_mul(2u32.saturating_pow(exp)).min(self.backoff_max)
    }
}

pub struct Ingester {
    config: IngesterConfig,
    processor: Arc<Processor>,
    backup: Option<BackupStore>,
    /// Commands may be parked: new ones must wait behind them to keep the original order.
    parked: AtomicBool,
    primary_down_until: Mutex<Option<Instant>>,
    drain_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester").field("config", &self.config).finish()
    }
}

impl Ingester {
    pub async fn new(
        config: IngesterConfig,
        processor: Arc<Processor>,
        backup: Option<BackupStore>,
    ) -> Arc<Self> {
        // Another replica (or an earlier run) may have parked commands: assume so until a drain says not.
        let parked = backup.is_some();
        Arc::new(Self {
            config,
            processor,
            backup,
            parked: AtomicBool::new(parked),
            primary_down_until: Mutex::new(None),
            drain_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Consume one source until the task is aborted. On the fast path (primary up, nothing parked) batches
    /// are pipelined: batch N+1 is fetched and decided while batch N is appended and acked, and appended
    /// only after N committed as planned; otherwise it is decided again on what is stored.
    pub async fn run(self: Arc<Self>, source: Arc<dyn CommandSource>) {
        let mut last_error_log = Instant::now() - Duration::from_secs(60);
        let mut in_flight: Option<InFlight> = None;
        loop {
            match source.fetch(self.config.batch_size, self.config.fetch_wait).await {
                Ok(batch) if batch.is_empty() => {
                    settle(&mut in_flight).await;
                    self.maybe_drain().await;
                }
                Ok(batch) => {
                    let started = Instant::now();
                    let batch = self.decode(batch).await;
                    if batch.envelopes.is_empty() {
                        continue;
                    }
                    if self.parked.load(Ordering::SeqCst) || self.primary_resting() {
                        // Off the fast path: one batch at a time, behind whatever is parked.
                        settle(&mut in_flight).await;
                        self.handle(batch, started).await;
                        continue;
                    }
                    let ahead = in_flight.as_ref().map(|f| f.ahead.clone());
                    // A redelivered message's commands were probably appended before the ack was lost
                    // or late: ask the store rather than have the append refuse the batch.
                    let planned = if batch.deliveries.iter().any(|d| d.delivered > 1) {
                        self.processor.plan_checked(&batch.envelopes, ahead.as_ref()).await
                    } else {
                        self.processor.plan(&batch.envelopes, ahead.as_ref()).await
                    };
                    let previous_as_planned = settle(&mut in_flight).await;
                    match planned {
                        Ok(plan) if previous_as_planned => {
                            let ahead = plan.ahead();
                            let task = tokio::spawn(self.clone().commit(batch, plan, started));
                            in_flight = Some(InFlight { task, ahead });
                        }
                        _ => self.handle(batch, started).await,
                    }
                }
                Err(e) => {
                    settle(&mut in_flight).await;
                    if last_error_log.elapsed() > Duration::from_secs(10) {
                        tracing::warn!(queue = source.name(), error = %e, "fetch failed; retrying");
                        last_error_log = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Append a planned batch and settle its messages; true when it committed exactly as planned.
    async fn commit(self: Arc<Self>, batch: Fetched, plan: Plan, started: Instant) -> bool {
        let (result, as_planned) = match self.processor.commit(&batch.envelopes, plan).await {
            Ok(out) => (Ok(out), true),
            // Another writer moved a stream: decide again on fresh state.
            Err(StoreError::Conflict(_)) => (self.processor.process(&batch.envelopes).await, false),
            Err(e) => (Err(e), false),
        };
        if as_planned {
            // Committed: the acks need not hold up the next batch's append (measured: they kept the store
            // idle for a fifth of each cycle). A crash before they are sent only means a redelivery, which
            // is recognised as a duplicate.
            tokio::spawn(async move { self.settle_batch(&batch, result, started).await });
            return true;
        }
        self.settle_batch(&batch, result, started).await;
        as_planned
    }

    /// Run every source concurrently (primary and secondary queue) plus a periodic drain check.
    pub async fn run_all(self: Arc<Self>, sources: Vec<Arc<dyn CommandSource>>) {
        let mut tasks = tokio::task::JoinSet::new();
        for s in sources {
            tasks.spawn(self.clone().run(s));
        }
        if self.backup.is_some() {
            let me = self.clone();
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    me.parked.store(true, Ordering::SeqCst);
                    me.maybe_drain().await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn primary_resting(&self) -> bool {
        let guard = self.primary_down_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|t| Instant::now() < t)
    }

    fn mark_primary(&self, down: bool) {
        let until = down.then(|| Instant::now() + self.config.primary_retry_after);
        *self.primary_down_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// Drain parked commands if there may be any and the primary is not known to be down.
    /// Returns true when nothing is parked any more.
    async fn maybe_drain(&self) -> bool {
        let Some(backup) = &self.backup else {
            return true;
        };
        if !self.parked.load(Ordering::SeqCst) {
            return true;
        }
        if self.primary_resting() {
            return false;
        }
        let _guard = self.drain_lock.lock().await;
        match drain_backup(&self.processor, backup, self.config.batch_size).await {
            Ok(_) => {
                self.parked.store(false, Ordering::SeqCst);
                self.mark_primary(false);
                true
            }
            Err(DrainError::Backup(e)) => {
                // Parked commands cannot be read now; keep writing to the primary rather than stall
                // (they drain later, after newer commands: the one ordering loss we accept).
                tracing::warn!(error = %e, "backup store unreadable; continuing on the primary");
                true
            }
            Err(DrainError::Primary(e)) if e.is_unavailable() => {
                self.mark_primary(true);
                tracing::debug!(error = %e, "drain not possible yet");
                false
            }
            Err(DrainError::Primary(e)) => {
                // The primary refuses a parked command (not an outage): do not stall all new writes on it.
                tracing::error!(error = %e, "a parked command is refused by the primary; it stays parked");
                true
            }
        }
    }

    /// Decode a batch; a message that cannot be decoded is dead-lettered at once (no retry can fix it).
    async fn decode(&self, batch: Vec<Delivery>) -> Fetched {
        let mut fetched = Fetched {
            envelopes: Vec::with_capacity(batch.len()),
            deliveries: Vec::with_capacity(batch.len()),
            owner: Vec::with_capacity(batch.len()),
        };
        for d in batch {
            match queue::decode_batch(&d.payload) {
                Ok(envs) => {
                    fetched.owner.extend(std::iter::repeat_n(fetched.deliveries.len(), envs.len()));
                    fetched.envelopes.extend(envs);
                    fetched.deliveries.push(d);
                }
                Err(reason) => self.give_up(&d, &reason, None).await,
            }
        }
        fetched
    }

    /// One batch on its own: drain what is parked first, then decide and append.
    async fn handle(&self, batch: Fetched, started: Instant) {
        let result = if self.maybe_drain().await {
            self.processor.process(&batch.envelopes).await
        } else {
            Err(StoreError::Unavailable("primary store down or parked commands not yet drained".into()))
        };
        self.settle_batch(&batch, result, started).await;
    }

    /// Ack, park, retry or dead-letter a batch's messages after processing.
    async fn settle_batch(
        &self,
        batch: &Fetched,
        result: Result<Vec<Processed>, StoreError>,
        started: Instant,
    ) {
        let (envelopes, deliveries) = (&batch.envelopes, &batch.deliveries);
        match result {
            Ok(outcomes) => {
                let processed_in = started.elapsed();
                for (env, o) in envelopes.iter().zip(&outcomes) {
                    if let Processed::Rejected { reason } = o {
                        tracing::debug!(command_id = %env.command_id, reason, "command rejected");
                    }
                }
                for d in deliveries {
                    ack(d).await;
                }
                metrics::histogram!("socialnet_ingester_batch_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(
                    size = deliveries.len(),
                    process_ms = processed_in.as_secs_f64() * 1000.0,
                    total_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "batch committed"
                );
            }
            Err(e) if e.is_unavailable() => {
                self.mark_primary(true);
                self.park_or_retry(envelopes, deliveries, &e).await;
            }
            Err(e) => {
                // Something in the batch is refused: find which by processing one by one. The others
                // commit now; a message is acked once all its commands are recorded.
                tracing::warn!(error = %e, "batch refused; isolating the failing commands");
                let results = self.processor.process_each(envelopes).await;
                let mut verdicts: Vec<Verdict> = deliveries.iter().map(|_| Verdict::default()).collect();
                for ((env, r), &owner) in envelopes.iter().zip(results).zip(&batch.owner) {
                    match r {
                        Ok(_) => {}
                        Err(e) if e.is_unavailable() => verdicts[owner].unavailable = true,
                        Err(e) => verdicts[owner].refused.push((env, e.to_string())),
                    }
                }
                for (d, v) in deliveries.iter().zip(verdicts) {
                    if !v.refused.is_empty() {
                        self.fail(d, &v.refused).await;
                    } else if v.unavailable {
                        self.retry(d).await;
                    } else {
                        ack(d).await;
                    }
                }
            }
        }
    }

    async fn park_or_retry(
        &self,
        envelopes: &[CommandEnvelope],
        deliveries: &[Delivery],
        cause: &StoreError,
    ) {
        if let Some(backup) = &self.backup {
            match backup.park(envelopes).await {
                Ok(()) => {
                    self.parked.store(true, Ordering::SeqCst);
                    metrics::counter!("socialnet_ingester_parked_total").increment(envelopes.len() as u64);
                    tracing::warn!(count = envelopes.len(), cause = %cause, "primary store down: parked in backup");
                    for d in deliveries {
                        ack(d).await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, cause = %cause, "primary and backup store both unavailable")
                }
            }
        } else {
            tracing::warn!(cause = %cause, "event store unavailable; will retry");
        }
        // Store outages are not the message's fault: retry without counting toward the dead-letter limit.
        for d in deliveries {
            let _ = d.retry_later(self.config.backoff_base).await;
        }
    }

    async fn retry(&self, d: &Delivery) {
        let _ = d.retry_later(self.config.backoff(d.delivered)).await;
    }

    /// Commands of a message were refused: retry the message with backoff, or, once it has used up its
    /// deliveries, dead-letter the refused commands (the message's others are committed) with the reason.
    async fn fail(&self, d: &Delivery, refused: &[(&CommandEnvelope, String)]) {
        let reason = refused.first().map(|(_, r)| r.as_str()).unwrap_or_default();
        if d.delivered < self.config.max_deliver {
            tracing::warn!(msg_id = ?d.msg_id, delivered = d.delivered, reason, "command failed; will retry");
            self.retry(d).await;
            return;
        }
        let commands: Vec<CommandEnvelope> = refused.iter().map(|(e, _)| (*e).clone()).collect();
        self.give_up(d, reason, Some(&commands)).await;
    }

    /// Dead-letter the message with `reason`: all of it, or only `part` of its commands (the others are
    /// committed), one letter per command.
    async fn give_up(&self, d: &Delivery, reason: &str, part: Option<&[CommandEnvelope]>) {
        let n = part.map_or(1, <[CommandEnvelope]>::len);
        tracing::error!(msg_id = d.msg_id, delivered = d.delivered, reason, "dead-lettering");
        metrics::counter!("socialnet_ingester_dead_lettered_total").increment(n as u64);
        let done = match part {
            Some(commands) => d.dead_letter_commands(reason, commands).await,
            None => d.dead_letter(reason).await,
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "could not dead-letter; the message will be redelivered");
        }
    }
}

/// A fetched batch: its commands in order, and for each the index of the message it came in.
struct Fetched {
    envelopes: Vec<CommandEnvelope>,
    deliveries: Vec<Delivery>,
    owner: Vec<usize>,
}

/// What isolating a refused batch found for one message.
#[derive(Default)]
struct Verdict<'a> {
    unavailable: bool,
    refused: Vec<(&'a CommandEnvelope, String)>,
}

/// The batch being appended while the next one is decided.
struct InFlight {
    task: tokio::task::JoinHandle<bool>,
    ahead: Ahead,
}

/// Wait for the batch in flight, if any; true when there was none or it committed exactly as planned.
async fn settle(in_flight: &mut Option<InFlight>) -> bool {
    match in_flight.take() {
        None => true,
        Some(f) => f.task.await.unwrap_or(false),
    }
}

async fn ack(d: &Delivery) {
    if let Err(e) = d.ack().await {
        // The command is committed; a redelivery will be recognised as a duplicate.
        tracing::warn!(error = %e, msg_id = ?d.msg_id, "ack failed after commit");
    }
}
