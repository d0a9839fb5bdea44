//! What the projector knows about each target, and `/admin/projections`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use eventstore::EventStore;
use projection::TargetState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub healthy: bool,
    pub generation: Option<u64>,
    #[serde(skip)]
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

/// The JSON of one target: health, generation, checkpoint, events applied, lag in events and seconds.
pub async fn status_of(store: &dyn EventStore, s: &TargetStatus) -> serde_json::Value {
    let cursor = s.state.map(|st| st.cursor).unwrap_or_default();
    let lag_events = store.count_after(cursor).await.ok();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let lag_seconds = match (lag_events, s.state) {
        (Some(0), _) => 0.0,
        (_, Some(st)) if st.last_event_ms > 0 => ((now_ms - st.last_event_ms).max(0) as f64) / 1000.0,
        _ => f64::NAN,
    };
    serde_json::json!({
        "name": s.name,
        "healthy": s.healthy,
        "generation": s.generation,
        "checkpoint": s.state.map(|st| serde_json::json!({"tx_id": st.cursor.tx_id, "position": st.cursor.position})),
        "events_applied": s.state.map(|st| st.events),
        "lag_events": lag_events,
        "lag_seconds": if lag_seconds.is_nan() { serde_json::Value::Null } else { serde_json::json!(lag_seconds) },
        "error": s.error,
    })
}

#[derive(Clone)]
struct AdminState {
    store: Arc<dyn EventStore>,
    status: Shared,
}

/// `GET /admin/projections`.
pub fn admin_routes(store: Arc<dyn EventStore>, status: Shared) -> Router {
    Router::new()
        .route(
            "/admin/projections",
            get(|State(st): State<AdminState>| async move {
                let mut targets = Vec::new();
                for s in st.status.all() {
                    targets.push(status_of(st.store.as_ref(), &s).await);
                }
                Json(serde_json::json!({"targets": targets}))
            }),
        )
        .with_state(AdminState { store, status })
}
