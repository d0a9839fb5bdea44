//! `plan` as a table: from what exists to what to do, without any I/O. A small in-memory world applies
//! each plan the way act and the API server would (status replaced, children stored, orphans removed),
//! so cases run as sequences and the end of every sequence is checked to plan no writes at all.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use contract::admin::{RebuildProgress, RebuildStage};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use socialnet_crd::{ConditionStatus, ConditionType, FailoverReason, Phase, RebuildPhase, SocialCluster};
use socialnet_operator::children::{Child, ChildKind};
use socialnet_operator::health::{HealthView, PodView, TargetHealth};
use socialnet_operator::plan::{EventReason, Observed, Plan, plan};
use std::collections::{BTreeMap, HashMap};

fn example(name: &str) -> SocialCluster {
    let text =
        std::fs::read_to_string(format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut sc: SocialCluster = serde_yaml::from_str(&text).unwrap();
    sc.metadata.namespace = Some("apps".into());
    sc.metadata.uid = Some("0b5f4a5e-1111-4c2b-9d7e-5a0c2f1e3d4c".into());
    sc.metadata.generation = Some(1);
    sc
}

/// The world plan looks at, and how act plus the API server change it.
struct World {
    cluster: SocialCluster,
    children: BTreeMap<(ChildKind, String), Child>,
    health: Option<HealthView>,
    now: DateTime<Utc>,
}

impl World {
    fn new(sc: SocialCluster) -> Self {
        Self { cluster: sc, children: BTreeMap::new(), health: None, now: Utc::now() }
    }

    fn observed(&self) -> Observed {
        let mut o = Observed {
            cluster: self.cluster.clone(),
            deployments: vec![],
            services: vec![],
            hpas: vec![],
            pdbs: vec![],
            config_maps: vec![],
            jobs: vec![],
            health: self.health.clone(),
            recently_applied: HashMap::new(),
        };
        for c in self.children.values().cloned() {
            match c {
                Child::ConfigMap(x) => o.config_maps.push(x),
                Child::Deployment(x) => o.deployments.push(x),
                Child::Service(x) => o.services.push(x),
                Child::HorizontalPodAutoscaler(x) => o.hpas.push(x),
                Child::PodDisruptionBudget(x) => o.pdbs.push(x),
                Child::Job(x) => o.jobs.push(x),
            }
        }
        o
    }

    fn plan(&self) -> Plan {
        plan(&self.observed(), self.now)
    }

    /// Plan and carry the plan out (switched pods confirm), as one reconcile.
    fn step(&mut self) -> Plan {
        let p = self.plan();
        self.apply(&p);
        p
    }

    fn apply(&mut self, p: &Plan) {
        if let Some(st) = &p.status {
            self.cluster.status = Some(st.clone());
        }
        for c in &p.apply {
            let kept = self.children.get(&(c.kind(), c.name())).and_then(|old| match (old, c) {
                // The Deployment controller's status survives an apply.
                (Child::Deployment(o), Child::Deployment(_)) => o.status.clone().map(|s| (None, Some(s))),
                (Child::Job(o), Child::Job(_)) => o.status.clone().map(|s| (Some(s), None)),
                _ => None,
            });
            let mut c = c.clone();
            match (&mut c, kept) {
                (Child::Job(j), Some((Some(s), _))) => j.status = Some(s),
                (Child::Deployment(d), Some((_, Some(s)))) => d.status = Some(s),
                _ => {}
            }
            self.children.insert((c.kind(), c.name()), c);
        }
        for k in &p.delete {
            self.children.remove(k);
        }
        if let (Some(s), Some(view)) = (&p.switch, self.health.as_mut()) {
            for pod in view.read_pods.iter_mut().filter(|pod| s.endpoints.contains(&pod.endpoint)) {
                pod.active = Some(s.target.clone());
            }
        }
    }

    /// Reconcile until nothing is written (at most `n` passes); the passes' plans.
    fn settle(&mut self, n: usize) -> Vec<Plan> {
        let mut plans = Vec::new();
        for _ in 0..n {
            let p = self.step();
            let done = !p.writes() && p.switch.is_none();
            plans.push(p);
            if done {
                return plans;
            }
        }
        panic!("did not settle in {n} passes: last plan {:#?}", plans.last());
    }

    /// Play the Deployment controller: every pod wanted is ready.
    fn all_ready(&mut self) {
        for c in self.children.values_mut() {
            if let Child::Deployment(d) = c {
                let want = d.spec.replicas.unwrap_or(2);
                d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                    replicas: Some(want),
                    ready_replicas: Some(want),
                    ..Default::default()
                });
            }
        }
    }

    fn healthy(&mut self, pods: &[(&str, &str)], targets: &[&str]) {
        self.health = Some(HealthView {
            checked_at: self.now,
            read_pods: pods
                .iter()
                .map(|(e, a)| PodView { endpoint: (*e).into(), active: Some((*a).into()) })
                .collect(),
            targets: targets.iter().map(|t| health(t)).collect(),
            rebuilds: BTreeMap::new(),
            problem: None,
        });
    }

    fn target_mut(&mut self, name: &str) -> &mut TargetHealth {
        self.health.as_mut().unwrap().targets.iter_mut().find(|t| t.name == name).unwrap()
    }

    fn status(&self) -> socialnet_crd::SocialClusterStatus {
        self.cluster.status.clone().unwrap_or_default()
    }

    fn condition(&self, t: ConditionType) -> (ConditionStatus, String) {
        let st = self.status();
        let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status, c.reason.to_string())
    }

    fn job(&self) -> Option<Job> {
        self.children.values().find_map(|c| if let Child::Job(j) = c { Some(j.clone()) } else { None })
    }

    fn jobs(&self) -> usize {
        self.children.keys().filter(|(k, _)| *k == ChildKind::Job).count()
    }

    fn set_job_status(&mut self, status: JobStatus) {
        for c in self.children.values_mut() {
            if let Child::Job(j) = c {
                j.status = Some(status.clone());
            }
        }
    }
}

/// A healthy, caught-up target (the tests then break what they need).
fn health(name: &str) -> TargetHealth {
    let known = Some(true);
    TargetHealth {
        healthy: known,
        reachable: known,
        has_data: known,
        lag_events: Some(0),
        lag_seconds: Some(0.0),
        generation: Some(1),
        ..TargetHealth::unknown(name)
    }
}

fn reasons(p: &Plan) -> Vec<EventReason> {
    p.events.iter().map(|e| e.reason).collect()
}

fn kinds(p: &Plan) -> Vec<(ChildKind, String)> {
    p.apply.iter().map(|c| (c.kind(), c.name())).collect()
}

/// A ready, healthy two-target cluster with two read API pods, settled.
fn settled_minimal_two_targets() -> World {
    let mut sc = example("full.yaml");
    sc.spec.rebuild = None;
    let mut w = World::new(sc);
    w.healthy(&[("10.0.0.1:8080", "primary"), ("10.0.0.2:8080", "primary")], &["primary", "standby"]);
    w.step();
    w.all_ready();
    w.settle(4);
    w
}

#[test]
fn create_then_nothing_more() {
    let mut w = World::new(example("minimal.yaml"));
    let first = w.step();
    let applied = kinds(&first);
    assert_eq!(applied.iter().filter(|(k, _)| *k == ChildKind::Deployment).count(), 5);
    assert_eq!(applied.iter().filter(|(k, _)| *k == ChildKind::Service).count(), 5);
    assert_eq!(applied.iter().filter(|(k, _)| *k == ChildKind::ConfigMap).count(), 2);
    assert_eq!(
        applied.first().map(|(k, _)| *k),
        Some(ChildKind::ConfigMap),
        "ConfigMaps first: pods mount them"
    );
    let st = first.status.clone().unwrap();
    assert_eq!((st.phase, st.observed_generation), (Some(Phase::Provisioning), Some(1)));
    assert_eq!(
        w.condition(ConditionType::Degraded).0,
        ConditionStatus::Unknown,
        "health not checked is not healthy"
    );
    let again = w.plan();
    assert!(!again.writes(), "an unchanged world plans no writes: {again:#?}");
}

#[test]
fn an_unchanged_ready_healthy_cluster_plans_no_writes() {
    let w = settled_minimal_two_targets();
    let p = w.plan();
    assert!(!p.writes() && p.switch.is_none(), "{p:#?}");
    assert_eq!(w.status().phase, Some(Phase::Available));
    assert_eq!(w.condition(ConditionType::Degraded), (ConditionStatus::False, "Healthy".into()));
    assert_eq!(
        p.requeue,
        Some(socialnet_operator::plan::RESYNC),
        "looked at again only after the slow resync"
    );
}

#[test]
fn lag_that_moves_within_bounds_writes_nothing_but_crossing_the_bound_does() {
    let mut w = settled_minimal_two_targets();
    w.target_mut("standby").lag_events = Some(900);
    w.target_mut("standby").lag_seconds = Some(1.5);
    assert!(!w.plan().writes());
    w.target_mut("standby").lag_events = Some(20_000);
    let p = w.plan();
    let st = p.status.expect("crossing maxLagEvents is worth a status write");
    assert_eq!(st.projections.iter().find(|t| t.name == "standby").unwrap().caught_up, Some(false));
}

#[test]
fn scaling_applies_the_one_changed_deployment() {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.ingester.replicas = 4;
    w.cluster.metadata.generation = Some(2);
    let p = w.step();
    assert_eq!(kinds(&p), vec![(ChildKind::Deployment, "social-ingester".to_owned())]);
    assert_eq!(p.status.unwrap().observed_generation, Some(2));
}

#[test]
fn someone_elses_edit_of_an_owned_field_is_put_back() {
    let mut w = settled_minimal_two_targets();
    if let Some(Child::Deployment(d)) = w.children.get_mut(&(ChildKind::Deployment, "social-gateway".into()))
    {
        d.spec.replicas = Some(9);
    }
    assert_eq!(kinds(&w.plan()), vec![(ChildKind::Deployment, "social-gateway".to_owned())]);
}

#[test]
fn orphans_are_deleted_when_the_spec_stops_asking_for_them() {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.write_api.autoscaling = None;
    w.cluster.spec.write_api.replicas = 1;
    let mut stale = w.observed();
    let p = w.step();
    assert!(p.delete.contains(&(ChildKind::HorizontalPodAutoscaler, "social-write-api".into())));
    assert!(p.delete.contains(&(ChildKind::PodDisruptionBudget, "social-write-api".into())));
    assert!(!p.delete.iter().any(|(k, _)| *k == ChildKind::Job), "rebuild Jobs are never orphans");

    // Deleted moments ago and still in the lagging cache: not deleted again, looked at again later.
    stale.cluster.status = p.status.clone().or(stale.cluster.status);
    for (kind, name) in &p.delete {
        stale.recently_applied.insert((*kind, name.clone()), socialnet_operator::plan::DELETED.to_owned());
    }
    let again = plan(&stale, w.now);
    assert!(again.delete.is_empty(), "deleted twice: {:?}", again.delete);
    assert_eq!(again.requeue, Some(socialnet_operator::plan::CACHE_GRACE));
}

#[test]
fn a_child_the_cache_does_not_show_yet_is_not_applied_twice() {
    let w = World::new(example("minimal.yaml"));
    let first = w.plan();
    let mut o = w.observed();
    o.cluster.status = first.status.clone();
    for c in &first.apply {
        o.recently_applied.insert((c.kind(), c.name()), c.hash().unwrap());
    }
    let second = plan(&o, w.now);
    assert!(second.apply.is_empty(), "applied moments ago: {:?}", kinds(&second));
    assert_eq!(
        second.requeue,
        Some(socialnet_operator::plan::CACHE_GRACE),
        "looked at again once the cache caught up"
    );
}

#[test]
fn paused_changes_nothing_and_says_so() {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.paused = true;
    w.children.remove(&(ChildKind::Deployment, "social-gateway".into()));
    w.target_mut("primary").healthy = Some(false);
    w.target_mut("primary").consecutive_failures = 10;
    w.target_mut("primary").failing_since = Some(w.now - Duration::seconds(60));
    let p = w.step();
    assert!(p.apply.is_empty() && p.delete.is_empty() && p.switch.is_none(), "{p:#?}");
    assert_eq!(w.status().phase, Some(Phase::Paused));
}

#[test]
fn an_invalid_spec_is_reported_once_and_nothing_is_applied() {
    let mut sc = example("full.yaml");
    sc.spec.projections.targets[1].name = "primary".into();
    let mut w = World::new(sc);
    let p = w.step();
    assert!(p.apply.is_empty());
    assert_eq!(reasons(&p), vec![EventReason::InvalidSpec]);
    let st = w.status();
    assert_eq!(st.phase, Some(Phase::Invalid));
    assert!(st.message.unwrap().contains("listed twice"));
    assert!(!w.plan().writes(), "the same problem is not reported again");
}

fn fail_primary(w: &mut World, failures: u32, for_s: i64) {
    let since = w.now - Duration::seconds(for_s);
    let t = w.target_mut("primary");
    t.healthy = Some(false);
    t.reachable = Some(false);
    t.consecutive_failures = failures;
    t.failing_since = Some(since);
}

#[test]
fn a_failing_primary_is_waited_for_then_failed_over_in_one_pass() {
    let mut w = settled_minimal_two_targets();
    fail_primary(&mut w, 2, 5);
    let p = w.step();
    assert!(p.switch.is_none());
    assert_eq!(w.condition(ConditionType::Degraded), (ConditionStatus::True, "PrimaryFailing".into()));
    fail_primary(&mut w, 3, 0);
    let p = w.step();
    assert!(p.switch.is_none(), "inside the delay");
    let delay = u64::try_from(w.cluster.spec.projections.failover.delay_seconds).unwrap();
    assert!(
        p.requeue.unwrap() <= std::time::Duration::from_millis(delay * 1000 + 100),
        "looked at again when the delay ends"
    );
    fail_primary(&mut w, 3, 2);
    let start = w.step();
    assert_eq!(reasons(&start), vec![EventReason::FailoverStarted]);
    let st = start.status.clone().unwrap();
    assert_eq!(
        (st.target_primary.as_deref(), st.current_primary.as_deref()),
        (Some("standby"), Some("primary"))
    );
    let sw = start.switch.clone().unwrap();
    assert_eq!((sw.target.as_str(), sw.endpoints.len()), ("standby", 2));
    // The pods confirmed: the next plan completes it, and the ConfigMap follows.
    let done = w.step();
    assert_eq!(reasons(&done), vec![EventReason::FailoverCompleted]);
    let st = w.status();
    assert_eq!((st.current_primary.as_deref(), st.target_primary), (Some("standby"), None));
    let last = st.last_failover.unwrap();
    assert_eq!(
        (last.from.as_str(), last.to.as_str(), last.reason),
        ("primary", "standby", FailoverReason::PrimaryFailed)
    );
    let cm = w.children.get(&(ChildKind::ConfigMap, "social-projections".into())).unwrap();
    let Child::ConfigMap(cm) = cm else { unreachable!() };
    assert_eq!(cm.data.as_ref().unwrap()["active"], "standby");
    assert_eq!(w.condition(ConditionType::FailingOver), (ConditionStatus::False, "Completed".into()));
    w.settle(3);
}

#[test]
fn a_pod_that_refuses_the_switch_is_switched_on_a_later_pass() {
    let mut w = settled_minimal_two_targets();
    fail_primary(&mut w, 5, 10);
    let start = w.plan();
    w.apply(&Plan { switch: None, ..start.clone() });
    // Only one pod took it.
    w.health.as_mut().unwrap().read_pods[0].active = Some("standby".into());
    let retry = w.plan();
    assert_eq!(retry.switch.unwrap().endpoints, vec!["10.0.0.2:8080".to_owned()]);
    assert_eq!(w.status().phase, Some(Phase::FailingOver));
    assert!(retry.events.is_empty(), "no second FailoverStarted");
    w.health.as_mut().unwrap().read_pods[1].active = Some("standby".into());
    let done = w.step();
    assert_eq!(reasons(&done), vec![EventReason::FailoverCompleted]);
    assert_ne!(w.status().phase, Some(Phase::FailingOver));
}

#[test]
fn a_target_that_fails_during_its_own_switch_aborts_it() {
    let mut w = settled_minimal_two_targets();
    fail_primary(&mut w, 5, 10);
    let start = w.plan();
    w.apply(&Plan { switch: None, ..start });
    let t = w.target_mut("standby");
    t.healthy = Some(false);
    t.reachable = Some(false);
    t.consecutive_failures = 3;
    let p = w.step();
    assert_eq!(reasons(&p), vec![EventReason::FailoverAborted]);
    assert_eq!(w.status().target_primary, None);
    assert_eq!(w.status().current_primary.as_deref(), Some("primary"));
}

#[test]
fn a_primary_that_is_only_behind_is_not_failed_over_but_reported() {
    let mut w = settled_minimal_two_targets();
    let t = w.target_mut("primary");
    t.healthy = Some(false);
    t.consecutive_failures = 0;
    t.lag_events = Some(50_000);
    let p = w.step();
    assert!(p.switch.is_none() && w.status().target_primary.is_none(), "{p:#?}");
    assert_eq!(w.condition(ConditionType::Degraded), (ConditionStatus::True, "Lagging".into()));
}

#[test]
fn a_pod_on_the_wrong_target_is_put_back_outside_a_failover() {
    let mut w = settled_minimal_two_targets();
    w.health.as_mut().unwrap().read_pods[1].active = Some("standby".into());
    let p = w.plan();
    let s = p.switch.unwrap();
    assert_eq!((s.target.as_str(), s.endpoints), ("primary", vec!["10.0.0.2:8080".to_owned()]));
    assert!(p.status.is_none() && p.events.is_empty());
}

#[test]
fn no_healthy_standby_is_reported_once() {
    let mut w = settled_minimal_two_targets();
    fail_primary(&mut w, 5, 10);
    let t = w.target_mut("standby");
    t.healthy = Some(false);
    t.consecutive_failures = 5;
    let p = w.step();
    assert_eq!(reasons(&p), vec![EventReason::NoHealthyStandby]);
    assert_eq!(w.condition(ConditionType::Degraded), (ConditionStatus::True, "NoHealthyStandby".into()));
    assert!(w.plan().events.is_empty());
}

#[test]
fn unknown_health_is_reported_as_unknown_and_fails_nothing_over() {
    let mut w = settled_minimal_two_targets();
    w.health.as_mut().unwrap().problem = Some("none of 2 read API pods answered".into());
    let p = w.step();
    assert!(p.switch.is_none());
    assert_eq!(w.condition(ConditionType::Degraded), (ConditionStatus::Unknown, "HealthUnknown".into()));
    assert!(w.status().projections.is_empty(), "no health claimed that was not checked");
}

#[test]
fn a_switchover_request_is_carried_out_once() {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.switchover = Some(socialnet_crd::SwitchoverRequest { target: "standby".into() });
    assert_eq!(reasons(&w.step()), vec![EventReason::FailoverStarted]);
    w.step();
    let st = w.status();
    assert_eq!(
        (st.current_primary.as_deref(), st.handled_switchover.as_deref()),
        (Some("standby"), Some("standby"))
    );
    assert_eq!(st.last_failover.unwrap().reason, FailoverReason::Switchover);
    w.settle(3);
    // Removing the request afterwards changes nothing either.
    w.cluster.spec.switchover = None;
    assert!(!w.plan().writes());
}

fn progress(run_id: &str, done: u64, total: u64, stage: RebuildStage) -> RebuildProgress {
    let mut p = RebuildProgress::at(Some(run_id.into()), done, total, 0, 10_000);
    p.stage = stage;
    p
}

#[test]
fn a_token_present_at_creation_is_recorded_not_run() {
    let mut w = World::new(example("full.yaml"));
    w.step();
    assert_eq!(w.jobs(), 0);
    assert_eq!(w.status().handled_rebuild_token.as_deref(), Some("initial"));
}

#[test]
fn a_rebuild_is_started_followed_with_progress_and_finished() {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.rebuild = Some(socialnet_crd::RebuildRequest {
        target: "standby".into(),
        token: "t1".into(),
        streaming: false,
    });
    let start = w.step();
    assert_eq!(reasons(&start), vec![EventReason::RebuildStarted]);
    assert_eq!(w.jobs(), 1);
    let rb = w.status().rebuild.unwrap();
    assert_eq!((rb.phase, rb.token.as_str(), rb.automatic), (RebuildPhase::Pending, "t1", false));
    assert_eq!(w.status().phase, Some(Phase::Rebuilding));
    let job = w.job().unwrap().metadata.name.unwrap();
    w.set_job_status(JobStatus { active: Some(1), ..Default::default() });
    for (done, shown) in [(1000, "1000/4000"), (2500, "2500/4000")] {
        w.health
            .as_mut()
            .unwrap()
            .rebuilds
            .insert("standby".into(), progress(&job, done, 4000, RebuildStage::Replaying));
        w.step();
        let rb = w.status().rebuild.unwrap();
        assert_eq!((rb.phase, rb.progress.as_deref()), (RebuildPhase::Running, Some(shown)));
        assert!(rb.eta_seconds.is_some() && rb.events_per_second.is_some());
    }
    // Another run's progress in the same target is not this rebuild's.
    w.health
        .as_mut()
        .unwrap()
        .rebuilds
        .insert("standby".into(), progress("someone-else", 3999, 4000, RebuildStage::Replaying));
    w.step();
    assert_eq!(w.status().rebuild.unwrap().progress.as_deref(), Some("2500/4000"));
    w.set_job_status(JobStatus { succeeded: Some(1), ..Default::default() });
    let done = w.step();
    assert_eq!(reasons(&done), vec![EventReason::RebuildSucceeded]);
    let rb = w.status().rebuild.unwrap();
    assert_eq!(
        (rb.phase, rb.progress.as_deref(), rb.finished_at.is_some()),
        (RebuildPhase::Succeeded, Some("4000/4000"), true)
    );
    // The same token again starts nothing; nothing left over in a later rebuild.
    w.settle(3);
    assert_eq!(w.jobs(), 1);
}

#[test]
fn a_new_rebuild_starts_clean_and_an_old_token_never_runs_twice() {
    let mut w = a_finished_rebuild("t1");
    w.cluster.spec.rebuild.as_mut().unwrap().token = "t2".into();
    w.step();
    let rb = w.status().rebuild.unwrap();
    assert_eq!((rb.token.as_str(), rb.phase), ("t2", RebuildPhase::Pending));
    assert!(
        rb.progress.is_none() && rb.finished_at.is_none() && rb.error.is_none(),
        "nothing inherited: {rb:?}"
    );
    w.set_job_status(JobStatus { succeeded: Some(1), ..Default::default() });
    w.settle(3);
    // Back to t1, whose Job still exists: refused, not "succeeded" again.
    w.cluster.spec.rebuild.as_mut().unwrap().token = "t1".into();
    let p = w.step();
    assert_eq!(reasons(&p), vec![EventReason::RebuildFailed]);
    assert!(w.status().rebuild.unwrap().error.unwrap().contains("used before"));
    assert_eq!(w.jobs(), 2);
}

fn a_finished_rebuild(token: &str) -> World {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.rebuild = Some(socialnet_crd::RebuildRequest {
        target: "standby".into(),
        token: token.into(),
        streaming: false,
    });
    w.step();
    w.set_job_status(JobStatus { succeeded: Some(1), ..Default::default() });
    w.settle(3);
    w
}

#[test]
fn a_failed_job_fails_the_rebuild_and_a_vanished_one_too() {
    let mut w = settled_minimal_two_targets();
    w.cluster.spec.rebuild =
        Some(socialnet_crd::RebuildRequest { target: "standby".into(), token: "t".into(), streaming: false });
    w.step();
    w.set_job_status(JobStatus { active: Some(1), ..Default::default() });
    w.step();
    w.children.retain(|(k, _), _| *k != ChildKind::Job);
    let p = w.step();
    assert_eq!(reasons(&p), vec![EventReason::RebuildFailed]);
    assert!(w.status().rebuild.unwrap().error.unwrap().contains("disappeared"));
}

#[test]
fn the_old_primary_back_empty_gets_one_automatic_rebuild_per_failover() {
    let mut w = settled_minimal_two_targets();
    fail_primary(&mut w, 5, 10);
    w.step();
    w.step();
    assert_eq!(w.status().current_primary.as_deref(), Some("standby"));
    // Back, reachable, empty.
    let t = w.target_mut("primary");
    t.reachable = Some(true);
    let p = w.step();
    assert_eq!(reasons(&p), vec![EventReason::RebuildStarted]);
    let rb = w.status().rebuild.unwrap();
    assert!(rb.automatic && rb.target == "primary");
    assert!(w.status().last_failover.unwrap().rebuilt);
    w.set_job_status(JobStatus { succeeded: Some(1), ..Default::default() });
    w.step();
    assert!(!reasons(&w.step()).contains(&EventReason::RebuildStarted), "once per failover");
    assert_eq!(w.jobs(), 1);
}

#[test]
fn a_handled_token_does_not_run_again_after_an_automatic_rebuild_replaced_it_in_status() {
    let mut w = a_finished_rebuild("t1");
    fail_primary(&mut w, 5, 10);
    w.step();
    w.step();
    w.target_mut("primary").reachable = Some(true);
    w.step();
    assert!(w.status().rebuild.unwrap().automatic);
    w.set_job_status(JobStatus { succeeded: Some(1), ..Default::default() });
    w.settle(4);
    assert_eq!(w.jobs(), 2, "t1's Job and the automatic one, no second t1");
    assert_eq!(w.status().handled_rebuild_token.as_deref(), Some("t1"));
}

#[test]
fn the_status_summary_shows_what_an_operator_needs() {
    let mut w = settled_minimal_two_targets();
    fail_primary(&mut w, 5, 10);
    w.step();
    w.step();
    let out = socialnet_operator::summary::render(&w.cluster, &[]);
    for needle in [
        "SocialCluster apps/social:",
        "read-api   2/2",
        "primary standby",
        "FAILING",
        "last failover: primary -> standby (PrimaryFailed)",
    ] {
        assert!(out.contains(needle), "summary lacks {needle:?}:\n{out}");
    }
}

/// Three ingesters on a partitioned queue: three Deployments of one pod each; status counts them all as
/// the ingester; going back to one partition removes them for the single Deployment.
#[test]
fn partitioned_ingesters_are_one_deployment_each_and_counted_together() {
    let mut sc = example("scaled.yaml");
    sc.spec.ingester.replicas = 3;
    let mut w = World::new(sc);
    let first = w.step();
    let ingesters: Vec<String> = kinds(&first)
        .into_iter()
        .filter(|(k, n)| *k == ChildKind::Deployment && n.contains("-ingester"))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        ingesters,
        vec!["social-scaled-ingester-0", "social-scaled-ingester-1", "social-scaled-ingester-2"]
    );
    w.all_ready();
    w.settle(4);
    let st = w.status();
    let ingester = st.components.unwrap().ingester.unwrap();
    assert_eq!((ingester.ready_replicas, ingester.replicas), (3, 3));
    assert_eq!(st.ready.as_deref(), Some("7/7"));

    w.cluster.spec.queue.partitions = 1;
    let back = w.step();
    let deleted: Vec<String> = back.delete.iter().map(|k| k.1.clone()).collect();
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert!(kinds(&back).iter().any(|(k, n)| *k == ChildKind::Deployment && n == "social-scaled-ingester"));
}
