//! The failover decision, as a pure function of the policy, the observed health of each projection target
//! and the clock. The primary fails over when it stopped answering or lost its data, for the policy's
//! number of checks and delay; a primary that is only behind does not (the read APIs already read the
//! most caught-up target meanwhile). It never names two primaries: it returns at most one target to
//! promote, and only a healthy standby within the lag bound, the most caught up first. Unknown health
//! decides nothing.

use crate::health::TargetHealth;
use chrono::{DateTime, Utc};
use socialnet_crd::{FailoverPolicy, FailoverReason};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do.
    Stay,
    /// The primary is failing but the policy says not yet; look again after `recheck` if given.
    Wait { why: String, recheck: Option<Duration> },
    /// Failing over is needed but no standby qualifies.
    NoCandidate(String),
    /// Promote this target.
    Promote { to: String, reason: FailoverReason },
}

fn wait(why: String) -> Decision {
    Decision::Wait { why, recheck: None }
}

/// Decide whether to change the primary.
pub fn decide(
    policy: &FailoverPolicy,
    paused: bool,
    current: &str,
    health: &[TargetHealth],
    switchover: Option<&str>,
    now: DateTime<Utc>,
) -> Decision {
    if paused {
        return wait("paused".into());
    }
    let find = |n: &str| health.iter().find(|h| h.name == n);
    if let Some(to) = switchover.filter(|t| *t != current) {
        return match find(to).and_then(|h| h.healthy) {
            Some(true) => Decision::Promote { to: to.to_owned(), reason: FailoverReason::Switchover },
            Some(false) => wait(format!("switchover target {to} is not healthy")),
            None => wait(format!("switchover target {to}: health unknown")),
        };
    }
    let Some((primary, failing)) = find(current).and_then(|p| Some((p, p.failing()?))) else {
        return wait(format!("health of primary {current} unknown"));
    };
    if !failing || !policy.enabled {
        return Decision::Stay;
    }
    let threshold = u32::try_from(policy.failure_threshold).unwrap_or(1);
    if primary.consecutive_failures < threshold {
        return wait(format!(
            "primary {current} failed {} of {threshold} checks",
            primary.consecutive_failures
        ));
    }
    let delay = chrono::Duration::seconds(i64::from(policy.delay_seconds));
    if let Some(since) = primary.failing_since
        && now.signed_duration_since(since) < delay
    {
        let left = (since + delay).signed_duration_since(now).to_std().unwrap_or_default();
        return Decision::Wait {
            why: format!("primary {current} failing, within the {}s delay", policy.delay_seconds),
            recheck: Some(left),
        };
    }
    match best_standby(policy, current, health) {
        Some(to) => Decision::Promote { to, reason: FailoverReason::PrimaryFailed },
        None => Decision::NoCandidate(format!(
            "primary {current} failed and no healthy standby within {} events",
            policy.max_lag_events
        )),
    }
}

fn best_standby(policy: &FailoverPolicy, current: &str, health: &[TargetHealth]) -> Option<String> {
    let mut candidates: Vec<&TargetHealth> = health
        .iter()
        .filter(|h| h.name != current && h.healthy == Some(true))
        .filter(|h| h.lag_events.is_none_or(|l| l <= policy.max_lag_events))
        .collect();
    candidates.sort_by(|a, b| {
        a.lag_events.unwrap_or(i64::MAX).cmp(&b.lag_events.unwrap_or(i64::MAX)).then(a.name.cmp(&b.name))
    });
    candidates.first().map(|c| c.name.clone())
}

/// A target that was failed over from and now answers again but is not usable (it came back empty, or
/// far behind) needs a rebuild.
pub fn needs_rebuild(health: &TargetHealth) -> bool {
    health.reachable == Some(true) && health.healthy == Some(false)
}
