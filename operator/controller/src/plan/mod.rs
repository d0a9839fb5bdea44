//! Plan: the pure heart of reconcile. From what exists (`Observed`: the cluster as the API server has it
//! now, its children from the watch caches, the health monitor's latest view) and the clock, decide
//! everything: the new status, the children to apply and delete, the read API pods to switch, the
//! rebuild to start, the Events to record, and when to look again. No I/O, so every decision is
//! table-tested; an unchanged world plans no writes.

mod owned;
mod rebuilds;
mod switching;

use crate::build::{self, COMPONENTS, Component};
use crate::children::{Child, ChildKind};
use crate::conditions::{self, of, rfc3339};
use crate::health::HealthView;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use socialnet_crd::{
    ComponentStatus, ComponentsStatus, ConditionStatus, ConditionType, ProjectionHealth, Reason,
    SocialCluster, SocialClusterStatus,
};
use std::collections::HashMap;
use std::time::Duration;

/// How long a child just applied may be missing from (or stale in) the watch cache before it is
/// applied again.
pub const CACHE_GRACE: Duration = Duration::from_secs(10);
/// How often an idle cluster is looked at anyway (children checked for drift; nothing written if none).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a switch that some pod refused is tried again.
pub const SWITCH_RETRY: Duration = Duration::from_secs(1);

/// Everything plan reads.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The cluster as the API server has it now (not the watch cache).
    pub cluster: SocialCluster,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub config_maps: Vec<ConfigMap>,
    pub jobs: Vec<Job>,
    pub health: Option<HealthView>,
    /// Children applied within [`CACHE_GRACE`], with the hash applied, or [`DELETED`] for children deleted
    /// then: the caches may not show either yet.
    pub recently_applied: HashMap<(ChildKind, String), String>,
}

/// What [`Observed::recently_applied`] holds for a child the operator deleted (no applied hash is empty).
pub const DELETED: &str = "";

impl Observed {
    /// The applied-hash annotation of an existing child, as the cache shows it.
    pub fn hash_of(&self, kind: ChildKind, name: &str) -> Option<String> {
        fn find<K: kube::Resource>(objects: &[K], name: &str) -> Option<String> {
            let o = objects.iter().find(|o| o.meta().name.as_deref() == Some(name))?;
            o.meta().annotations.as_ref()?.get(crate::children::HASH_ANNOTATION).cloned()
        }
        match kind {
            ChildKind::ConfigMap => find(&self.config_maps, name),
            ChildKind::Deployment => find(&self.deployments, name),
            ChildKind::Service => find(&self.services, name),
            ChildKind::HorizontalPodAutoscaler => find(&self.hpas, name),
            ChildKind::PodDisruptionBudget => find(&self.pdbs, name),
            ChildKind::Job => find(&self.jobs, name),
        }
    }
}

/// Why the operator records an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    InvalidSpec,
    FailoverStarted,
    FailoverCompleted,
    FailoverAborted,
    FailoverIncomplete,
    NoHealthyStandby,
    RebuildStarted,
    RebuildSucceeded,
    RebuildFailed,
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
}

/// Read API pods to point at a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub target: String,
    pub endpoints: Vec<String>,
}

/// Everything act does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The new status, when it differs from the current one.
    pub status: Option<SocialClusterStatus>,
    pub apply: Vec<Child>,
    pub delete: Vec<(ChildKind, String)>,
    pub switch: Option<Switch>,
    pub events: Vec<Note>,
    pub requeue: Option<Duration>,
}

impl Plan {
    /// Whether this plan writes anything to the API server.
    pub fn writes(&self) -> bool {
        self.status.is_some() || !self.apply.is_empty() || !self.delete.is_empty() || !self.events.is_empty()
    }

    pub(crate) fn requeue_within(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    pub(crate) fn note(&mut self, warning: bool, reason: EventReason, message: String) {
        self.events.push(Note { warning, reason, message });
    }
}

/// Decide everything for one cluster.
pub fn plan(o: &Observed, now: DateTime<Utc>) -> Plan {
    let sc = &o.cluster;
    let old = sc.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let mut plan = Plan::default();
    st.observed_generation = sc.metadata.generation;
    if let Err(why) = crate::validate::validate(sc) {
        invalid(&mut st, &mut plan, sc, &old, &why, now);
        return finish(plan, &old, st);
    }
    st.message = None;
    first_sight(&mut st, sc, now);
    components(&mut st, o, now);
    let mut degraded = projections(&mut st, o);
    if !sc.spec.paused {
        if let Some(d) = switching::step(&mut st, &mut plan, o, now) {
            degraded = Some(d);
        }
        rebuilds::step(&mut st, &mut plan, o, now);
        owned::step(&mut plan, o, &st);
    }
    if !st.conditions.iter().any(|c| c.type_ == ConditionType::FailingOver) {
        let msg = "the primary projection target is in use";
        conditions::set(
            &mut st,
            ConditionType::FailingOver,
            ConditionStatus::False,
            Reason::NoFailover,
            msg,
            sc.metadata.generation,
            now,
        );
    }
    degraded_condition(&mut st, sc, degraded, now);
    rebuilds::condition(&mut st, sc, now);
    st.phase = Some(conditions::phase(&st, sc.spec.paused, false));
    finish(plan, &old, st)
}

fn finish(mut plan: Plan, old: &SocialClusterStatus, st: SocialClusterStatus) -> Plan {
    plan.status = (st != *old).then_some(st);
    plan.requeue_within(RESYNC);
    plan
}

fn invalid(
    st: &mut SocialClusterStatus,
    plan: &mut Plan,
    sc: &SocialCluster,
    old: &SocialClusterStatus,
    why: &str,
    now: DateTime<Utc>,
) {
    let why = conditions::truncate(why, 4096);
    if old.message.as_deref() != Some(why.as_str()) {
        plan.note(true, EventReason::InvalidSpec, why.clone());
    }
    let generation = sc.metadata.generation;
    conditions::set(
        st,
        ConditionType::Degraded,
        ConditionStatus::True,
        Reason::InvalidSpec,
        &why,
        generation,
        now,
    );
    let stalled = "the spec cannot be applied";
    conditions::set(
        st,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::InvalidSpec,
        stalled,
        generation,
        now,
    );
    st.message = Some(why);
    st.phase = Some(conditions::phase(st, false, true));
}

/// The first time the operator sees a cluster: its primary, and a rebuild token already in the spec
/// recorded as handled (only a change asks for a rebuild).
fn first_sight(st: &mut SocialClusterStatus, sc: &SocialCluster, now: DateTime<Utc>) {
    if st.current_primary.is_none() {
        st.current_primary = sc.spec.initial_primary().map(str::to_owned);
        st.current_primary_timestamp = Some(rfc3339(now));
        if st.handled_rebuild_token.is_none() {
            st.handled_rebuild_token = sc.spec.rebuild.as_ref().map(|r| r.token.clone());
        }
    }
}

fn components(st: &mut SocialClusterStatus, o: &Observed, now: DateTime<Utc>) {
    let sc = &o.cluster;
    let mut all = ComponentsStatus::default();
    let (mut ready_all, mut want_all) = (0, 0);
    for c in COMPONENTS {
        let mut seen = std::collections::HashSet::new();
        // One per name: the observed list may hold a Deployment twice (watch cache and just applied).
        let mine =
            o.deployments.iter().filter(|d| build::runs(sc, c, &d.name_any()) && seen.insert(d.name_any()));
        let (mut want, mut ready) = (0, 0);
        // A Deployment counts once its controller has given it a status. With an HPA the spec has no
        // replicas: the Deployment's own count is what is wanted.
        for (d, status) in mine.filter_map(|d| Some((d, d.status.as_ref()?))) {
            want += d.spec.replicas.or(status.replicas).unwrap_or(0);
            ready += status.ready_replicas.unwrap_or(0);
        }
        (ready_all, want_all) = (ready_all + ready, want_all + want);
        let s = Some(ComponentStatus { ready_replicas: ready, replicas: want });
        match c {
            Component::Gateway => all.gateway = s,
            Component::WriteApi => all.write_api = s,
            Component::Ingester => all.ingester = s,
            Component::Projector => all.projector = s,
            Component::ReadApi => all.read_api = s,
        }
    }
    st.components = Some(all);
    st.ready = Some(format!("{ready_all}/{want_all}"));
    let all_ready = ready_all >= want_all && want_all > 0;
    let msg = format!("{ready_all}/{want_all} pods ready");
    let generation = sc.metadata.generation;
    let (reason, progressing) = if all_ready { (Reason::Stable, false) } else { (Reason::RollingOut, true) };
    let available = if all_ready { Reason::AllReady } else { Reason::ComponentsNotReady };
    conditions::set(st, ConditionType::Available, of(all_ready), available, &msg, generation, now);
    conditions::set(st, ConditionType::Progressing, of(progressing), reason, &msg, generation, now);
}

/// Per-target health in status, and whether that makes the cluster degraded (`None`: healthy; status
/// `Unknown` when health could not be checked).
fn projections(st: &mut SocialClusterStatus, o: &Observed) -> Option<(ConditionStatus, Reason, String)> {
    let policy = &o.cluster.spec.projections.failover;
    let view = match o.health.as_ref() {
        None => return unknown(st, "projection health not checked yet".into()),
        Some(v) => match &v.problem {
            Some(p) => return unknown(st, p.clone()),
            None => v,
        },
    };
    let threshold = u32::try_from(policy.failure_threshold).unwrap_or(1);
    st.projections = view
        .targets
        .iter()
        .map(|t| ProjectionHealth {
            name: t.name.clone(),
            healthy: t.healthy == Some(true),
            reachable: t.reachable == Some(true),
            consecutive_failures: i32::try_from(t.consecutive_failures.min(threshold)).unwrap_or(0),
            caught_up: t.lag_events.map(|l| l <= policy.max_lag_events),
            generation: t.generation.and_then(|g| i64::try_from(g).ok()),
            failing_since: t.failing_since.map(rfc3339),
        })
        .collect();
    let primary = st.current_primary.clone().unwrap_or_default();
    let failing: Vec<&str> =
        view.targets.iter().filter(|t| t.failing() == Some(true)).map(|t| t.name.as_str()).collect();
    let behind: Vec<&str> =
        st.projections.iter().filter(|p| p.caught_up == Some(false)).map(|p| p.name.as_str()).collect();
    if failing.contains(&primary.as_str()) {
        Some((
            ConditionStatus::True,
            Reason::PrimaryFailing,
            format!("primary projection target {primary} failing"),
        ))
    } else if !failing.is_empty() {
        Some((
            ConditionStatus::True,
            Reason::StandbyFailing,
            format!("projection target(s) {} failing", failing.join(", ")),
        ))
    } else if !behind.is_empty() {
        let max = policy.max_lag_events;
        Some((
            ConditionStatus::True,
            Reason::Lagging,
            format!("projection target(s) {} more than {max} events behind", behind.join(", ")),
        ))
    } else {
        None
    }
}

fn unknown(st: &mut SocialClusterStatus, why: String) -> Option<(ConditionStatus, Reason, String)> {
    st.projections.clear();
    Some((ConditionStatus::Unknown, Reason::HealthUnknown, why))
}

fn degraded_condition(
    st: &mut SocialClusterStatus,
    sc: &SocialCluster,
    degraded: Option<(ConditionStatus, Reason, String)>,
    now: DateTime<Utc>,
) {
    let healthy = || {
        let n = sc.spec.projections.targets.len();
        (ConditionStatus::False, Reason::Healthy, format!("{n} projection target(s) healthy"))
    };
    let (value, reason, msg) = degraded.unwrap_or_else(healthy);
    conditions::set(st, ConditionType::Degraded, value, reason, &msg, sc.metadata.generation, now);
}
