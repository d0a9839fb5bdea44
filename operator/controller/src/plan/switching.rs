//! Failover and switchover. A switch is recorded in status first (`targetPrimary`), then every read API
//! pod is pointed at the new target; it completes (`currentPrimary` moves, `lastFailover` recorded) only
//! once every pod reports the new target, and is retried until then. A target that fails during its own
//! switch aborts it. Outside a switch, a pod found on another target than the primary is put back.

use super::{EventReason, Observed, Plan, SWITCH_RETRY, Switch};
use crate::conditions::{self, rfc3339, rfc3339_ms};
use crate::failover::{self, Decision};
use crate::health::HealthView;
use chrono::{DateTime, Utc};
use socialnet_crd::{
    ConditionStatus, ConditionType, FailoverReason, FailoverRecord, Reason, SocialClusterStatus,
};
use std::time::Duration;

type Degradation = (ConditionStatus, Reason, String);

/// What one switch decision looks at.
struct Scene<'a> {
    o: &'a Observed,
    view: &'a HealthView,
    now: DateTime<Utc>,
}

impl Scene<'_> {
    fn generation(&self) -> Option<i64> {
        self.o.cluster.metadata.generation
    }

    /// Pods not (known to be) on `target`.
    fn pods_off(&self, target: &str) -> Vec<String> {
        let off = self.view.read_pods.iter().filter(|p| p.active.as_deref() != Some(target));
        off.map(|p| p.endpoint.clone()).collect()
    }
}

/// Start, continue or complete a switch, or keep every pod on the primary. Returns a degradation the
/// decision found (no standby to promote).
pub(super) fn step(
    st: &mut SocialClusterStatus,
    plan: &mut Plan,
    o: &Observed,
    now: DateTime<Utc>,
) -> Option<Degradation> {
    let view = o.health.as_ref().filter(|v| v.problem.is_none())?;
    let current = st.current_primary.clone()?;
    let scene = Scene { o, view, now };
    if let Some(to) = st.target_primary.clone() {
        continue_switch(st, plan, &scene, &current, &to);
        return None;
    }
    let spec = &o.cluster.spec;
    let requested = spec.switchover.as_ref().map(|s| s.target.clone());
    if requested.as_deref() == Some(current.as_str()) {
        st.handled_switchover = requested.clone();
    }
    let switchover = requested.as_deref().filter(|t| st.handled_switchover.as_deref() != Some(*t));
    match failover::decide(&spec.projections.failover, false, &current, &view.targets, switchover, now) {
        Decision::Promote { to, reason } => {
            start(st, plan, &scene, &current, &to, reason);
            None
        }
        Decision::NoCandidate(why) => {
            let already = st.conditions.iter().any(|c| c.reason == Reason::NoHealthyStandby);
            if !already {
                plan.note(true, EventReason::NoHealthyStandby, why.clone());
            }
            Some((ConditionStatus::True, Reason::NoHealthyStandby, why))
        }
        Decision::Wait { recheck, .. } => {
            if let Some(r) = recheck {
                plan.requeue_within(r + Duration::from_millis(50));
            }
            keep_pods_on(plan, &scene, &current);
            None
        }
        Decision::Stay => {
            keep_pods_on(plan, &scene, &current);
            None
        }
    }
}

/// Pods serving another target than `target` (a pod that missed a switch, or started before the
/// ConfigMap changed) are switched back; pods that did not answer are left until they do.
fn keep_pods_on(plan: &mut Plan, scene: &Scene<'_>, target: &str) {
    let astray: Vec<String> = scene
        .view
        .read_pods
        .iter()
        .filter(|p| p.active.as_deref().is_some_and(|a| a != target))
        .map(|p| p.endpoint.clone())
        .collect();
    if !astray.is_empty() {
        plan.switch = Some(Switch { target: target.to_owned(), endpoints: astray });
    }
}

fn start(
    st: &mut SocialClusterStatus,
    plan: &mut Plan,
    scene: &Scene<'_>,
    from: &str,
    to: &str,
    reason: FailoverReason,
) {
    st.target_primary = Some(to.to_owned());
    st.target_primary_timestamp = Some(rfc3339_ms(scene.now));
    if reason == FailoverReason::Switchover {
        st.handled_switchover = Some(to.to_owned());
    }
    let why = if reason == FailoverReason::Switchover { Reason::Switchover } else { Reason::PrimaryFailed };
    let msg = format!("moving reads from {from} to {to}");
    conditions::set(
        st,
        ConditionType::FailingOver,
        ConditionStatus::True,
        why,
        &msg,
        scene.generation(),
        scene.now,
    );
    plan.note(
        reason == FailoverReason::PrimaryFailed,
        EventReason::FailoverStarted,
        format!("{reason}: {msg}"),
    );
    plan.switch = Some(Switch { target: to.to_owned(), endpoints: scene.pods_off(to) });
    plan.requeue_within(SWITCH_RETRY);
}

fn continue_switch(st: &mut SocialClusterStatus, plan: &mut Plan, scene: &Scene<'_>, from: &str, to: &str) {
    let off = scene.pods_off(to);
    let threshold = u32::try_from(scene.o.cluster.spec.projections.failover.failure_threshold).unwrap_or(1);
    let target_failed = scene
        .view
        .target(to)
        .is_some_and(|t| t.failing() == Some(true) && t.consecutive_failures >= threshold);
    if off.is_empty() {
        complete(st, plan, scene, from, to);
    } else if target_failed {
        st.target_primary = None;
        st.target_primary_timestamp = None;
        let msg = format!("{to} failed while the read APIs were moving to it; {from} stays the primary");
        let g = scene.generation();
        conditions::set(
            st,
            ConditionType::FailingOver,
            ConditionStatus::False,
            Reason::Aborted,
            &msg,
            g,
            scene.now,
        );
        plan.note(true, EventReason::FailoverAborted, msg);
        plan.requeue_within(SWITCH_RETRY);
    } else {
        plan.switch = Some(Switch { target: to.to_owned(), endpoints: off });
        plan.requeue_within(SWITCH_RETRY);
    }
}

fn complete(st: &mut SocialClusterStatus, plan: &mut Plan, scene: &Scene<'_>, from: &str, to: &str) {
    let now = scene.now;
    let reason = match st.conditions.iter().find(|c| c.type_ == ConditionType::FailingOver) {
        Some(c) if c.reason == Reason::Switchover => FailoverReason::Switchover,
        _ => FailoverReason::PrimaryFailed,
    };
    let started = st.target_primary_timestamp.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let ms = started.map(|s| now.signed_duration_since(s).num_milliseconds().max(0));
    st.last_failover = Some(FailoverRecord {
        from: from.to_owned(),
        to: to.to_owned(),
        reason,
        at: rfc3339_ms(now),
        duration_ms: ms,
        rebuilt: false,
    });
    st.current_primary = Some(to.to_owned());
    st.current_primary_timestamp = Some(rfc3339(now));
    st.target_primary = None;
    st.target_primary_timestamp = None;
    let msg = format!("{to} is the primary");
    conditions::set(
        st,
        ConditionType::FailingOver,
        ConditionStatus::False,
        Reason::Completed,
        &msg,
        scene.generation(),
        now,
    );
    let pods = scene.view.read_pods.len();
    let took = ms.map(|m| format!(", {m} ms")).unwrap_or_default();
    plan.note(
        false,
        EventReason::FailoverCompleted,
        format!("{pods} read API pod(s) now read {to} (was {from}){took}"),
    );
}
