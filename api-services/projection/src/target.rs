//! What a projection target offers: primitive reads ([`KvRead`], used by the planner and the queries) on
//! one generation, and atomic batch application with a checkpoint, generations and dumps.

use crate::dump::{Dump, ImageValue};
use crate::invalidation::Invalidation;
use crate::ops::Op;
use async_trait::async_trait;
use contract::admin::RebuildProgress;
use eventstore::GlobalCursor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The target cannot be reached or failed: trip its breaker, fail over, retry later.
    #[error("projection target unavailable: {0}")]
    Unavailable(String),
    /// Another writer moved this generation's checkpoint (or flipped the generation): reload and retry.
    #[error("checkpoint moved under us: {0}")]
    Conflict(String),
    /// Stored data that cannot be understood.
    #[error("corrupt projection data: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
}

/// How far one generation of a target has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    pub cursor: GlobalCursor,
    /// Events applied to this generation so far.
    pub events: u64,
    /// When the last applied event was recorded in the event store (ms since the epoch).
    pub last_event_ms: i64,
}

/// Primitive reads on one generation of a target.
#[async_trait]
pub trait KvRead: Send + Sync {
    async fn hgetall_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<HashMap<String, String>>>, ProjectionError>;
    /// Members with score strictly below `below` (or all), highest first, at most `limit`.
    async fn zrevrange_by_score(
        &self,
        key: &str,
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, ProjectionError>;
    async fn zrange_all(&self, key: &str) -> Result<Vec<(String, i64)>, ProjectionError>;
    /// Members of sorted set `a` that are also in sorted set `b`.
    async fn zinter_members(&self, a: &str, b: &str) -> Result<Vec<String>, ProjectionError>;
    async fn zcard_many(&self, keys: &[String]) -> Result<Vec<usize>, ProjectionError>;
    /// `zrevrange_by_score` on several keys at once (one round trip where the target can).
    async fn zrevrange_many(
        &self,
        keys: &[String],
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Vec<(String, i64)>>, ProjectionError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.zrevrange_by_score(k, below, limit).await?);
        }
        Ok(out)
    }
    async fn hget_many(&self, keys: &[String], field: &str) -> Result<Vec<Option<String>>, ProjectionError>;

    /// A home page's raw material: `(post id, score, post hash)` newest first, at most `limit`, from the
    /// user's fanned-out home merged with the timelines of the celebrities the user follows (strictly
    /// below `below`). Targets may answer it in one round trip; this default composes the primitives.
    async fn home_page(
        &self,
        user: &domain::UserId,
        below: Option<i64>,
        limit: usize,
    ) -> Result<HomePage, ProjectionError> {
        use crate::keys::Keys;
        let ids = self.zrevrange_by_score(&Keys::home(user), below, limit).await?;
        let celebs = self.zinter_members(&Keys::following(user), Keys::CELEBS).await?;
        merge_and_hydrate(self, ids, celebs, below, limit).await
    }
}

/// The rest of a home page once its own entries (`ids`) and the followed celebrities are known: their
/// timelines merged in (newest first, each post once, at most `limit`), then every post's hash.
pub(crate) async fn merge_and_hydrate<V: KvRead + ?Sized>(
    view: &V,
    mut ids: Vec<(String, i64)>,
    celebs: Vec<String>,
    below: Option<i64>,
    limit: usize,
) -> Result<HomePage, ProjectionError> {
    use crate::keys::Keys;
    if !celebs.is_empty() {
        let keys: Vec<String> = celebs
            .iter()
            .filter_map(|c| domain::UserId::parse(c.as_str()).ok())
            .map(|c| Keys::user_timeline(&c))
            .collect();
        ids.extend(view.zrevrange_many(&keys, below, limit).await?.into_iter().flatten());
        let mut seen = std::collections::HashSet::new();
        ids.retain(|(m, _)| seen.insert(m.clone()));
        ids.sort_by_key(|(_, score)| std::cmp::Reverse(*score));
        ids.truncate(limit);
    }
    let keys: Vec<String> = ids.iter().map(|(id, _)| Keys::post_of(id)).collect();
    let hashes = view.hgetall_many(&keys).await?;
    let items = ids.into_iter().zip(hashes).map(|((id, score), post)| HomeItem { id, score, post }).collect();
    Ok(HomePage { items, celebrities: celebs })
}

/// What [`KvRead::home_page`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HomePage {
    pub items: Vec<HomeItem>,
    /// The followed celebrities whose timelines were merged in.
    pub celebrities: Vec<String>,
}

impl HomePage {
    /// Every key the page was read from (relative names): a change to any of them may change the page.
    pub fn sources(&self, user: &domain::UserId) -> Vec<String> {
        use crate::keys::Keys;
        let mut keys = vec![Keys::home(user), Keys::following(user), Keys::CELEBS.to_owned()];
        keys.extend(self.celebrities.iter().map(|c| Keys::user_timeline_of(c)));
        keys.extend(self.items.iter().map(|i| Keys::post_of(&i.id)));
        keys
    }
}

/// One entry of [`KvRead::home_page`]; `post` is `None` when the post vanished meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct HomeItem {
    pub id: String,
    pub score: i64,
    pub post: Option<HashMap<String, String>>,
}

#[async_trait]
pub trait ProjectionTarget: Send + Sync {
    fn name(&self) -> &str;
    /// Reads on one generation.
    fn view(&self, generation: u64) -> Arc<dyn KvRead>;
    /// The generation reads should use, if any was ever made.
    async fn current_generation(&self) -> Result<Option<u64>, ProjectionError>;
    /// A new, never used generation number (for a rebuild).
    async fn allocate_generation(&self) -> Result<u64, ProjectionError>;
    async fn state(&self, generation: u64) -> Result<Option<TargetState>, ProjectionError>;
    /// A batch begun but not finished (a writer died between the partitions of a partitioned target): the
    /// checkpoint it moves to. The next writer must apply exactly that batch — the events after the
    /// checkpoint up to this one — before any other. `None` on targets that apply a batch in one step.
    async fn pending(&self, generation: u64) -> Result<Option<TargetState>, ProjectionError> {
        let _ = generation;
        Ok(None)
    }
    /// Apply `ops` and move the checkpoint from `expected` to `next`, all or nothing. Fails with
    /// `Conflict` when the checkpoint is no longer `expected`.
    async fn apply(
        &self,
        generation: u64,
        ops: &[Op],
        expected: Option<TargetState>,
        next: TargetState,
    ) -> Result<(), ProjectionError>;
    /// Apply without the checkpoint compare-and-set, in as few round trips as the target can: only for a
    /// generation no one else writes or reads yet (the replay phase of a rebuild). The checkpoint is
    /// still written last.
    async fn apply_unchecked(
        &self,
        generation: u64,
        ops: &[Op],
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let current = self.state(generation).await?;
        self.apply(generation, ops, current, next).await
    }

    /// Whether [`ProjectionTarget::load_image`] is supported. A target that says yes is rebuilt by
    /// replaying into memory and loading the final image, instead of event by event.
    fn bulk_loads(&self) -> bool {
        false
    }

    /// Write whole values (a replayed image) into a generation no one writes or reads yet; each key is
    /// set to its value. The checkpoint is not touched.
    async fn load_image(
        &self,
        generation: u64,
        image: &[(String, ImageValue)],
    ) -> Result<(), ProjectionError> {
        let _ = (generation, image);
        Err(ProjectionError::Unavailable(format!("target {} cannot load an image", self.name())))
    }

    /// Make `generation` the one reads use (atomic).
    async fn set_current(&self, generation: u64) -> Result<(), ProjectionError>;
    /// Remove every key of a generation.
    async fn drop_generation(&self, generation: u64) -> Result<u64, ProjectionError>;
    async fn dump(&self, generation: u64) -> Result<Dump, ProjectionError>;
    async fn ping(&self) -> Result<(), ProjectionError>;

    /// Record a rebuild's progress in the target, where whoever watches it can read it (only the last
    /// record is kept). A target that keeps none ignores it.
    async fn record_rebuild(&self, progress: &RebuildProgress) -> Result<(), ProjectionError> {
        let _ = progress;
        Ok(())
    }

    /// The last rebuild progress recorded in the target, if any.
    async fn last_rebuild(&self) -> Result<Option<RebuildProgress>, ProjectionError> {
        Ok(None)
    }

    /// Subscribe to this target's change notices (see [`crate::invalidation`]). `None` when the target
    /// sends none, so readers must not cache its answers. The stream ends when the subscription is lost:
    /// notices may have been missed, and whatever was cached must be dropped.
    async fn invalidations(
        &self,
    ) -> Result<Option<futures::stream::BoxStream<'static, Invalidation>>, ProjectionError> {
        Ok(None)
    }
}
