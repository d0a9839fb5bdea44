//! The failover decision, as a pure function of the policy, the observed health of each projection target
//! and the clock. It never names two primaries: it returns at most one target to promote, and only a
//! healthy standby within the lag bound, the most caught up first.

use chrono::{DateTime, Utc};
use socialnet_crd::{FailoverPolicy, ProjectionHealth};

/// One health sample of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub healthy: bool,
    /// The target answers (it may still be unusable: empty, or far behind).
    pub reachable: bool,
    pub lag_events: Option<i64>,
    pub generation: Option<i64>,
}

/// Fold new samples into the running health (consecutive failures, when failing started).
pub fn observe(
    previous: &[ProjectionHealth],
    samples: &[Sample],
    now: DateTime<Utc>,
) -> Vec<ProjectionHealth> {
    samples
        .iter()
        .map(|s| {
            let prev = previous.iter().find(|p| p.name == s.name);
            if s.healthy {
                ProjectionHealth {
                    name: s.name.clone(),
                    healthy: true,
                    consecutive_failures: 0,
                    lag_events: s.lag_events,
                    // Filled in from the projector's view by the caller.
                    lag_seconds: None,
                    generation: s.generation,
                    failing_since: None,
                }
            } else {
                ProjectionHealth {
                    name: s.name.clone(),
                    healthy: false,
                    consecutive_failures: prev.map(|p| p.consecutive_failures).unwrap_or(0).saturating_add(1),
                    lag_events: s.lag_events,
                    lag_seconds: None,
                    generation: s.generation,
                    failing_since: prev
                        .and_then(|p| p.failing_since.clone())
                        .or_else(|| Some(now.to_rfc3339())),
                }
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Stay,
    /// The primary is failing but the policy says not yet (threshold or delay), or paused.
    Wait(String),
    /// Failing over is needed but no standby qualifies.
    NoCandidate(String),
    /// Promote this target (reason: `PrimaryFailed` or `Switchover`).
    Promote { to: String, reason: &'static str },
}

/// Decide whether to change the primary.
pub fn decide(
    policy: &FailoverPolicy,
    paused: bool,
    current: &str,
    health: &[ProjectionHealth],
    switchover: Option<&str>,
    now: DateTime<Utc>,
) -> Decision {
    if paused {
        return Decision::Wait("paused".into());
    }
    let find = |n: &str| health.iter().find(|h| h.name == n);
    if let Some(to) = switchover.filter(|t| *t != current) {
        return match find(to) {
            Some(h) if h.healthy => Decision::Promote { to: to.to_owned(), reason: "Switchover" },
            Some(_) => Decision::Wait(format!("switchover target {to} is not healthy")),
            None => Decision::Wait(format!("switchover target {to} is unknown")),
        };
    }
    let Some(primary) = find(current) else {
        return Decision::Wait(format!("no health known for primary {current}"));
    };
    if primary.healthy || !policy.enabled {
        return Decision::Stay;
    }
    if primary.consecutive_failures < policy.failure_threshold {
        return Decision::Wait(format!(
            "primary {current} failed {} of {} checks",
            primary.consecutive_failures, policy.failure_threshold
        ));
    }
    let since = primary.failing_since.as_deref().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    if let Some(since) = since {
        let waited = now.signed_duration_since(since.with_timezone(&Utc));
        if waited < chrono::Duration::seconds(i64::from(policy.delay_seconds)) {
            return Decision::Wait(format!(
                "primary {current} failing for {}s of the {}s delay",
                waited.num_seconds(),
                policy.delay_seconds
            ));
        }
    }
    let mut candidates: Vec<&ProjectionHealth> = health
        .iter()
        .filter(|h| h.name != current && h.healthy && h.lag_events.is_none_or(|l| l <= policy.max_lag_events))
        .collect();
    candidates.sort_by(|a, b| {
        a.lag_events.unwrap_or(i64::MAX).cmp(&b.lag_events.unwrap_or(i64::MAX)).then(a.name.cmp(&b.name))
    });
    match candidates.first() {
        Some(c) => Decision::Promote { to: c.name.clone(), reason: "PrimaryFailed" },
        None => Decision::NoCandidate(format!(
            "primary {current} failed and no healthy standby within {} events",
            policy.max_lag_events
        )),
    }
}

/// A target that was failed over from and now answers again but is not usable (it came back empty, or
/// far behind) needs a rebuild.
pub fn needs_rebuild(sample: &Sample, was_failed_over_from: bool) -> bool {
    was_failed_over_from && sample.reachable && !sample.healthy
}
