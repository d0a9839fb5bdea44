//! Reconcile, the pipeline: validate → build (pure) → apply (server-side apply, one field manager, owner
//! references) → observe → decide failover and rebuilds → status. It requeues every half second while it
//! watches projection health, so a failed primary is replaced within the policy's threshold and delay.

use crate::build::{self, COMPONENTS, Component, Desired};
use crate::conditions;
use crate::failover::{self, Decision};
use crate::health;
use crate::jobs;
use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use socialnet_crd::{FailoverRecord, RebuildStatus, SocialCluster, SocialClusterStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FIELD_MANAGER: &str = "socialnet-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

pub struct Ctx {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub http: health::Http,
    /// Per cluster: the spec generation last applied and when.
    applied: Mutex<HashMap<String, (i64, Instant)>>,
    /// Per cluster: the admin token for the read APIs and when it was signed (reused for a minute, so the
    /// half-second health loop does not read the Secret every time; a rotated secret is picked up within it).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// How often health is checked while a cluster has standbys.
    pub health_every: Duration,
}

impl Ctx {
    pub fn new(client: kube::Client, recorder: Recorder) -> Self {
        Self {
            client,
            recorder,
            http: health::http(),
            applied: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            health_every: Duration::from_millis(500),
        }
    }
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await?;
    Ok(())
}

async fn event(ctx: &Ctx, sc: &SocialCluster, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &sc.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish event");
    }
}

async fn apply_all(ctx: &Ctx, sc: &SocialCluster, ns: &str, desired: &Desired) -> Result<(), Error> {
    let c = &ctx.client;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let services: Api<Service> = Api::namespaced(c.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    for cm in desired.config_map.iter().chain(&desired.gateway_config) {
        apply(&cms, cm).await?;
    }
    for d in &desired.deployments {
        apply(&deployments, d).await?;
    }
    for s in &desired.services {
        apply(&services, s).await?;
    }
    for h in &desired.hpas {
        apply(&hpas, h).await?;
    }
    for p in &desired.pdbs {
        apply(&pdbs, p).await?;
    }
    // Remove HPAs and PDBs the spec no longer asks for.
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/managed-by=socialnet-operator",
        sc.name_any()
    );
    let lp = ListParams::default().labels(&selector);
    let want_hpa: Vec<String> = desired.hpas.iter().filter_map(|h| h.metadata.name.clone()).collect();
    for h in hpas.list(&lp).await? {
        if !want_hpa.contains(&h.name_any()) {
            hpas.delete(&h.name_any(), &DeleteParams::default()).await?;
        }
    }
    let want_pdb: Vec<String> = desired.pdbs.iter().filter_map(|p| p.metadata.name.clone()).collect();
    for p in pdbs.list(&lp).await? {
        if !want_pdb.contains(&p.name_any()) {
            pdbs.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

async fn admin_token(ctx: &Ctx, sc: &SocialCluster, ns: &str) -> Result<String, Error> {
    let key = format!("{ns}/{}", sc.name_any());
    let cached = ctx.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    if let Some((token, _)) = cached.filter(|(_, at)| at.elapsed() < Duration::from_secs(60)) {
        return Ok(token);
    }
    let token = sign_admin_token(ctx, sc, ns).await?;
    ctx.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (token.clone(), Instant::now()));
    Ok(token)
}

async fn sign_admin_token(ctx: &Ctx, sc: &SocialCluster, ns: &str) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let r = &sc.spec.auth.jwt_secret;
    let secret = secrets.get(&r.name).await?;
    let value = secret
        .data
        .and_then(|d| d.get(&r.key).cloned())
        .ok_or_else(|| Error::Other(format!("secret {} has no key {}", r.name, r.key)))?;
    let mut bytes = value.0;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    http_kit::mint_token(
        &bytes,
        "socialnet-operator",
        Duration::from_secs(300),
        &["admin".to_owned()],
        sc.spec.auth.issuer.as_deref(),
        sc.spec.auth.audience.as_deref(),
    )
    .map_err(|e| Error::Other(format!("signing the operator's token: {e}")))
}

async fn patch_status(
    ctx: &Ctx,
    sc: &SocialCluster,
    ns: &str,
    status: &SocialClusterStatus,
) -> Result<(), Error> {
    let api: Api<SocialCluster> = Api::namespaced(ctx.client.clone(), ns);
    // A merge patch only removes a field given as null: null every field the new status no longer has.
    let mut new = serde_json::to_value(status).unwrap_or_default();
    if let (Some(old), Some(map)) =
        (sc.status.as_ref().and_then(|o| serde_json::to_value(o).ok()), new.as_object_mut())
    {
        for key in old.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    for key in ["targetPrimary", "targetPrimaryTimestamp", "message"] {
        if let Some(map) = new.as_object_mut() {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = serde_json::json!({"status": new});
    api.patch_status(&sc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

pub async fn reconcile(sc: Arc<SocialCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&sc, &ctx).await;
    metrics::histogram!("socialnet_operator_reconcile_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("socialnet_operator_reconciles_total").increment(1);
    if result.is_err() {
        metrics::counter!("socialnet_operator_reconcile_errors_total").increment(1);
    }
    result
}

async fn reconcile_inner(sc: &SocialCluster, ctx: &Ctx) -> Result<Action, Error> {
    let ns = sc.namespace().unwrap_or_else(|| "default".into());
    let key = format!("{ns}/{}", sc.name_any());
    let generation = sc.metadata.generation;
    let now = Utc::now();
    let mut status = sc.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    // 1. Validate.
    if let Err(why) = crate::validate::validate(sc) {
        if status.message.as_deref() != Some(why.as_str()) {
            event(ctx, sc, true, "InvalidSpec", why.clone()).await;
        }
        conditions::set(&mut status, "Degraded", true, "InvalidSpec", &why, generation, now);
        conditions::set(
            &mut status,
            "Available",
            false,
            "InvalidSpec",
            "the spec cannot be applied",
            generation,
            now,
        );
        status.message = Some(why);
        status.phase = Some(conditions::phase(&status, false, true).into());
        patch_status(ctx, sc, &ns, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    status.message = None;
    let current = status
        .current_primary
        .clone()
        .or_else(|| sc.spec.initial_primary().map(str::to_owned))
        .unwrap_or_default();
    if status.current_primary.is_none() {
        status.current_primary = Some(current.clone());
        status.current_primary_timestamp = Some(now.to_rfc3339());
    }

    // 2. Build and 3. apply (unless paused): on a new generation, when an owned Deployment went missing,
    // and every 10 seconds in any case.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/managed-by=socialnet-operator",
        sc.name_any()
    );
    let observed = deployments.list(&ListParams::default().labels(&selector)).await?;
    if !sc.spec.paused {
        let desired = build::desired(sc, &current);
        let missing = desired
            .deployments
            .iter()
            .any(|d| !observed.items.iter().any(|o| o.metadata.name == d.metadata.name));
        let due = {
            let applied = ctx.applied.lock().unwrap_or_else(|p| p.into_inner());
            applied
                .get(&key)
                .is_none_or(|(g, at)| Some(*g) != generation || at.elapsed() > Duration::from_secs(10))
        };
        if missing || due {
            apply_all(ctx, sc, &ns, &desired).await?;
            ctx.applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), (generation.unwrap_or(0), Instant::now()));
        }
    }

    // 4. Observe the components.
    let observed = deployments.list(&ListParams::default().labels(&selector)).await?;
    let (mut ready_all, mut want_all) = (0, 0);
    for c in COMPONENTS {
        let name = build::object_name(sc, c);
        let d = observed.items.iter().find(|d| d.name_any() == name);
        // With an HPA the spec has no replicas: the Deployment's own count is what is wanted.
        let want =
            d.and_then(|d| d.spec.replicas.or(d.status.as_ref().and_then(|s| s.replicas))).unwrap_or(0);
        let ready = d.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0);
        ready_all += ready;
        want_all += want;
        status.components.insert(
            c.name().to_owned(),
            socialnet_crd::ComponentStatus { ready_replicas: ready, replicas: want },
        );
    }
    status.ready = Some(format!("{ready_all}/{want_all}"));
    let all_ready = status.components.values().all(|c| c.ready_replicas >= c.replicas) && want_all > 0;
    conditions::set(
        &mut status,
        "Available",
        all_ready,
        if all_ready { "AllReady" } else { "ComponentsNotReady" },
        &format!("{ready_all}/{want_all} pods ready"),
        generation,
        now,
    );
    conditions::set(
        &mut status,
        "Progressing",
        !all_ready,
        if all_ready { "Stable" } else { "RollingOut" },
        &format!("{ready_all}/{want_all} pods ready"),
        generation,
        now,
    );

    // 5. Projection health and failover.
    let targets: Vec<String> = sc.spec.projections.targets.iter().map(|t| t.name.clone()).collect();
    let read_service = build::object_name(sc, Component::ReadApi);
    let endpoints = health::endpoints(&ctx.client, &ns, &read_service).await.unwrap_or_default();
    let token = if endpoints.is_empty() { None } else { admin_token(ctx, sc, &ns).await.ok() };
    let mut degraded: Option<String> = None;
    if let Some(token) = &token {
        let views = health::views(&ctx.http, &endpoints, token).await;
        if !views.is_empty() {
            let mut samples = health::samples(&views, &targets);
            // The projector (the one writer) knows each target's lag exactly; the read APIs estimate it.
            let projector_service = build::object_name(sc, Component::Projector);
            let projector = health::endpoints(&ctx.client, &ns, &projector_service).await.unwrap_or_default();
            let lag = health::projector_lag(&ctx.http, &projector, token).await;
            for s in &mut samples {
                if let Some((Some(events), _)) = lag.get(&s.name) {
                    s.lag_events = Some(*events);
                }
            }
            status.projections = failover::observe(&status.projections, &samples, now);
            for h in &mut status.projections {
                h.lag_seconds = lag.get(&h.name).and_then(|l| l.1);
            }
            let switchover = sc
                .spec
                .switchover
                .as_ref()
                .map(|s| s.target.as_str())
                .filter(|t| status.handled_switchover.as_deref() != Some(*t));
            match failover::decide(
                &sc.spec.projections.failover,
                sc.spec.paused,
                &current,
                &status.projections,
                switchover,
                now,
            ) {
                Decision::Promote { to, reason } => {
                    promote(ctx, sc, &ns, &mut status, &endpoints, token, &current, &to, reason).await?;
                    if reason == "Switchover" {
                        status.handled_switchover = Some(to);
                    }
                }
                Decision::NoCandidate(why) => degraded = Some(why),
                Decision::Wait(why) => {
                    if status.projections.iter().any(|h| h.name == current && !h.healthy) {
                        degraded = Some(why);
                    }
                }
                Decision::Stay => {}
            }
            // A target that was failed over and came back without data gets rebuilt automatically.
            if let Some(last) = status.last_failover.clone() {
                let sample = samples.iter().find(|s| s.name == last.from);
                let busy =
                    status.rebuild.as_ref().is_some_and(|r| r.phase == "Running" || r.phase == "Pending");
                // Once per failover, even after another rebuild replaced this one in status.
                let done_for = last.rebuilt
                    || status
                        .rebuild
                        .as_ref()
                        .is_some_and(|r| r.automatic && r.target == last.from && r.token == last.at);
                if let Some(sample) = sample
                    && !busy
                    && !done_for
                    && failover::needs_rebuild(sample, true)
                {
                    start_rebuild(ctx, sc, &ns, &mut status, &last.from, &last.at, true).await?;
                    if let Some(l) = status.last_failover.as_mut() {
                        l.rebuilt = true;
                    }
                }
            }
        }
    }
    conditions::set(
        &mut status,
        "Degraded",
        degraded.is_some(),
        if degraded.is_some() { "PrimaryProjectionFailing" } else { "Healthy" },
        degraded.as_deref().unwrap_or("projection targets healthy"),
        generation,
        now,
    );
    if degraded.is_none() && status.target_primary.is_none() {
        conditions::set(
            &mut status,
            "FailingOver",
            false,
            "NoFailover",
            "the primary projection target is in use",
            generation,
            now,
        );
    }

    // 6. Rebuild requests.
    if !sc.spec.paused {
        follow_rebuild(ctx, sc, &ns, &mut status).await?;
    }
    let rebuilding = status.rebuild.as_ref().is_some_and(|r| r.phase == "Running" || r.phase == "Pending");
    let rb_msg = status
        .rebuild
        .as_ref()
        .map(|r| format!("{} of {}: {}", r.phase, r.target, r.progress.clone().unwrap_or_default()))
        .unwrap_or_default();
    conditions::set(
        &mut status,
        "Rebuilding",
        rebuilding,
        if rebuilding { "JobRunning" } else { "Idle" },
        &rb_msg,
        generation,
        now,
    );

    status.phase = Some(conditions::phase(&status, sc.spec.paused, false).into());
    patch_status(ctx, sc, &ns, &status).await?;
    let every = if targets.len() > 1 && !sc.spec.paused { ctx.health_every } else { Duration::from_secs(10) };
    Ok(Action::requeue(every))
}

#[allow(clippy::too_many_arguments)]
async fn promote(
    ctx: &Ctx,
    sc: &SocialCluster,
    ns: &str,
    status: &mut SocialClusterStatus,
    endpoints: &[String],
    token: &str,
    from: &str,
    to: &str,
    reason: &str,
) -> Result<(), Error> {
    let gen_ = sc.metadata.generation;
    let started = Instant::now();
    let now = Utc::now();
    // Phase one: pending (no primary is being promoted yet), recorded before anything changes.
    status.target_primary = Some("pending".into());
    status.target_primary_timestamp = Some(now.to_rfc3339());
    conditions::set(status, "FailingOver", true, reason, &format!("leaving {from}"), gen_, now);
    patch_status(ctx, sc, ns, status).await?;
    event(
        ctx,
        sc,
        reason != "Switchover",
        "FailoverStarted",
        format!("{reason}: moving reads from {from} to {to}"),
    )
    .await;
    // Phase two: the chosen standby.
    status.target_primary = Some(to.to_owned());
    patch_status(ctx, sc, ns, status).await?;
    match health::switch_all(&ctx.http, endpoints, token, to).await {
        Ok(pods) => {
            let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
            apply(&cms, &build::config_map(sc, to)).await?;
            let done = Utc::now();
            let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            status.current_primary = Some(to.to_owned());
            status.current_primary_timestamp = Some(done.to_rfc3339());
            status.target_primary = None;
            status.target_primary_timestamp = None;
            status.last_failover = Some(FailoverRecord {
                from: from.to_owned(),
                to: to.to_owned(),
                reason: reason.to_owned(),
                at: done.to_rfc3339(),
                duration_ms: Some(ms),
                rebuilt: false,
            });
            conditions::set(
                status,
                "FailingOver",
                false,
                "Completed",
                &format!("{to} is the primary"),
                gen_,
                done,
            );
            metrics::counter!("socialnet_operator_failovers_total", "reason" => reason.to_owned())
                .increment(1);
            event(
                ctx,
                sc,
                false,
                "FailoverCompleted",
                format!("{pods} read API pods now read {to} (was {from}), {ms} ms"),
            )
            .await;
            Ok(())
        }
        Err(why) => {
            event(ctx, sc, true, "FailoverIncomplete", format!("switching the read APIs to {to}: {why}"))
                .await;
            Err(Error::Other(why))
        }
    }
}

async fn start_rebuild(
    ctx: &Ctx,
    sc: &SocialCluster,
    ns: &str,
    status: &mut SocialClusterStatus,
    target: &str,
    token: &str,
    automatic: bool,
) -> Result<(), Error> {
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let job = jobs::rebuild_job(sc, target, token);
    apply(&jobs_api, &job).await?;
    status.rebuild = Some(RebuildStatus {
        target: target.to_owned(),
        token: token.to_owned(),
        phase: "Running".into(),
        job: job.metadata.name.clone(),
        progress: None,
        started_at: Some(Utc::now().to_rfc3339()),
        finished_at: None,
        error: None,
        automatic,
    });
    metrics::counter!("socialnet_operator_rebuilds_total").increment(1);
    event(
        ctx,
        sc,
        false,
        "RebuildStarted",
        format!("rebuilding projection target {target} (job {})", job.metadata.name.unwrap_or_default()),
    )
    .await;
    Ok(())
}

async fn follow_rebuild(
    ctx: &Ctx,
    sc: &SocialCluster,
    ns: &str,
    status: &mut SocialClusterStatus,
) -> Result<(), Error> {
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    // Follow the current one.
    if let Some(r) = status.rebuild.clone().filter(|r| r.phase == "Running" || r.phase == "Pending")
        && let Some(job_name) = &r.job
    {
        match jobs_api.get_opt(job_name).await? {
            Some(job) => {
                let phase = jobs::job_phase(&job);
                if phase != "Running" {
                    let mut done = r.clone();
                    done.phase = phase.to_owned();
                    done.finished_at = Some(Utc::now().to_rfc3339());
                    done.progress = Some(if phase == "Succeeded" { "100%".into() } else { "stopped".into() });
                    if phase == "Failed" {
                        done.error = Some(format!("job {job_name} failed"));
                    }
                    event(
                        ctx,
                        sc,
                        phase == "Failed",
                        &format!("Rebuild{phase}"),
                        format!("rebuild of {}: {phase}", r.target),
                    )
                    .await;
                    status.rebuild = Some(done);
                } else if let Some(active) = job.status.as_ref().and_then(|s| s.active) {
                    let mut running = r.clone();
                    running.progress = Some(format!("{active} pod(s) running"));
                    status.rebuild = Some(running);
                }
            }
            None => {
                let mut gone = r.clone();
                gone.phase = "Failed".into();
                gone.error = Some(format!("job {job_name} disappeared"));
                gone.finished_at = Some(Utc::now().to_rfc3339());
                status.rebuild = Some(gone);
            }
        }
        return Ok(());
    }
    // Start a requested one whose token is new. One at a time per cluster, so never two for one target.
    if let Some(req) = &sc.spec.rebuild {
        let already = status
            .rebuild
            .as_ref()
            .is_some_and(|r| r.token == req.token && r.target == req.target && !r.automatic);
        if !already {
            start_rebuild(ctx, sc, ns, status, &req.target, &req.token, false).await?;
        }
    }
    Ok(())
}

pub fn error_policy(_sc: Arc<SocialCluster>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}
