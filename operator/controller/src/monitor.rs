//! The health monitor: one task per cluster, beside the controller. Every interval it asks every read
//! API pod and the projector (found through their Services' EndpointSlices, from a watch cache) for
//! their view of the projection targets, all at once; it keeps the latest view in memory, exports lag
//! as metrics, and wakes the controller for that cluster only when something that matters changed
//! (`health::digest`). The failover decision stays in `plan`.

use crate::health::{self, HealthView, Poll};
use crate::pods::{self, Http};
use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use socialnet_crd::{SecretKeyRef, SocialCluster};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What a cluster's monitor polls and how it judges.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    pub namespace: String,
    pub cluster: String,
    pub read_service: String,
    pub projector_service: String,
    pub targets: Vec<String>,
    pub threshold: u32,
    pub max_lag: i64,
    pub secret: SecretKeyRef,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl MonitorSettings {
    pub fn of(sc: &SocialCluster) -> Self {
        use crate::build::{Component, object_name};
        let p = &sc.spec.projections;
        Self {
            namespace: sc.namespace().unwrap_or_default(),
            cluster: sc.name_any(),
            read_service: object_name(sc, Component::ReadApi),
            projector_service: object_name(sc, Component::Projector),
            targets: p.targets.iter().map(|t| t.name.clone()).collect(),
            threshold: u32::try_from(p.failover.failure_threshold).unwrap_or(1),
            max_lag: p.failover.max_lag_events,
            secret: sc.spec.auth.jwt_secret.clone(),
            issuer: sc.spec.auth.issuer.clone(),
            audience: sc.spec.auth.audience.clone(),
        }
    }
}

/// Why no admin token could be made for a cluster's pods.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("reading secret {name}: {reason}")]
    Secret { name: String, reason: String },
    #[error("secret {name} has no key {key}")]
    MissingKey { name: String, key: String },
    #[error("signing the operator's admin token: {0}")]
    Sign(String),
}

/// Admin tokens for the cluster's pods, signed with its secret: the Secret is read every few minutes,
/// not at every poll.
#[derive(Default)]
struct TokenCache {
    secret: Option<(Vec<u8>, Instant)>,
    token: Option<(String, Instant)>,
}

const SECRET_TTL: Duration = Duration::from_secs(300);
const TOKEN_REUSE: Duration = Duration::from_secs(240);
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// One running monitor's shared state.
#[derive(Default)]
struct Shared {
    view: RwLock<Option<HealthView>>,
    tokens: tokio::sync::Mutex<TokenCache>,
}

struct Running {
    settings: watch::Sender<MonitorSettings>,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

/// Every cluster's monitor.
pub struct Monitors {
    client: kube::Client,
    http: Http,
    slices: Store<EndpointSlice>,
    clusters: Store<SocialCluster>,
    wake: mpsc::UnboundedSender<ObjectRef<SocialCluster>>,
    interval: Duration,
    running: Mutex<HashMap<ObjectRef<SocialCluster>, Running>>,
}

impl Monitors {
    pub fn new(
        client: kube::Client,
        slices: Store<EndpointSlice>,
        clusters: Store<SocialCluster>,
        wake: mpsc::UnboundedSender<ObjectRef<SocialCluster>>,
        interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            http: pods::http(),
            slices,
            clusters,
            wake,
            interval,
            running: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SocialCluster>, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start (or retarget) the monitor of a cluster; its latest view, if it has polled yet.
    pub fn view(self: &Arc<Self>, sc: &SocialCluster) -> Option<HealthView> {
        let key = ObjectRef::from_obj(sc);
        let settings = MonitorSettings::of(sc);
        let mut running = self.lock();
        if let Some(r) = running.get(&key).filter(|r| !r.task.is_finished()) {
            r.settings.send_if_modified(|s| std::mem::replace(s, settings.clone()) != settings);
            return r.shared.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        }
        let (tx, rx) = watch::channel(settings);
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(self.clone().run(key.clone(), shared.clone(), rx)).abort_handle();
        running.insert(key, Running { settings: tx, shared, task });
        None
    }

    /// Stop a cluster's monitor (the cluster is gone).
    pub fn stop(&self, key: &ObjectRef<SocialCluster>) {
        if let Some(r) = self.lock().remove(key) {
            r.task.abort();
        }
    }

    /// An admin token for a cluster's pods.
    pub async fn token(&self, sc: &SocialCluster) -> Result<String, TokenError> {
        let shared = self.lock().get(&ObjectRef::from_obj(sc)).map(|r| r.shared.clone()).unwrap_or_default();
        token(&self.client, &shared, &MonitorSettings::of(sc)).await
    }

    /// A pod was switched: record the target it now serves, so the next plan does not switch it again.
    pub fn note_active(&self, sc: &SocialCluster, endpoint: &str, target: &str) {
        if let Some(r) = self.lock().get(&ObjectRef::from_obj(sc)) {
            let mut view = r.shared.view.write().unwrap_or_else(|p| p.into_inner());
            for p in view.iter_mut().flat_map(|v| v.read_pods.iter_mut()).filter(|p| p.endpoint == endpoint) {
                p.active = Some(target.to_owned());
            }
        }
    }

    async fn run(
        self: Arc<Self>,
        key: ObjectRef<SocialCluster>,
        shared: Arc<Shared>,
        settings: watch::Receiver<MonitorSettings>,
    ) {
        let mut last = None;
        loop {
            if self.clusters.get(&key).is_none() {
                self.lock().remove(&key);
                return;
            }
            let s = settings.borrow().clone();
            let poll = self.poll(&s, &shared).await;
            let view = {
                let previous = shared.view.read().unwrap_or_else(|p| p.into_inner()).clone();
                health::fold(previous.as_ref(), &poll, &s.targets, Utc::now())
            };
            export(&s, &view);
            let digest = health::digest(&view, s.threshold, s.max_lag);
            *shared.view.write().unwrap_or_else(|p| p.into_inner()) = Some(view);
            if last.as_ref() != Some(&digest) {
                last = Some(digest);
                let _ = self.wake.send(key.clone());
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    async fn poll(&self, s: &MonitorSettings, shared: &Shared) -> Poll {
        let token = match token(&self.client, shared, s).await {
            Ok(t) => t,
            Err(why) => return Poll { problem: Some(why.to_string()), ..Poll::default() },
        };
        let reads = endpoints(&self.slices, &s.namespace, &s.read_service);
        let projectors = endpoints(&self.slices, &s.namespace, &s.projector_service);
        let read_calls =
            reads.iter().map(|e| async { (e.clone(), pods::read_view(&self.http, e, &token).await) });
        let projector = async {
            for e in &projectors {
                if let Ok(v) = pods::projector_view(&self.http, e, &token).await {
                    return Some(v);
                }
            }
            None
        };
        let (answers, projector) = tokio::join!(futures::future::join_all(read_calls), projector);
        if answers.iter().any(|(_, a)| a.as_ref().is_err_and(|e| e.contains("401"))) {
            // The secret may have been rotated: read it again next time.
            *shared.tokens.lock().await = TokenCache::default();
        }
        Poll { read: answers.into_iter().map(|(e, a)| (e, a.ok())).collect(), projector, problem: None }
    }
}

async fn token(client: &kube::Client, shared: &Shared, s: &MonitorSettings) -> Result<String, TokenError> {
    let mut cache = shared.tokens.lock().await;
    if let Some((t, _)) = cache.token.as_ref().filter(|(_, at)| at.elapsed() < TOKEN_REUSE) {
        return Ok(t.clone());
    }
    if cache.secret.as_ref().is_none_or(|(_, at)| at.elapsed() > SECRET_TTL) {
        let api: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
        let name = s.secret.name.clone();
        let secret = api.get(&name).await.map_err(|e| TokenError::Secret { name, reason: e.to_string() })?;
        let value = secret.data.and_then(|d| d.get(&s.secret.key).cloned());
        let missing = || TokenError::MissingKey { name: s.secret.name.clone(), key: s.secret.key.clone() };
        let mut bytes = value.ok_or_else(missing)?.0;
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        cache.secret = Some((bytes, Instant::now()));
    }
    let secret = cache.secret.as_ref().map(|(b, _)| b.as_slice()).unwrap_or_default();
    let roles = ["admin".to_owned()];
    let token = http_kit::mint_token(
        secret,
        "socialnet-operator",
        TOKEN_LIFETIME,
        &roles,
        s.issuer.as_deref(),
        s.audience.as_deref(),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))?;
    cache.token = Some((token.clone(), Instant::now()));
    Ok(token)
}

/// `ip:port` of every ready endpoint of a Service, from the EndpointSlice cache.
pub fn endpoints(slices: &Store<EndpointSlice>, namespace: &str, service: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in slices.state() {
        if s.namespace().as_deref() != Some(namespace)
            || s.labels().get("kubernetes.io/service-name").map(String::as_str) != Some(service)
        {
            continue;
        }
        let port =
            s.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port).unwrap_or(crate::build::PORT);
        for e in s
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        {
            for a in &e.addresses {
                let host = if a.contains(':') { format!("[{a}]") } else { a.clone() };
                out.push(format!("{host}:{port}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn export(s: &MonitorSettings, view: &HealthView) {
    for t in &view.targets {
        let labels =
            [("namespace", s.namespace.clone()), ("cluster", s.cluster.clone()), ("target", t.name.clone())];
        if let Some(l) = t.lag_events {
            metrics::gauge!("socialnet_operator_projection_lag_events", &labels).set(l as f64);
        }
        if let Some(l) = t.lag_seconds {
            metrics::gauge!("socialnet_operator_projection_lag_seconds", &labels).set(l);
        }
        let healthy = match t.healthy {
            Some(true) => 1.0,
            Some(false) => 0.0,
            None => -1.0,
        };
        metrics::gauge!("socialnet_operator_projection_healthy", &labels).set(healthy);
    }
}
