//! Status conditions and the phase, computed from what the plan decided.

use chrono::{DateTime, Utc};
use socialnet_crd::{Condition, ConditionStatus, ConditionType, Phase, Reason, SocialClusterStatus};

/// Set (or update) a condition, keeping its transition time while its status does not change.
pub fn set(
    status: &mut SocialClusterStatus,
    type_: ConditionType,
    value: ConditionStatus,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let previous = status.conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == value => p.last_transition_time.clone(),
        _ => rfc3339(now),
    };
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_,
        status: value,
        reason,
        message: truncate(message, 1024),
        observed_generation: generation,
        last_transition_time,
    });
    status.conditions.sort_by_key(|c| c.type_);
}

/// `True` or `False`.
pub fn of(ok: bool) -> ConditionStatus {
    if ok { ConditionStatus::True } else { ConditionStatus::False }
}

pub fn is_true(status: &SocialClusterStatus, type_: ConditionType) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
}

/// The phase shown in `kubectl get socialclusters`.
pub fn phase(status: &SocialClusterStatus, paused: bool, invalid: bool) -> Phase {
    if invalid {
        Phase::Invalid
    } else if paused {
        Phase::Paused
    } else if is_true(status, ConditionType::FailingOver) {
        Phase::FailingOver
    } else if is_true(status, ConditionType::Rebuilding) {
        Phase::Rebuilding
    } else if is_true(status, ConditionType::Degraded) {
        Phase::Degraded
    } else if is_true(status, ConditionType::Available) {
        Phase::Available
    } else if status.components.is_none() {
        Phase::Pending
    } else {
        Phase::Provisioning
    }
}

/// Time as status writes it (RFC 3339, seconds).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Time as status writes it, to the millisecond (for durations measured in milliseconds).
pub fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// At most `max` bytes, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// chrono's time as the Kubernetes types' (jiff) time.
pub fn to_jiff(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}
