//! The `SocialCluster` custom resource (`socialnet.io/v1alpha1`). These Rust types are the source of truth:
//! the CRD YAML in `crds/` is generated from them (`socialnet-operator crd`), their `///` docs become the
//! schema's descriptions, and their CEL rules are enforced by the API server (and checked locally in tests).
//! The operator reads the spec and writes the status; platform engineers write the spec.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A socialnet deployment: its components, the stores it uses, its projection targets and their failover
/// policy, and requests for rebuilds and switchovers.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "socialnet.io",
    version = "v1alpha1",
    kind = "SocialCluster",
    namespaced,
    status = "SocialClusterStatus",
    shortname = "sc",
    shortname = "socialcluster",
    category = "socialnet",
    doc = "A socialnet deployment, run by the socialnet operator.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.currentPrimary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Rebuild","type":"string","jsonPath":".status.rebuild.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    cel,
    validation = Rule::new("self.projections.targets.all(t, self.projections.targets.exists_one(u, u.name == t.name))").message("projection target names must be unique"),
    validation = Rule::new("!has(self.rebuild) || self.projections.targets.exists(t, t.name == self.rebuild.target)").message("rebuild.target must name one of projections.targets"),
    validation = Rule::new("!has(self.switchover) || self.projections.targets.exists(t, t.name == self.switchover.target)").message("switchover.target must name one of projections.targets"),
    validation = Rule::new("!has(self.projections.primary) || self.projections.targets.exists(t, t.name == self.projections.primary)").message("projections.primary must name one of projections.targets")
)]
#[serde(rename_all = "camelCase")]
pub struct SocialClusterSpec {
    /// Container image that every component runs (the `socialnet` binary), e.g. `ghcr.io/socialnet/socialnet:0.1.0`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("image must not be empty"))]
    pub image: String,
    /// Image pull policy for every component (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The API gateway (the one entry point for clients).
    #[serde(default)]
    pub gateway: ComponentSpec,
    /// What the gateway enforces and reports: rate limits, CORS, shared limits, span export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_policy: Option<GatewayPolicySpec>,
    /// The write API.
    #[serde(default)]
    pub write_api: ComponentSpec,
    /// The ingester (queue to event store).
    #[serde(default)]
    pub ingester: ComponentSpec,
    /// The projector (event store to projection targets). Runs one replica: it is the single writer of its targets.
    #[serde(default = "ComponentSpec::single")]
    pub projector: ComponentSpec,
    /// The read API.
    #[serde(default)]
    pub read_api: ComponentSpec,
    /// The PostgreSQL event store: primary and optional backup.
    pub event_store: EventStoreSpec,
    /// The NATS JetStream command queue: primary and optional secondary.
    pub queue: QueueSpec,
    /// Token verification.
    pub auth: AuthSpec,
    /// Projection targets and their failover policy.
    pub projections: ProjectionsSpec,
    /// Ask for a rebuild of one projection target: change `token` to start a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildRequest>,
    /// Ask for a manual switchover: the read APIs move to this target (the same path as a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverRequest>,
    /// Stop making changes to this cluster (reconcile reports status only; no failover).
    #[serde(default)]
    pub paused: bool,
}

/// Size and resources of one component.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Number of pods when autoscaling is off (0 to 100).
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be between 0 and 100"))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the component's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scale on CPU with a HorizontalPodAutoscaler; `replicas` is then left to the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

fn one() -> i32 {
    1
}

impl Default for ComponentSpec {
    fn default() -> Self {
        Self { replicas: 1, resources: None, autoscaling: None }
    }
}

impl ComponentSpec {
    fn single() -> Self {
        Self::default()
    }
}

/// CPU-based autoscaling bounds.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest pods (1 to 100).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("minReplicas must be between 1 and 100"))]
    pub min_replicas: i32,
    /// Most pods (1 to 100).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("maxReplicas must be between 1 and 100"))]
    pub max_replicas: i32,
    /// Target average CPU utilization in percent (10 to 100).
    #[serde(default = "default_cpu")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 100").message("targetCPUUtilization must be between 10 and 100"))]
    pub target_cpu_utilization: i32,
}

fn default_cpu() -> i32 {
    70
}

/// A key in a Secret of the cluster's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    /// Secret name.
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret name must not be empty"))]
    pub name: String,
    /// Key within the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret key must not be empty"))]
    pub key: String,
}

/// Where the event store is: connection URLs come from Secrets, never from the spec.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct EventStoreSpec {
    /// PostgreSQL URL of the primary event store.
    pub primary: SecretKeyRef,
    /// PostgreSQL URL of the backup event store (parks commands while the primary is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<SecretKeyRef>,
}

/// Where the command queue is.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct QueueSpec {
    /// NATS URL of the primary JetStream server.
    pub primary: SecretKeyRef,
    /// NATS URL of the secondary JetStream server (used while the primary is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SecretKeyRef>,
}

/// The gateway's policy. Every field is optional; the defaults suit a small public deployment.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPolicySpec {
    /// Reads per second per user (bursts of twice as many). Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("readsPerUser must be between 1 and 1000000"))]
    pub reads_per_user: Option<i32>,
    /// Writes per second per user (bursts of twice as many). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("writesPerUser must be between 1 and 1000000"))]
    pub writes_per_user: Option<i32>,
    /// Requests per second per client IP, reads and writes each (bursts of twice as many). Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("requestsPerIp must be between 1 and 1000000"))]
    pub requests_per_ip: Option<i32>,
    /// The header a trusted proxy in front of the gateway sets to the client IP (e.g. `x-forwarded-for`).
    /// Unset: the peer address is the client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxy_header: Option<String>,
    /// Origins allowed to call the API from a browser: exact origins (`https://app.example`) or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(o, o == '*' || o.matches('^https?://[^/]+$'))").message("corsAllowedOrigins are '*' or scheme://host[:port] without a path"))]
    pub cors_allowed_origins: Vec<String>,
    /// A Redis (URL in a Secret) where the gateway replicas share their rate limits. Unset: each replica
    /// limits on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis: Option<SecretKeyRef>,
    /// An OpenTelemetry collector (OTLP/HTTP base URL, e.g. `http://otel-collector:4318`) that receives a
    /// span per request from the gateway and from the write and read APIs: one trace per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("otlpEndpoint must be an http or https URL"))]
    pub otlp_endpoint: Option<String>,
    /// Percent of successful requests the gateway's access log keeps (every failure is always logged).
    /// Default 100. Writing a line costs a busy gateway about a sixth of its CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("accessLogSuccessPercent must be between 0 and 100"))]
    pub access_log_success_percent: Option<i32>,
}

/// Token verification settings.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The HS256 token secret (at least 16 characters).
    pub jwt_secret: SecretKeyRef,
    /// Required `iss` claim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Projection targets and their failover policy.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionsSpec {
    /// The targets (at least one; two or more for failover). The first is the initial primary unless `primary` says otherwise.
    #[x_kube(validation = Rule::new("self.size() >= 1 && self.size() <= 8").message("give 1 to 8 projection targets"))]
    pub targets: Vec<ProjectionTargetSpec>,
    /// The initial primary target (defaults to the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Authors with more followers than this are merged into homes at read time instead of fanned out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout_threshold: Option<i64>,
    /// When the operator promotes a standby.
    #[serde(default)]
    pub failover: FailoverPolicy,
}

/// One projection target: a Redis (and optionally MongoDB documents beside it).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct ProjectionTargetSpec {
    /// Target name (lower case letters, digits and dashes), e.g. `primary`, `standby`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9-]{0,30}$')").message("target names are 1-31 lower-case letters, digits or dashes, starting with a letter"))]
    pub name: String,
    /// Redis URL of the target.
    pub redis: SecretKeyRef,
    /// MongoDB URL for document projections beside this target (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<SecretKeyRef>,
}

/// Automatic failover of the primary projection target.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicy {
    /// Promote a standby automatically when the primary fails.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consecutive failed health checks before the primary counts as failed (1 to 20).
    #[serde(default = "default_threshold")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 20").message("failureThreshold must be between 1 and 20"))]
    pub failure_threshold: i32,
    /// Seconds the primary must stay failed before the promotion (0 to 300).
    #[serde(default = "default_delay")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 300").message("delaySeconds must be between 0 and 300"))]
    pub delay_seconds: i32,
    /// A standby further behind than this many events is not promoted.
    #[serde(default = "default_max_lag")]
    pub max_lag_events: i64,
}

fn yes() -> bool {
    true
}
fn default_threshold() -> i32 {
    3
}
fn default_delay() -> i32 {
    2
}
fn default_max_lag() -> i64 {
    10_000
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: default_threshold(),
            delay_seconds: default_delay(),
            max_lag_events: default_max_lag(),
        }
    }
}

/// A rebuild request.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct RebuildRequest {
    /// The target to rebuild.
    pub target: String,
    /// Any string; a new value asks for a new rebuild.
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 63").message("token must be 1 to 63 characters"))]
    pub token: String,
    /// Replay history event by event into the target instead of in memory first: constant memory but
    /// several times slower. Use it when the whole projection does not fit in the rebuild Job's memory
    /// (the Job runs with the projector's resources).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
}

/// A manual switchover request.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct SwitchoverRequest {
    /// The target the read APIs should use.
    pub target: String,
}

/// What the operator observed and did.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SocialClusterStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Provisioning`, `Available`, `Degraded`, `FailingOver`, `Rebuilding`, `Paused` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Available`, `Progressing`, `Degraded`, `FailingOver`, `Rebuilding`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready pods over desired pods, all components together (e.g. `5/5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Ready and desired replicas per component.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    /// The projection target the read APIs use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// When `currentPrimary` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary_timestamp: Option<String>,
    /// During a failover or switchover: `pending`, then the target being promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<String>,
    /// When `targetPrimary` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary_timestamp: Option<String>,
    /// The last completed failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// Health of each projection target as last observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projections: Vec<ProjectionHealth>,
    /// The last rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildStatus>,
    /// The last switchover request handled (so it is not repeated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_switchover: Option<String>,
    /// Why the spec cannot be applied, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Replicas of one component.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods ready.
    pub ready_replicas: i32,
    /// Pods wanted.
    pub replicas: i32,
}

/// One failover or switchover.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct FailoverRecord {
    /// The old primary.
    pub from: String,
    /// The new primary.
    pub to: String,
    /// Why (`PrimaryFailed`, `Switchover`).
    pub reason: String,
    /// When it completed (RFC 3339).
    pub at: String,
    /// Milliseconds from the decision to every read API pod switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Whether the old primary, back without its data, was given its automatic rebuild (once per
    /// failover; if that rebuild fails, a new `spec.rebuild` token asks for another).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuilt: bool,
}

/// Health of one projection target.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionHealth {
    /// Target name.
    pub name: String,
    /// Whether the last check found it healthy.
    pub healthy: bool,
    /// Consecutive failed checks.
    pub consecutive_failures: i32,
    /// Events behind the event store's head, when known (the projector's exact count when it answers,
    /// else the read APIs' estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_events: Option<i64>,
    /// Seconds between the newest event in the store and the last one applied, as the projector reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// The target's generation, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the current run of failures started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
}

/// The state of a rebuild.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebuildStatus {
    /// The target being (or last) rebuilt.
    pub target: String,
    /// The request token this rebuild answers.
    pub token: String,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: String,
    /// The Job running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Progress as the Job reports it (events done / total), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// What went wrong, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Started by the operator after the target came back empty, not by a request.
    #[serde(default)]
    pub automatic: bool,
}

impl SocialClusterSpec {
    /// The target the cluster starts with as primary.
    pub fn initial_primary(&self) -> Option<&str> {
        self.projections
            .primary
            .as_deref()
            .or_else(|| self.projections.targets.first().map(|t| t.name.as_str()))
    }
}
