//! What the health monitor knows about one cluster, and how one poll of its pods is folded into it
//! (pure). A target is healthy when most read API pods that answered can serve from it; its lag is the
//! projector's exact count when the projector answers, else the read API pods' estimate. Nothing is
//! counted when no pod answered: health is then unknown, never assumed.

use chrono::{DateTime, Utc};
use contract::admin::{ProjectorProjections, ReadApiProjections, RebuildProgress};
use std::collections::BTreeMap;

/// One target, as the monitor has seen it over its recent polls.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    pub name: String,
    /// The read API pods would serve from it (`None`: no pod answered, so nothing is known).
    pub healthy: Option<bool>,
    /// It answers.
    pub reachable: Option<bool>,
    /// It holds a projection (a current generation).
    pub has_data: Option<bool>,
    /// Polls in a row that found it failing (see [`TargetHealth::failing`]).
    pub consecutive_failures: u32,
    pub failing_since: Option<DateTime<Utc>>,
    pub lag_events: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub generation: Option<u64>,
}

/// One read API pod: which target it serves (`None` when it did not answer).
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub endpoint: String,
    pub active: Option<String>,
}

/// The monitor's latest view of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthView {
    pub checked_at: DateTime<Utc>,
    pub read_pods: Vec<PodView>,
    pub targets: Vec<TargetHealth>,
    /// The last rebuild recorded in each target, as the projector reports it.
    pub rebuilds: BTreeMap<String, RebuildProgress>,
    /// Why health could not be checked, when it could not (no endpoints, no token, no answer).
    pub problem: Option<String>,
}

impl TargetHealth {
    /// Nothing known about a target.
    pub fn unknown(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            healthy: None,
            reachable: None,
            has_data: None,
            consecutive_failures: 0,
            failing_since: None,
            lag_events: None,
            lag_seconds: None,
            generation: None,
        }
    }

    /// Failed: it does not answer, or answers without data. A target that is only behind is not failed
    /// (the read APIs already read the most caught-up target); `None` when nothing is known.
    pub fn failing(&self) -> Option<bool> {
        failing(self.reachable, self.has_data)
    }
}

fn failing(reachable: Option<bool>, has_data: Option<bool>) -> Option<bool> {
    match (reachable, has_data) {
        (Some(false), _) | (_, Some(false)) => Some(true),
        (Some(true), Some(true)) => Some(false),
        _ => None,
    }
}

impl HealthView {
    pub fn target(&self, name: &str) -> Option<&TargetHealth> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// What one poll brought back.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    /// Each read API endpoint and its answer (`None`: it did not answer).
    pub read: Vec<(String, Option<ReadApiProjections>)>,
    pub projector: Option<ProjectorProjections>,
    pub problem: Option<String>,
}

/// Fold a poll into the previous view.
pub fn fold(
    previous: Option<&HealthView>,
    poll: &Poll,
    targets: &[String],
    now: DateTime<Utc>,
) -> HealthView {
    let answers: Vec<&ReadApiProjections> = poll.read.iter().filter_map(|(_, a)| a.as_ref()).collect();
    let folded = targets
        .iter()
        .map(|name| {
            let prev = previous.and_then(|v| v.target(name));
            fold_target(name, prev, &answers, poll.projector.as_ref(), now)
        })
        .collect();
    let problem = poll.problem.clone().or_else(|| match (poll.read.is_empty(), answers.is_empty()) {
        (true, _) => Some("no ready read API endpoints".to_owned()),
        (false, true) => Some(format!("none of {} read API pods answered", poll.read.len())),
        _ => None,
    });
    HealthView {
        checked_at: now,
        read_pods: poll
            .read
            .iter()
            .map(|(endpoint, a)| PodView {
                endpoint: endpoint.clone(),
                active: a.as_ref().map(|a| a.active.clone()),
            })
            .collect(),
        targets: folded,
        rebuilds: poll
            .projector
            .iter()
            .flat_map(|p| &p.targets)
            .filter_map(|t| t.rebuild.clone().map(|r| (t.name.clone(), r)))
            .collect(),
        problem,
    }
}

fn fold_target(
    name: &str,
    prev: Option<&TargetHealth>,
    answers: &[&ReadApiProjections],
    projector: Option<&ProjectorProjections>,
    now: DateTime<Utc>,
) -> TargetHealth {
    let seen: Vec<_> = answers.iter().filter_map(|a| a.targets.iter().find(|t| t.name == name)).collect();
    let majority = |n: usize| (!seen.is_empty()).then(|| n * 2 > seen.len());
    let healthy = majority(seen.iter().filter(|t| t.healthy).count());
    let reachable = majority(seen.iter().filter(|t| t.reachable).count());
    let has_data = majority(seen.iter().filter(|t| t.position.generation.is_some()).count());
    let exact = projector.and_then(|p| p.targets.iter().find(|t| t.name == name));
    let (failures, since) = match (failing(reachable, has_data), prev) {
        (Some(false), _) => (0, None),
        (Some(true), p) => (
            p.map_or(0, |p| p.consecutive_failures).saturating_add(1),
            p.and_then(|p| p.failing_since).or(Some(now)),
        ),
        (None, p) => (p.map_or(0, |p| p.consecutive_failures), p.and_then(|p| p.failing_since)),
    };
    TargetHealth {
        name: name.to_owned(),
        healthy,
        reachable,
        has_data,
        consecutive_failures: failures,
        failing_since: since,
        lag_events: exact
            .and_then(|t| t.position.lag_events)
            .or_else(|| seen.iter().filter_map(|t| t.position.lag_events).min()),
        lag_seconds: exact.and_then(|t| t.position.lag_seconds),
        generation: seen
            .iter()
            .filter_map(|t| t.position.generation)
            .max()
            .or(exact.and_then(|t| t.position.generation)),
    }
}

/// The part of a view that should wake the controller when it changes: each target's health, whether it
/// answers and holds data, its failure count up to the failover threshold and whether it is within the lag bound; which target each
/// pod serves; rebuild progress in 5 % steps; whether health is known at all. Lag itself is left out,
/// so steady traffic wakes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest(Vec<String>);

pub fn digest(view: &HealthView, threshold: u32, max_lag: i64) -> Digest {
    let mut parts = vec![format!("known={}", view.problem.is_none())];
    for t in &view.targets {
        parts.push(format!(
            "{} {:?} {:?} {:?} {} {:?}",
            t.name,
            t.healthy,
            t.reachable,
            t.has_data,
            t.consecutive_failures.min(threshold),
            t.lag_events.map(|l| l <= max_lag)
        ));
    }
    parts.extend(view.read_pods.iter().map(|p| format!("{} {:?}", p.endpoint, p.active)));
    for (target, r) in &view.rebuilds {
        let step = r.done.saturating_mul(20).checked_div(r.total).unwrap_or(20);
        parts.push(format!("{target} {:?} {:?} {step}", r.run_id, r.stage));
    }
    Digest(parts)
}

/// The rebuild progress a view holds for `run_id`, if the projector reported it.
pub fn progress_of<'a>(
    view: Option<&'a HealthView>,
    target: &str,
    run_id: &str,
) -> Option<&'a RebuildProgress> {
    view.and_then(|v| v.rebuilds.get(target)).filter(|r| r.run_id.as_deref() == Some(run_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::admin::{Breaker, HomeCache, ReadTarget, TargetPosition};

    fn pod(active: &str, healthy: &[(&str, bool)]) -> Option<ReadApiProjections> {
        let targets = healthy
            .iter()
            .map(|(n, h)| ReadTarget {
                name: (*n).into(),
                active: *n == active,
                healthy: *h,
                reason: None,
                reachable: *h,
                breaker: Breaker::Closed,
                position: TargetPosition {
                    generation: Some(1),
                    lag_events: Some(0),
                    lag_seconds: Some(0.0),
                    ..TargetPosition::default()
                },
                error: None,
                home_cache: HomeCache::default(),
            })
            .collect();
        Some(ReadApiProjections { active: active.into(), targets })
    }

    #[test]
    fn failures_are_counted_by_majority_and_not_at_all_when_no_pod_answers() {
        let names = vec!["p".to_owned(), "s".to_owned()];
        let now = Utc::now();
        let failing = Poll {
            read: vec![
                ("a".into(), pod("p", &[("p", false), ("s", true)])),
                ("b".into(), pod("p", &[("p", false), ("s", true)])),
                ("c".into(), pod("p", &[("p", true), ("s", true)])),
            ],
            ..Poll::default()
        };
        let v1 = fold(None, &failing, &names, now);
        let v2 = fold(Some(&v1), &failing, &names, now);
        assert_eq!(
            (v2.target("p").unwrap().healthy, v2.target("p").unwrap().consecutive_failures),
            (Some(false), 2)
        );
        assert_eq!(v2.target("p").unwrap().failing_since, Some(now));
        let silent = Poll { read: vec![("a".into(), None)], ..Poll::default() };
        let v3 = fold(Some(&v2), &silent, &names, now);
        assert_eq!(v3.target("p").unwrap().healthy, None, "unknown, not assumed");
        assert_eq!(v3.target("p").unwrap().consecutive_failures, 2, "unknown polls count nothing");
        assert!(v3.problem.as_deref().is_some_and(|p| p.contains("answered")));
        let none = fold(Some(&v3), &Poll::default(), &names, now);
        assert_eq!(none.problem.as_deref(), Some("no ready read API endpoints"));
    }

    #[test]
    fn the_digest_ignores_lag_within_bounds_but_not_crossing_them() {
        let names = vec!["p".to_owned()];
        let mut poll = Poll { read: vec![("a".into(), pod("p", &[("p", true)]))], ..Poll::default() };
        let v = fold(None, &poll, &names, Utc::now());
        let mut moved = v.clone();
        moved.targets[0].lag_events = Some(40);
        assert_eq!(digest(&v, 3, 100), digest(&moved, 3, 100));
        moved.targets[0].lag_events = Some(400);
        assert_ne!(digest(&v, 3, 100), digest(&moved, 3, 100));
        poll.read[0].1 = pod("s", &[("p", true)]);
        assert_ne!(
            digest(&v, 3, 100),
            digest(&fold(None, &poll, &names, Utc::now()), 3, 100),
            "a pod's active target"
        );
    }
}
