//! Status conditions and the phase, computed from what reconcile observed.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use socialnet_crd::SocialClusterStatus;

/// Set (or update) a condition, keeping its transition time when the status does not change.
pub fn set(
    status: &mut SocialClusterStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let value = if ok { "True" } else { "False" };
    let previous = status.conditions.iter().find(|c| c.type_ == type_).cloned();
    let last_transition_time = match &previous {
        Some(p) if p.status == value => p.last_transition_time.clone(),
        _ => Time(to_jiff(now)),
    };
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.to_owned(),
        status: value.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    });
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

pub fn is_true(status: &SocialClusterStatus, type_: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The phase shown in `kubectl get socialclusters`.
pub fn phase(status: &SocialClusterStatus, paused: bool, invalid: bool) -> &'static str {
    if invalid {
        "Invalid"
    } else if paused {
        "Paused"
    } else if is_true(status, "FailingOver") {
        "FailingOver"
    } else if is_true(status, "Rebuilding") {
        "Rebuilding"
    } else if is_true(status, "Degraded") {
        "Degraded"
    } else if is_true(status, "Available") {
        "Available"
    } else if status.components.is_empty() {
        "Pending"
    } else {
        "Provisioning"
    }
}

/// chrono's time as the Kubernetes types' (jiff) time.
pub fn to_jiff(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}
