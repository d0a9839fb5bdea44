//! One task per target: catch up, wait for a commit signal (or a short timeout), repeat.

use crate::status::{Shared, TargetStatus};
use eventstore::EventStore;
use projection::{Planner, PlannerConfig, ProjectionError, ProjectionTarget, apply_range};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub batch: usize,
    pub planner: PlannerConfig,
    /// Longest wait for a commit signal before looking anyway.
    pub idle_poll: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self { batch: 1000, planner: PlannerConfig::default(), idle_poll: Duration::from_millis(500) }
    }
}

#[derive(Clone)]
pub struct Projector {
    pub store: Arc<dyn EventStore>,
    pub targets: Vec<Arc<dyn ProjectionTarget>>,
    pub config: ProjectorConfig,
    pub status: Shared,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("targets", &self.targets.len()).finish()
    }
}

impl Projector {
    pub fn new(
        store: Arc<dyn EventStore>,
        targets: Vec<Arc<dyn ProjectionTarget>>,
        config: ProjectorConfig,
    ) -> Self {
        let status = Shared::default();
        for t in &targets {
            status.set(t.name(), TargetStatus::new(t.name()));
        }
        Self { store, targets, config, status }
    }

    /// Run every target until aborted. `commits` changes whenever events are committed.
    pub async fn run(self, commits: watch::Receiver<u64>) {
        let mut tasks = tokio::task::JoinSet::new();
        for t in self.targets.clone() {
            let me = self.clone();
            let rx = commits.clone();
            tasks.spawn(async move { me.run_target(t, rx).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn generation(&self, target: &dyn ProjectionTarget) -> Result<u64, ProjectionError> {
        match target.current_generation().await? {
            Some(g) => Ok(g),
            None => {
                // A target that never had (or lost) its data starts over at a fresh generation.
                let g = target.allocate_generation().await?;
                // An empty checkpoint first, so readers see a live (if empty) target, not a missing one.
                if target.state(g).await?.is_none() {
                    target.apply(g, &[], None, projection::TargetState::default()).await?;
                }
                target.set_current(g).await?;
                tracing::warn!(
                    target = target.name(),
                    generation = g,
                    "target has no generation: projecting from the start"
                );
                Ok(g)
            }
        }
    }

    async fn run_target(&self, target: Arc<dyn ProjectionTarget>, mut commits: watch::Receiver<u64>) {
        let name = target.name().to_owned();
        let mut planner = Planner::new(self.config.planner.clone(), false);
        let mut generation = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            commits.borrow_and_update();
            let round = async {
                let g = self.generation(target.as_ref()).await?;
                if generation != Some(g) {
                    planner.reset(false);
                    generation = Some(g);
                }
                let n = apply_range(
                    self.store.as_ref(),
                    target.as_ref(),
                    g,
                    &mut planner,
                    self.config.batch,
                    None,
                    &mut |_| {},
                )
                .await?;
                Ok::<(u64, u64), ProjectionError>((g, n))
            }
            .await;
            match round {
                Ok((g, _)) => {
                    backoff = Duration::from_millis(100);
                    let state = target.state(g).await.ok().flatten();
                    self.status.update(&name, |s| {
                        s.healthy = true;
                        s.error = None;
                        s.generation = Some(g);
                        s.state = state;
                    });
                    let _ = tokio::time::timeout(self.config.idle_poll, commits.changed()).await;
                }
                Err(ProjectionError::Conflict(_)) => {
                    // Someone else moved the checkpoint (a rebuild flipped): pick up from there at once.
                    generation = None;
                }
                Err(e) => {
                    tracing::warn!(target = %name, error = %e, "projection failed; retrying");
                    self.status.update(&name, |s| {
                        s.healthy = false;
                        s.error = Some(e.to_string());
                    });
                    generation = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
