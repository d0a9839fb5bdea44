//! Rebuilds: start one for a new `spec.rebuild.token`, or automatically for a target that was failed
//! over from and came back without its data (once per failover); follow its Job, with progress as the
//! rebuild records it (events done / total, rate, ETA). One rebuild at a time per cluster; one Job per
//! token, ever: a token whose Job still exists is refused, never run twice.

use super::{EventReason, Observed, Plan};
use crate::children::{Child, ChildKind};
use crate::conditions::{self, rfc3339};
use crate::failover;
use crate::health;
use crate::jobs::{self, JobState};
use chrono::{DateTime, Utc};
use contract::admin::RebuildProgress;
use kube::ResourceExt;
use socialnet_crd::{
    ConditionStatus, ConditionType, Reason, RebuildPhase, RebuildStatus, SocialCluster, SocialClusterStatus,
};
use std::time::Duration;

/// How soon a Job asked for and not yet seen is looked for again.
const PENDING_RECHECK: Duration = Duration::from_secs(5);

pub(super) fn step(st: &mut SocialClusterStatus, plan: &mut Plan, o: &Observed, now: DateTime<Utc>) {
    if let Some(r) = st.rebuild.clone().filter(|r| r.phase.is_active()) {
        follow(st, plan, o, r, now);
        return;
    }
    let sc = &o.cluster;
    if let Some(req) =
        sc.spec.rebuild.as_ref().filter(|r| st.handled_rebuild_token.as_deref() != Some(r.token.as_str()))
    {
        st.handled_rebuild_token = Some(req.token.clone());
        start(st, plan, o, &req.target, &req.token, false, now);
        return;
    }
    let Some(last) = st.last_failover.clone().filter(|l| !l.rebuilt) else { return };
    let back_empty =
        o.health.as_ref().and_then(|v| v.target(&last.from)).is_some_and(failover::needs_rebuild);
    if back_empty {
        if let Some(l) = st.last_failover.as_mut() {
            l.rebuilt = true;
        }
        start(st, plan, o, &last.from, &last.at, true, now);
    }
}

fn start(
    st: &mut SocialClusterStatus,
    plan: &mut Plan,
    o: &Observed,
    target: &str,
    token: &str,
    automatic: bool,
    now: DateTime<Utc>,
) {
    let job = jobs::rebuild_job(&o.cluster, target, token);
    let name = job.name_any();
    let mut status = RebuildStatus {
        target: target.to_owned(),
        token: token.to_owned(),
        phase: RebuildPhase::Pending,
        job: name.clone(),
        automatic,
        progress: None,
        events_done: None,
        events_total: None,
        events_per_second: None,
        eta_seconds: None,
        started_at: Some(rfc3339(now)),
        finished_at: None,
        error: None,
    };
    if o.jobs.iter().any(|j| j.name_any() == name) {
        // The Job of this token already ran: running it "again" would only report its old result.
        status.phase = RebuildPhase::Failed;
        status.finished_at = status.started_at.clone();
        let why = format!("token {token:?} was used before (job {name} exists); give a new token");
        status.error = Some(why.clone());
        plan.note(true, EventReason::RebuildFailed, why);
    } else {
        let how = if automatic { "automatic rebuild" } else { "rebuild" };
        plan.note(
            false,
            EventReason::RebuildStarted,
            format!("{how} of projection target {target} (job {name})"),
        );
        plan.apply.push(Child::Job(job).hashed());
    }
    st.rebuild = Some(status);
}

fn follow(
    st: &mut SocialClusterStatus,
    plan: &mut Plan,
    o: &Observed,
    mut r: RebuildStatus,
    now: DateTime<Utc>,
) {
    let progress = health::progress_of(o.health.as_ref(), &r.target, &r.job).cloned();
    if let Some(p) = &progress {
        show(&mut r, p);
    }
    match o.jobs.iter().find(|j| j.name_any() == r.job).map(jobs::job_state) {
        None if r.phase == RebuildPhase::Pending => {
            let applied = o.recently_applied.get(&(ChildKind::Job, r.job.clone()));
            if applied.is_none_or(|h| h == super::DELETED) {
                // Asked for, never seen: the apply did not happen (or the Job was removed before it ran).
                plan.apply.push(Child::Job(jobs::rebuild_job(&o.cluster, &r.target, &r.token)).hashed());
            }
            plan.requeue_within(PENDING_RECHECK);
        }
        None => {
            let why = format!("job {} disappeared", r.job);
            finish(plan, &mut r, now, Some(why));
        }
        Some(JobState::Active) => r.phase = RebuildPhase::Running,
        Some(JobState::Succeeded) => {
            let total =
                progress.as_ref().map(|p| p.total).or(r.events_total.and_then(|t| u64::try_from(t).ok()));
            if let Some(total) = total {
                let mut last =
                    progress.clone().unwrap_or_else(|| RebuildProgress::at(None, total, total, 0, 1));
                last.done = total;
                last.total = total;
                show(&mut r, &last);
                r.eta_seconds = Some(0);
            }
            finish(plan, &mut r, now, None);
        }
        Some(JobState::Failed(why)) => {
            let why = format!("job {} failed: {why}", r.job);
            finish(plan, &mut r, now, Some(why));
        }
    }
    st.rebuild = Some(r);
}

fn show(r: &mut RebuildStatus, p: &RebuildProgress) {
    let n = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
    r.progress = Some(format!("{}/{}", p.done, p.total));
    r.events_done = n(p.done);
    r.events_total = n(p.total);
    r.events_per_second = n(p.events_per_second);
    r.eta_seconds = n(p.eta_seconds);
}

fn finish(plan: &mut Plan, r: &mut RebuildStatus, now: DateTime<Utc>, error: Option<String>) {
    r.finished_at = Some(rfc3339(now));
    r.phase = if error.is_some() { RebuildPhase::Failed } else { RebuildPhase::Succeeded };
    match &error {
        Some(why) => plan.note(true, EventReason::RebuildFailed, format!("rebuild of {}: {why}", r.target)),
        None => {
            let events = r.events_total.map(|t| format!(", {t} events")).unwrap_or_default();
            plan.note(
                false,
                EventReason::RebuildSucceeded,
                format!("rebuild of {} succeeded{events}", r.target),
            );
        }
    }
    r.error = error.map(|e| conditions::truncate(&e, 1024));
}

/// The `Rebuilding` condition.
pub(super) fn condition(st: &mut SocialClusterStatus, sc: &SocialCluster, now: DateTime<Utc>) {
    let g = sc.metadata.generation;
    match st.rebuild.clone().filter(|r| r.phase.is_active()) {
        Some(r) => {
            let reason =
                if r.phase == RebuildPhase::Pending { Reason::JobPending } else { Reason::JobRunning };
            let mut msg = format!("rebuilding {} (job {})", r.target, r.job);
            if let (Some(p), Some(rate), Some(eta)) = (&r.progress, r.events_per_second, r.eta_seconds) {
                msg.push_str(&format!(": {p} events, {rate}/s, about {eta} s left"));
            }
            conditions::set(st, ConditionType::Rebuilding, ConditionStatus::True, reason, &msg, g, now);
        }
        None => conditions::set(
            st,
            ConditionType::Rebuilding,
            ConditionStatus::False,
            Reason::Idle,
            "no rebuild running",
            g,
            now,
        ),
    }
}
