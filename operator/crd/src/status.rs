//! What the operator observed and did: `SocialCluster.status`. Written only by the operator, as a whole
//! (server-side apply, one field manager), so a field it leaves out is gone rather than left over.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upper bound for counters and sizes in status (JSON numbers stay exact up to 2^53).
pub const MAX_COUNT: i64 = 9_007_199_254_740_991;

/// Defines a string enum with its CRD schema and its name as written.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => stringify!($variant)),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// The cluster's phase, as `kubectl get socialclusters` shows it.
    Phase {
        /// Nothing observed yet.
        Pending,
        /// Components are being created or rolled out.
        Provisioning,
        /// Every component ready and the primary projection target healthy.
        Available,
        /// Serving, but something needs attention (see the `Degraded` condition).
        Degraded,
        /// The read APIs are being moved to another projection target.
        FailingOver,
        /// A projection target is being rebuilt.
        Rebuilding,
        /// `spec.paused`: the operator reports but changes nothing.
        Paused,
        /// The spec cannot be applied (see `message`).
        Invalid,
    }
}

string_enum! {
    /// The kinds of condition the operator reports.
    ConditionType { Available, Progressing, Degraded, FailingOver, Rebuilding }
}

string_enum! {
    /// A condition's status.
    ConditionStatus { True, False, Unknown }
}

string_enum! {
    /// Why a condition has its status (machine-readable; the message says more).
    Reason {
        AllReady,
        ComponentsNotReady,
        Stable,
        RollingOut,
        InvalidSpec,
        Paused,
        Healthy,
        /// No read API or projector pod could be asked about projection health.
        HealthUnknown,
        PrimaryFailing,
        StandbyFailing,
        /// A target is further behind the event store than the failover policy's `maxLagEvents`.
        Lagging,
        NoHealthyStandby,
        NoFailover,
        PrimaryFailed,
        Switchover,
        Completed,
        Aborted,
        JobPending,
        JobRunning,
        Idle,
    }
}

string_enum! {
    /// Why the primary projection target changed.
    FailoverReason { PrimaryFailed, Switchover }
}

string_enum! {
    /// Where a rebuild is.
    RebuildPhase {
        /// Its Job is asked for and not seen running yet.
        Pending,
        Running,
        Succeeded,
        Failed,
    }
}

impl RebuildPhase {
    pub fn is_active(self) -> bool {
        matches!(self, RebuildPhase::Pending | RebuildPhase::Running)
    }
}

/// What the operator observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocialClusterStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Available`, `Progressing`, `Degraded`, `FailingOver`, `Rebuilding`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Ready pods over desired pods, all components together (e.g. `5/5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub ready: Option<String>,
    /// Ready and desired replicas per component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsStatus>,
    /// The projection target the read APIs use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 31))]
    pub current_primary: Option<String>,
    /// When `currentPrimary` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub current_primary_timestamp: Option<String>,
    /// During a failover or switchover: the target the read APIs are being moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 31))]
    pub target_primary: Option<String>,
    /// When `targetPrimary` was set (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub target_primary_timestamp: Option<String>,
    /// The last completed failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// Health of each projection target as last observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub projections: Vec<ProjectionHealth>,
    /// The current or last rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildStatus>,
    /// The last `spec.rebuild.token` acted on (a token present when the cluster was created is recorded
    /// without a rebuild: only a change asks for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub handled_rebuild_token: Option<String>,
    /// The last `spec.switchover.target` acted on (so it is not repeated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 31))]
    pub handled_switchover: Option<String>,
    /// Why the spec cannot be applied, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
}

/// One condition, as `metav1.Condition` (its field names), with typed values.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    /// What a person should know.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(length(max = 64))]
    pub last_transition_time: String,
    /// The spec generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub observed_generation: Option<i64>,
}

/// Replicas per component.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_api: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingester: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_api: Option<ComponentStatus>,
}

/// Replicas of one component.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods ready.
    #[schemars(range(min = 0, max = 10_000))]
    pub ready_replicas: i32,
    /// Pods wanted.
    #[schemars(range(min = 0, max = 10_000))]
    pub replicas: i32,
}

/// One failover or switchover.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// The old primary.
    #[schemars(length(max = 31))]
    pub from: String,
    /// The new primary.
    #[schemars(length(max = 31))]
    pub to: String,
    pub reason: FailoverReason,
    /// When it completed (RFC 3339).
    #[schemars(length(max = 64))]
    pub at: String,
    /// Milliseconds from the decision to every read API pod switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub duration_ms: Option<i64>,
    /// Whether the old primary, back without its data, was given its automatic rebuild (once per
    /// failover; if that rebuild fails, a new `spec.rebuild` token asks for another).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuilt: bool,
}

/// Health of one projection target. Lag itself changes all the time and lives in the operator's
/// metrics (`socialnet_operator_projection_lag_events`); status says only whether it is within bounds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionHealth {
    /// Target name.
    #[schemars(length(max = 31))]
    pub name: String,
    /// Whether the read API pods can serve from it.
    pub healthy: bool,
    /// Whether it answers at all (it may answer and be unusable: empty, or far behind).
    pub reachable: bool,
    /// Consecutive failed checks, counted up to the failover policy's threshold.
    #[schemars(range(min = 0, max = 20))]
    pub consecutive_failures: i32,
    /// Within the policy's `maxLagEvents` of the event store's head, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up: Option<bool>,
    /// The target's generation, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub generation: Option<i64>,
    /// When the current run of failures started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub failing_since: Option<String>,
}

/// The state of a rebuild.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildStatus {
    /// The target being (or last) rebuilt.
    #[schemars(length(max = 31))]
    pub target: String,
    /// The request token this rebuild answers (for an automatic rebuild: when its failover happened).
    #[schemars(length(max = 64))]
    pub token: String,
    pub phase: RebuildPhase,
    /// The Job running it.
    #[schemars(length(max = 63))]
    pub job: String,
    /// Started by the operator after the target came back empty, not by a request.
    #[serde(default)]
    pub automatic: bool,
    /// Events done / total, as the rebuild reports them (e.g. `120000/1000000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 48))]
    pub progress: Option<String>,
    /// Events replayed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub events_done: Option<i64>,
    /// Events to replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub events_total: Option<i64>,
    /// Replay rate when last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub events_per_second: Option<i64>,
    /// Seconds left at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub eta_seconds: Option<i64>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub finished_at: Option<String>,
    /// What went wrong, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub error: Option<String>,
}
