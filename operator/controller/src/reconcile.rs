//! The controller: one watch cache (reflector) per kind the operator reads, the health monitors, and
//! reconcile = observe → plan → act. The `SocialCluster` watch wakes reconcile only when a spec changes
//! (generation), not on the operator's own status writes; a child's change wakes its owner; a monitor
//! wakes its cluster when health changes in a way that matters; and each cluster is looked at again
//! after a slow resync.

use crate::children::{Child, ChildKind};
use crate::error::Error;
use crate::events::EventSink;
use crate::monitor::Monitors;
use crate::plan::{CACHE_GRACE, RESYNC};
use crate::pods::Http;
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use socialnet_crd::SocialCluster;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The watch caches reconcile and the monitors read.
#[derive(Clone)]
pub struct Stores {
    pub clusters: Store<SocialCluster>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub config_maps: Store<ConfigMap>,
    pub jobs: Store<Job>,
    pub slices: Store<EndpointSlice>,
}

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only this namespace (default: all).
    pub namespace: Option<String>,
    /// How often the monitors poll the pods.
    pub health_interval: Duration,
    /// Who this replica is (in Events).
    pub identity: String,
}

/// A child of a cluster.
type ChildKey = (ObjectRef<SocialCluster>, ChildKind, String);

/// What was applied to a child, and when.
struct Applied {
    hash: String,
    at: Instant,
}

pub struct Ctx {
    pub client: kube::Client,
    pub stores: Stores,
    pub monitors: Arc<Monitors>,
    pub events: EventSink,
    pub http: Http,
    /// Per cluster: children applied moments ago, with the hash applied and when.
    applied: Mutex<HashMap<ChildKey, Applied>>,
}

impl Ctx {
    /// Remember that a child was just applied (the watch cache may lag behind).
    pub fn remember(&self, cluster: &SocialCluster, child: &Child) {
        let key = (ObjectRef::from_obj(cluster), child.kind(), child.name());
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.retain(|_, a| a.at.elapsed() < CACHE_GRACE);
        applied.insert(key, Applied { hash: child.hash().unwrap_or_default(), at: Instant::now() });
    }

    /// Remember that a child was just deleted (the watch cache may still show it).
    pub fn remember_deleted(&self, cluster: &SocialCluster, kind: ChildKind, name: &str) {
        let key = (ObjectRef::from_obj(cluster), kind, name.to_owned());
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.retain(|_, a| a.at.elapsed() < CACHE_GRACE);
        applied.insert(key, Applied { hash: crate::plan::DELETED.to_owned(), at: Instant::now() });
    }

    /// Forget the children of `cluster` the cache now shows as applied (or, deleted ones, as gone).
    pub fn caught_up(
        &self,
        cluster: &ObjectRef<SocialCluster>,
        shown: impl Fn(ChildKind, &str, &str) -> bool,
    ) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.retain(|(c, kind, name), a| c != cluster || !shown(*kind, name, &a.hash));
    }

    /// The children of `cluster` applied within the cache grace period.
    pub fn recently_applied(
        &self,
        cluster: &ObjectRef<SocialCluster>,
    ) -> HashMap<(ChildKind, String), String> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied
            .iter()
            .filter(|((c, ..), a)| c == cluster && a.at.elapsed() < CACHE_GRACE)
            .map(|((_, kind, name), a)| ((*kind, name.clone()), a.hash.clone()))
            .collect()
    }
}

/// The operator's moving parts, started: caches filling, monitors ready to start. `controller` runs the
/// reconcile loop; tests may call [`reconcile`] with `ctx` directly instead.
pub struct Operator {
    pub ctx: Arc<Ctx>,
    triggers: mpsc::UnboundedReceiver<ObjectRef<SocialCluster>>,
}

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The cluster that controls an object, from its owner references.
fn owner(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectRef<SocialCluster>> {
    let o = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "SocialCluster")?;
    Some(ObjectRef::new(&o.name).within(meta.namespace.as_deref().unwrap_or_default()))
}

/// A watch cache of `K` (with `labels`), kept filled by a task that also sends each changed object's
/// owning cluster to `wake` (when given).
fn cache<K>(
    api: Api<K>,
    labels: Option<&str>,
    wake: Option<mpsc::UnboundedSender<ObjectRef<SocialCluster>>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let config = labels.map_or_else(watcher::Config::default, |l| watcher::Config::default().labels(l));
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff().touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(obj) => {
                    if let (Some(wake), Some(owner)) = (&wake, owner(obj.meta())) {
                        let _ = wake.send(owner);
                    }
                }
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch"),
            }
        }
    });
    reader
}

/// The SocialCluster cache; spec changes (a new generation) wake reconcile, status writes do not.
fn clusters(
    api: Api<SocialCluster>,
    wake: mpsc::UnboundedSender<ObjectRef<SocialCluster>>,
) -> Store<SocialCluster> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(sc) => {
                    let _ = wake.send(ObjectRef::from_obj(&sc));
                }
                Err(e) => tracing::warn!(error = %e, "watch socialclusters"),
            }
        }
    });
    reader
}

impl Operator {
    /// Start the caches (and nothing that writes).
    pub fn start(client: kube::Client, settings: &Settings) -> Self {
        let (tx, triggers) = mpsc::unbounded_channel();
        let ns = settings.namespace.as_deref();
        let owned = Some("app.kubernetes.io/managed-by=socialnet-operator");
        let stores = Stores {
            clusters: clusters(api(&client, ns), tx.clone()),
            deployments: cache(api(&client, ns), owned, Some(tx.clone())),
            services: cache(api(&client, ns), owned, Some(tx.clone())),
            hpas: cache(api(&client, ns), owned, Some(tx.clone())),
            pdbs: cache(api(&client, ns), owned, Some(tx.clone())),
            config_maps: cache(api(&client, ns), owned, Some(tx.clone())),
            jobs: cache(api(&client, ns), owned, Some(tx.clone())),
            // EndpointSlices carry their Service's labels: only the operator's own Services' slices.
            slices: cache(api(&client, ns), owned, None),
        };
        let monitors = Monitors::new(
            client.clone(),
            stores.slices.clone(),
            stores.clusters.clone(),
            tx,
            settings.health_interval,
        );
        let ctx = Ctx {
            events: EventSink::new(client.clone(), &settings.identity),
            http: crate::pods::http(),
            client,
            stores,
            monitors,
            applied: Mutex::default(),
        };
        Self { ctx: Arc::new(ctx), triggers }
    }

    /// Reconcile until a shutdown signal.
    pub async fn run(self) {
        use kube::runtime::Controller;
        let triggers = tokio_stream_of(self.triggers);
        let reader = self.ctx.stores.clusters.clone();
        Controller::for_stream(futures::stream::pending::<Result<SocialCluster, watcher::Error>>(), reader)
            .reconcile_on(triggers)
            .shutdown_on_signal()
            .run(reconcile, error_policy, self.ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "reconcile");
                }
            })
            .await;
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub async fn reconcile(sc: Arc<SocialCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_once(&ctx, &ObjectRef::from_obj(sc.as_ref())).await;
    metrics::histogram!("socialnet_operator_reconcile_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("socialnet_operator_reconciles_total").increment(1);
    if result.as_ref().is_err_and(|e| !e.is_conflict()) {
        metrics::counter!("socialnet_operator_reconcile_errors_total").increment(1);
    }
    result
}

/// Observe, plan, act. When pods were switched, plan once more with their answers: a switch that every
/// pod confirmed completes in the same reconcile.
pub async fn reconcile_once(ctx: &Ctx, key: &ObjectRef<SocialCluster>) -> Result<Action, Error> {
    let Some(mut observed) = crate::observe::observe(ctx, key).await? else {
        return Ok(Action::await_change());
    };
    let plan = crate::plan::plan(&observed, Utc::now());
    let outcome = crate::act::act(ctx, &observed.cluster, &plan).await?;
    if !outcome.switched.iter().any(|(_, r)| r.is_ok()) {
        return Ok(Action::requeue(plan.requeue.unwrap_or(RESYNC)));
    }
    observed.cluster = outcome.cluster;
    observed.recently_applied = ctx.recently_applied(key);
    if let Some(view) = observed.health.as_mut() {
        for (endpoint, r) in &outcome.switched {
            if let (Ok(active), Some(pod)) = (r, view.read_pods.iter_mut().find(|p| &p.endpoint == endpoint))
            {
                pod.active = Some(active.clone());
            }
        }
    }
    let again = crate::plan::plan(&observed, Utc::now());
    crate::act::act(ctx, &observed.cluster, &again).await?;
    Ok(Action::requeue(again.requeue.unwrap_or(RESYNC)))
}

pub fn error_policy(sc: Arc<SocialCluster>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    if err.is_conflict() {
        tracing::debug!(cluster = %sc.name_any(), error = %err, "conflict; reconciling again");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(cluster = %sc.name_any(), error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}
