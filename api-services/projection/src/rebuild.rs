//! Feeding events into a target: the one loop behind the live projector, a blue/green rebuild and the
//! in-memory replay of `verify`. Each batch is planned, then applied with a compare-and-set on the
//! checkpoint; the next batch is read from the event store while the current one is being applied.

use crate::memory::MemoryTarget;
use crate::ops::Op;
use crate::planner::{Planner, PlannerConfig};
use crate::rebuild_image::{BIG_KEY, BoundedImage, CACHE_WEIGHT, HOME_RANGES, Write};
use crate::target::{ProjectionError, ProjectionTarget, TargetState};
use eventstore::{EventStore, GlobalCursor, RecordedEvent};
use std::time::{Duration, Instant};

/// Apply events after the generation's checkpoint (up to `until`, if given) until the store has no more.
/// Returns how many events were applied. On any error the planner's cache is dropped.
pub async fn apply_range(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    generation: u64,
    planner: &mut Planner,
    batch: usize,
    until: Option<GlobalCursor>,
    on_batch: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ProjectionError> {
    feed(store, target, generation, planner, batch, until, on_batch, true).await
}

/// The replay phase of a rebuild: like [`apply_range`] into a generation nobody else uses yet, so batches
/// skip the checkpoint compare-and-set and go out as plain pipelines (a crash leaves only an unused
/// generation behind; the next rebuild starts a new one).
async fn replay_private(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    generation: u64,
    planner: &mut Planner,
    batch: usize,
    on_batch: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ProjectionError> {
    feed(store, target, generation, planner, batch, None, on_batch, false).await
}

/// The one loop behind both: runs [`apply_range_inner`] and drops the planner's cache on any error, since
/// the cache may then hold changes the target never received.
#[allow(clippy::too_many_arguments)]
async fn feed(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    generation: u64,
    planner: &mut Planner,
    batch: usize,
    until: Option<GlobalCursor>,
    on_batch: &mut (dyn FnMut(u64) + Send),
    checked: bool,
) -> Result<u64, ProjectionError> {
    let result = apply_range_inner(store, target, generation, planner, batch, until, on_batch, checked).await;
    if result.is_err() {
        planner.reset(false);
    }
    result
}

/// Most operations applied by one script (one Redis round trip, one checkpoint).
const MAX_OPS: usize = 20_000;

fn state_after(state: Option<TargetState>, events: &[RecordedEvent]) -> TargetState {
    let last = events.last().map(|e| (e.cursor(), e.recorded_at.timestamp_millis()));
    let prev = state.unwrap_or_default();
    TargetState {
        cursor: last.map(|l| l.0).unwrap_or(prev.cursor),
        events: prev.events + events.len() as u64,
        last_event_ms: last.map(|l| l.1).unwrap_or(prev.last_event_ms),
    }
}

fn clip(mut events: Vec<RecordedEvent>, until: Option<GlobalCursor>) -> Vec<RecordedEvent> {
    if let Some(u) = until {
        events.retain(|e| e.cursor() <= u);
    }
    events
}

#[allow(clippy::too_many_arguments)]
async fn apply_range_inner(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    generation: u64,
    planner: &mut Planner,
    batch: usize,
    until: Option<GlobalCursor>,
    on_batch: &mut (dyn FnMut(u64) + Send),
    checked: bool,
) -> Result<u64, ProjectionError> {
    let view = target.view(generation);
    let mut state = target.state(generation).await?;
    let mut applied = 0u64;
    if checked && let Some(pending) = target.pending(generation).await? {
        applied += finish_pending(store, target, generation, planner, state, pending).await?;
        on_batch(applied);
        state = Some(pending);
    }
    let cursor = state.map(|s| s.cursor).unwrap_or_default();
    let mut events = clip(store.read_all(cursor, batch).await?, until);
    let mut ops = Vec::new();
    while !events.is_empty() {
        ops.clear();
        // Plan event by event; once the operations pass MAX_OPS, apply what is planned so far (with its
        // checkpoint) so one script never keeps Redis busy for long. An event is never split.
        let mut start = 0;
        for (i, e) in events.iter().enumerate() {
            planner.plan(e, view.as_ref(), &mut ops).await?;
            if ops.len() >= MAX_OPS && i + 1 < events.len() {
                let next = state_after(state, &events[start..=i]);
                if checked {
                    target.apply(generation, &ops, state, next).await?;
                } else {
                    target.apply_unchecked(generation, &ops, next).await?;
                }
                applied += (i + 1 - start) as u64;
                on_batch((i + 1 - start) as u64);
                state = Some(next);
                ops.clear();
                start = i + 1;
            }
        }
        let chunk = &events[start..];
        let next = state_after(state, chunk);
        // Read the next batch while this one is applied. The read is polled first, so its query is on its
        // way to the event store before an in-memory apply keeps this thread busy.
        let apply = async {
            if checked {
                target.apply(generation, &ops, state, next).await
            } else {
                target.apply_unchecked(generation, &ops, next).await
            }
        };
        let (following, applied_now) = tokio::join!(store.read_all(next.cursor, batch), apply);
        applied_now?;
        applied += chunk.len() as u64;
        metrics::counter!("socialnet_projector_events_total", "target" => target.name().to_owned())
            .increment(events.len() as u64);
        on_batch(chunk.len() as u64);
        state = Some(next);
        let cursor = next.cursor;
        if until.is_some_and(|u| cursor >= u) {
            break;
        }
        events = clip(following?, until);
    }
    Ok(applied)
}

/// Apply exactly the batch a writer began and did not finish: the events after `state` up to `pending`,
/// in one step (partitions that already have it skip their part).
async fn finish_pending(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    generation: u64,
    planner: &mut Planner,
    state: Option<TargetState>,
    pending: TargetState,
) -> Result<u64, ProjectionError> {
    let from = state.unwrap_or_default();
    let count = pending.events.saturating_sub(from.events);
    let events = clip(store.read_all(from.cursor, count as usize).await?, Some(pending.cursor));
    if events.len() as u64 != count || state_after(state, &events) != pending {
        return Err(ProjectionError::Corrupt(format!(
            "pending batch {pending:?} does not match the {} events after {from:?}",
            events.len()
        )));
    }
    let view = target.view(generation);
    let mut ops = Vec::new();
    for e in &events {
        planner.plan(e, view.as_ref(), &mut ops).await?;
    }
    target.apply(generation, &ops, state, pending).await?;
    tracing::warn!(target = target.name(), generation, events = count, "finished a batch left pending");
    Ok(count)
}

/// How a rebuild replays history into the new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replay {
    /// Replay into memory, then load the final image (far fewer writes: a home timeline is written
    /// once with the posts that survive its cap, not once per post ever fanned into it). Needs memory
    /// for the whole image. Used when the target supports it.
    #[default]
    InMemory,
    /// Apply event by event to the target: constant memory, more target work.
    Streaming,
}

/// Approximate members and fields per pipeline when loading an image.
pub(crate) const LOAD_WEIGHT: usize = 50_000;

/// Blue/green rebuild of a target: replay everything into a new generation while reads and the live
/// projector stay on the current one, catch up, flip the current generation atomically, catch up again,
/// then remove the old generation after `grace` (reads that started on it finish first).
/// Returns (new generation, events applied).
pub async fn rebuild_generation(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    config: PlannerConfig,
    batch: usize,
    grace: Duration,
    replay: Replay,
    on_batch: &mut (dyn FnMut(u64) + Send),
) -> Result<(u64, u64), ProjectionError> {
    let old = target.current_generation().await?;
    let generation = target.allocate_generation().await?;
    let started = Instant::now();
    let mut planner = Planner::new(config, true);
    let mut applied = if replay == Replay::InMemory && target.bulk_loads() && planner.is_fresh() {
        replay_and_load(store, target, generation, &mut planner, batch, on_batch).await?
    } else {
        replay_private(store, target, generation, &mut planner, batch, on_batch).await?
    };
    target.set_current(generation).await?;
    // Events that arrived between the last batch and the flip (the live projector now follows this generation too).
    applied += apply_range(store, target, generation, &mut planner, batch, None, on_batch).await.unwrap_or(0);
    tracing::info!(
        target = target.name(),
        generation,
        applied,
        secs = started.elapsed().as_secs_f64(),
        "rebuild flipped"
    );
    if let Some(old) = old.filter(|o| *o != generation) {
        tokio::time::sleep(grace).await;
        let removed = target.drop_generation(old).await?;
        tracing::info!(target = target.name(), old, removed, "old generation removed");
    }
    Ok((generation, applied))
}

/// Replay into a bounded in-memory image ([`BoundedImage`]) that writes to `generation` as it goes: keys
/// that cool down during the replay, then, at the end, the rest (homes last) and the checkpoint.
///
/// A fresh planner never reads its target (everything it needs is in its own cache), so three things run
/// at once: this task reads and plans batch N+1, a thread folds batch N into the image, and the writer sends
/// what the image gives up to the target, in order.
async fn replay_and_load(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    generation: u64,
    planner: &mut Planner,
    batch: usize,
    on_batch: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ProjectionError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<Vec<Op>>>(2);
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Write>(4);
    let builder = std::thread::Builder::new()
        .name("rebuild-image".into())
        .spawn(move || build_image(rx, wtx))
        .map_err(|e| ProjectionError::Unavailable(format!("cannot start the rebuild's image thread: {e}")))?;
    let started = Instant::now();
    let empty = MemoryTarget::new("rebuild");
    let plan = async move {
        let planned = plan_all(store, empty.view(1).as_ref(), planner, batch, &tx, on_batch).await;
        if planned.is_ok() {
            let _ = tx.send(None).await;
        }
        planned
    };
    let write = async move {
        let mut keys = 0usize;
        while let Some(w) = wrx.recv().await {
            match w {
                Write::Image(chunk) => {
                    keys += chunk.len();
                    target.load_image(generation, &chunk).await?;
                }
                // The real checkpoint is written last; the generation is private until then.
                Write::Ops(ops) => target.apply_unchecked(generation, &ops, TargetState::default()).await?,
            }
        }
        Ok::<_, ProjectionError>(keys)
    };
    let (planned, written) = tokio::join!(plan, write);
    let built = builder.join();
    let (applied, state) = planned?;
    let keys = written?;
    built.map_err(|_| ProjectionError::Unavailable("the rebuild's image thread panicked".into()))??;
    target.apply_unchecked(generation, &[], state).await?;
    tracing::info!(
        target = target.name(),
        events = applied,
        keys,
        secs = started.elapsed().as_secs_f64(),
        "rebuild replayed and its image written"
    );
    Ok(applied)
}

/// The image thread: folds each batch of operations into the image and passes on what it gives up; at the
/// end (`None`) the rest. Stops early when the writer stops.
fn build_image(
    mut rx: tokio::sync::mpsc::Receiver<Option<Vec<Op>>>,
    wtx: tokio::sync::mpsc::Sender<Write>,
) -> Result<(), ProjectionError> {
    let mut image = BoundedImage::new(CACHE_WEIGHT, BIG_KEY, HOME_RANGES)?;
    loop {
        let ops = match rx.blocking_recv() {
            Some(Some(ops)) => ops,
            Some(None) => break,
            // Planning failed (the sender went without saying it was done): nothing more to write.
            None => return Ok(()),
        };
        for w in image.apply(ops)? {
            if wtx.blocking_send(w).is_err() {
                return Ok(());
            }
        }
    }
    tracing::debug!("rebuild replayed; writing the homes and the cached keys");
    for w in image.finish(LOAD_WEIGHT)? {
        if wtx.blocking_send(w?).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Read every event and send its operations to the apply thread, batch by batch (the next batch is read
/// while this one is planned). Returns the events planned and the checkpoint after the last one.
async fn plan_all(
    store: &dyn EventStore,
    view: &dyn crate::target::KvRead,
    planner: &mut Planner,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Option<Vec<Op>>>,
    on_batch: &mut (dyn FnMut(u64) + Send),
) -> Result<(u64, TargetState), ProjectionError> {
    let mut state = TargetState::default();
    let mut planned = 0u64;
    let mut events = store.read_all(state.cursor, batch).await?;
    while !events.is_empty() {
        let next = state_after(Some(state), &events);
        let plan = async {
            let mut ops = Vec::new();
            for e in &events {
                planner.plan(e, view, &mut ops).await?;
            }
            Ok::<_, ProjectionError>(ops)
        };
        let (following, ops) = tokio::join!(store.read_all(next.cursor, batch), plan);
        tx.send(Some(ops?))
            .await
            .map_err(|_| ProjectionError::Unavailable("the rebuild's apply thread stopped".into()))?;
        planned += events.len() as u64;
        on_batch(events.len() as u64);
        state = next;
        events = following?;
    }
    Ok((planned, state))
}

/// Replay the event store into a fresh in-memory target up to `until`; returns it and its generation.
pub async fn replay_into_memory(
    store: &dyn EventStore,
    config: PlannerConfig,
    until: Option<GlobalCursor>,
) -> Result<(MemoryTarget, u64), ProjectionError> {
    let memory = MemoryTarget::new("verify");
    memory.set_current(1).await?;
    let mut planner = Planner::new(config, true);
    if until != Some(GlobalCursor::START) {
        apply_range(store, &memory, 1, &mut planner, 5000, until, &mut |_| {}).await?;
    }
    Ok((memory, 1))
}
