//! What the projector knows about each target, and `/admin/projections`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use contract::admin::{Checkpoint, ProjectorProjections, ProjectorTarget, TargetPosition};
use eventstore::EventStore;
use projection::{ProjectionTarget, TargetState};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub name: String,
    pub healthy: bool,
    pub generation: Option<u64>,
    pub state: Option<TargetState>,
    pub error: Option<String>,
}

impl TargetStatus {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), healthy: false, generation: None, state: None, error: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<RwLock<BTreeMap<String, TargetStatus>>>);

impl Shared {
    pub fn set(&self, name: &str, s: TargetStatus) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), s);
    }
    pub fn update(&self, name: &str, f: impl FnOnce(&mut TargetStatus)) {
        if let Some(s) = self.0.write().unwrap_or_else(|p| p.into_inner()).get_mut(name) {
            f(s);
        }
    }
    pub fn all(&self) -> Vec<TargetStatus> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// One target's admin view: health, generation, checkpoint, events applied, exact lag in events and
/// seconds, and the last rebuild recorded in it.
pub async fn status_of(
    store: &dyn EventStore,
    s: &TargetStatus,
    target: Option<&dyn ProjectionTarget>,
) -> ProjectorTarget {
    let cursor = s.state.map(|st| st.cursor).unwrap_or_default();
    let lag_events = store.count_after(cursor).await.ok().map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let lag_seconds = match (lag_events, s.state) {
        (Some(0), _) => Some(0.0),
        (_, Some(st)) if st.last_event_ms > 0 => Some(((now_ms - st.last_event_ms).max(0) as f64) / 1000.0),
        _ => None,
    };
    let rebuild = match target {
        Some(t) => t.last_rebuild().await.ok().flatten(),
        None => None,
    };
    ProjectorTarget {
        name: s.name.clone(),
        healthy: s.healthy,
        position: TargetPosition {
            generation: s.generation,
            checkpoint: s.state.map(|st| Checkpoint { tx_id: st.cursor.tx_id, position: st.cursor.position }),
            events_applied: s.state.map(|st| st.events),
            lag_events,
            lag_seconds,
        },
        error: s.error.clone(),
        rebuild,
    }
}

#[derive(Clone)]
struct AdminState {
    store: Arc<dyn EventStore>,
    status: Shared,
    targets: Vec<Arc<dyn ProjectionTarget>>,
}

async fn projections(State(st): State<AdminState>) -> Json<ProjectorProjections> {
    let mut targets = Vec::new();
    for s in st.status.all() {
        let target = st.targets.iter().find(|t| t.name() == s.name).map(|t| t.as_ref());
        targets.push(status_of(st.store.as_ref(), &s, target).await);
    }
    Json(ProjectorProjections { targets })
}

/// `GET /admin/projections`.
pub fn admin_routes(
    store: Arc<dyn EventStore>,
    status: Shared,
    targets: Vec<Arc<dyn ProjectionTarget>>,
) -> Router {
    Router::new().route("/admin/projections", get(projections)).with_state(AdminState {
        store,
        status,
        targets,
    })
}
