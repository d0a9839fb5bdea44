//! Stand-in read API and projector pods for the FAKE-API tests that do not start real processes: they
//! answer `/admin/projections` with the `contract::admin` shapes and take `PUT /admin/projections/active`,
//! with health a test sets and switches a test can make fail. They are registered through EndpointSlices
//! labelled as the EndpointSlice controller labels them (the Service's labels, `kubernetes.io/service-name`).
#![allow(dead_code, clippy::unwrap_used)]

use crate::fake_api::FakeApi;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use contract::admin::{
    Breaker, HomeCache, ProjectorProjections, ProjectorTarget, ReadApiProjections, ReadTarget,
    RebuildProgress, SwitchActive, TargetPosition,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct PodState {
    active: String,
    healthy: BTreeMap<String, bool>,
    /// Switch requests to refuse before taking one.
    refuse: u32,
    switches: u32,
    rebuild: BTreeMap<String, RebuildProgress>,
}

#[derive(Clone)]
pub struct FakePod {
    state: Arc<Mutex<PodState>>,
    /// Answers as the projector (else as a read API pod).
    projector: bool,
    pub port: u16,
}

impl FakePod {
    /// A read API pod serving `active`.
    pub async fn read_api(active: &str, targets: &[&str]) -> FakePod {
        Self::start(active, targets, false).await
    }

    /// A projector.
    pub async fn projector(targets: &[&str]) -> FakePod {
        Self::start("", targets, true).await
    }

    async fn start(active: &str, targets: &[&str], projector: bool) -> FakePod {
        let state = PodState {
            active: active.into(),
            healthy: targets.iter().map(|t| ((*t).to_owned(), true)).collect(),
            ..PodState::default()
        };
        let pod = FakePod { state: Arc::new(Mutex::new(state)), projector, port: 0 };
        let app = axum::Router::new()
            .route("/admin/projections", axum::routing::get(view))
            .route("/admin/projections/active", axum::routing::put(switch))
            .with_state(pod.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakePod { port, ..pod }
    }

    pub fn set_healthy(&self, target: &str, healthy: bool) {
        self.state.lock().unwrap().healthy.insert(target.into(), healthy);
    }
    pub fn refuse_switches(&self, n: u32) {
        self.state.lock().unwrap().refuse = n;
    }
    pub fn active(&self) -> String {
        self.state.lock().unwrap().active.clone()
    }
    pub fn switches(&self) -> u32 {
        self.state.lock().unwrap().switches
    }
    pub fn set_rebuild(&self, target: &str, p: RebuildProgress) {
        self.state.lock().unwrap().rebuild.insert(target.into(), p);
    }

    fn read_view(&self) -> ReadApiProjections {
        let s = self.state.lock().unwrap();
        let targets = s
            .healthy
            .iter()
            .map(|(name, ok)| ReadTarget {
                name: name.clone(),
                active: *name == s.active,
                healthy: *ok,
                reason: (!ok).then(|| "unreachable".into()),
                reachable: *ok,
                breaker: if *ok { Breaker::Closed } else { Breaker::Open },
                position: position(*ok),
                error: None,
                home_cache: HomeCache::default(),
            })
            .collect();
        ReadApiProjections { active: s.active.clone(), targets }
    }

    fn projector_view(&self) -> ProjectorProjections {
        let s = self.state.lock().unwrap();
        let targets = s
            .healthy
            .iter()
            .map(|(name, ok)| ProjectorTarget {
                name: name.clone(),
                healthy: *ok,
                position: position(*ok),
                error: None,
                rebuild: s.rebuild.get(name).cloned(),
            })
            .collect();
        ProjectorProjections { targets }
    }
}

/// A target that holds data and is caught up, or one that answers nothing.
fn position(ok: bool) -> TargetPosition {
    if ok {
        TargetPosition {
            generation: Some(1),
            lag_events: Some(0),
            lag_seconds: Some(0.0),
            ..TargetPosition::default()
        }
    } else {
        TargetPosition::default()
    }
}

async fn view(State(pod): State<FakePod>) -> Response {
    if pod.projector {
        axum::Json(pod.projector_view()).into_response()
    } else {
        axum::Json(pod.read_view()).into_response()
    }
}

async fn switch(State(pod): State<FakePod>, axum::Json(req): axum::Json<SwitchActive>) -> Response {
    {
        let mut s = pod.state.lock().unwrap();
        if s.refuse > 0 {
            s.refuse -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "refusing this switch").into_response();
        }
        s.active = req.target;
        s.switches += 1;
    }
    axum::Json(pod.read_view()).into_response()
}

/// Register pods behind a Service, as the EndpointSlice controller would (the slice carries the
/// Service's labels).
pub fn register(api: &FakeApi, ns: &str, cluster: &str, service: &str, pods: &[u16]) {
    let endpoints: Vec<serde_json::Value> =
        pods.iter().map(|_| json!({"addresses": ["127.0.0.1"], "conditions": {"ready": true}})).collect();
    for (i, port) in pods.iter().enumerate() {
        api.put(
            "apis/discovery.k8s.io/v1",
            ns,
            "endpointslices",
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": format!("{service}-{i}"), "labels": {
                    "kubernetes.io/service-name": service,
                    "app.kubernetes.io/instance": cluster,
                    "app.kubernetes.io/managed-by": "socialnet-operator",
                }},
                "endpoints": [endpoints[i].clone()],
                "ports": [{"name": "http", "port": port}]
            }),
        );
    }
}
