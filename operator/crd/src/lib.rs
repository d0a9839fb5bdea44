//! The `SocialCluster` custom resource (`socialnet.io/v1alpha1`). These Rust types are the source of truth:
//! the CRD YAML in `crds/` is generated from them (`socialnet-operator crd`), their `///` docs become the
//! schema's descriptions, and their bounds and CEL rules are enforced by the API server (the CEL rules are
//! also checked locally in tests). Every string has a length bound (or is an enum), every list a size
//! bound and every number a range, so the API server's CEL cost estimate stays small. The operator reads
//! the spec and writes the status; platform engineers write the spec.

mod quantity;
mod status;

pub use quantity::{QUANTITY_PATTERN, Quantity, ResourceList, Resources};
pub use status::*;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Kubernetes object names (DNS subdomains).
const DNS_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Projection target names.
const TARGET_NAME: &str = r"^[a-z][a-z0-9-]{0,30}$";

/// A socialnet deployment: its components, the stores it uses, its projection targets and their failover
/// policy, and requests for rebuilds and switchovers.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "socialnet.io",
    version = "v1alpha1",
    kind = "SocialCluster",
    namespaced,
    status = "SocialClusterStatus",
    shortname = "snc",
    category = "socialnet",
    doc = "A socialnet deployment, run by the socialnet operator.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.currentPrimary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Rebuild","type":"string","jsonPath":".status.rebuild.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.rebuild.progress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.rebuild) || self.projections.targets.exists(t, t.name == self.rebuild.target)").message("rebuild.target must name one of projections.targets"),
    validation = Rule::new("!has(self.switchover) || self.projections.targets.exists(t, t.name == self.switchover.target)").message("switchover.target must name one of projections.targets"),
    validation = Rule::new("!has(self.projections.primary) || self.projections.targets.exists(t, t.name == self.projections.primary)").message("projections.primary must name one of projections.targets"),
    validation = Rule::new("!has(self.queue.partitions) || self.queue.partitions <= 1 || !has(self.ingester) || (!has(self.ingester.autoscaling) && (!has(self.ingester.replicas) || self.ingester.replicas <= self.queue.partitions))").message("on a partitioned queue the ingester cannot autoscale and runs at most one replica per partition")
)]
#[serde(rename_all = "camelCase")]
pub struct SocialClusterSpec {
    /// Container image that every component runs (the `socialnet` binary), e.g. `ghcr.io/socialnet/socialnet:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Image pull policy for every component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
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
    /// Ask for a rebuild of one projection target: change `token` to start a new one. A token already
    /// present when the cluster is created is recorded, not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildRequest>,
    /// Ask for a manual switchover: the read APIs move to this target (the same path as a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverRequest>,
    /// Stop making changes to this cluster (reconcile reports status only; no failover).
    #[serde(default)]
    pub paused: bool,
}

/// When the kubelet pulls the image.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Size and resources of one component.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Number of pods when autoscaling is off (0 to 100).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the component's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
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
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most pods (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Target average CPU utilization in percent (10 to 100).
    #[serde(default = "default_cpu")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: i32,
}

fn default_cpu() -> i32 {
    70
}

/// A key in a Secret of the cluster's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_NAME))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
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
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// NATS URL of the primary JetStream server, or the URLs of several nodes of one NATS cluster
    /// separated by commas.
    pub primary: SecretKeyRef,
    /// NATS URL of the secondary JetStream server (used while the primary is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SecretKeyRef>,
    /// Command partitions (1 to 256): a command goes to partition hash(issuer) mod N, each partition is
    /// consumed by one ingester at a time. Changing it while commands are queued reorders them: drain first.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub partitions: i32,
    /// Copies of each stream on a JetStream cluster: 1, or 3 on a 3-node cluster (survives the loss of a node).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 5))]
    pub stream_replicas: i32,
}

/// The gateway's policy. Every field is optional; the defaults suit a small public deployment.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPolicySpec {
    /// Reads per second per user (bursts of twice as many). Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub reads_per_user: Option<i32>,
    /// Writes per second per user (bursts of twice as many). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub writes_per_user: Option<i32>,
    /// Requests per second per client IP, reads and writes each (bursts of twice as many). Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_ip: Option<i32>,
    /// The header a trusted proxy in front of the gateway sets to the client IP (e.g. `x-forwarded-for`).
    /// Unset: the peer address is the client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9-]+$"))]
    pub trusted_proxy_header: Option<String>,
    /// Origins allowed to call the API from a browser: exact origins (`https://app.example`) or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253), pattern(r"^(\*|https?://[^/]+)$")))]
    pub cors_allowed_origins: Vec<String>,
    /// A Redis (URL in a Secret) where the gateway replicas share their rate limits. Unset: each replica
    /// limits on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_redis: Option<SecretKeyRef>,
    /// An OpenTelemetry collector (OTLP/HTTP base URL, e.g. `http://otel-collector:4318`) that receives a
    /// span per request from the gateway and from the write and read APIs: one trace per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(r"^https?://[^\s]+$"))]
    pub otlp_endpoint: Option<String>,
    /// Percent of successful requests the gateway's access log keeps (every failure is always logged).
    /// Default 100. Writing a line costs a busy gateway about a sixth of its CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
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
    #[schemars(length(min = 1, max = 512))]
    pub issuer: Option<String>,
    /// Required `aud` claim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub audience: Option<String>,
}

/// Projection targets and their failover policy.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionsSpec {
    /// The targets (1 to 8, names unique; two or more for failover). The first is the initial primary
    /// unless `primary` says otherwise.
    #[schemars(length(min = 1, max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub targets: Vec<ProjectionTargetSpec>,
    /// The initial primary target (defaults to the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 31), pattern(TARGET_NAME))]
    pub primary: Option<String>,
    /// Authors with more followers than this are merged into homes at read time instead of fanned out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub fanout_threshold: Option<i64>,
    /// When the operator promotes a standby.
    #[serde(default)]
    pub failover: FailoverPolicy,
}

/// One projection target: a Redis (and optionally MongoDB documents beside it).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct ProjectionTargetSpec {
    /// Target name: 1 to 31 lower-case letters, digits and dashes, starting with a letter (`primary`, `standby`).
    #[schemars(length(min = 1, max = 31), pattern(TARGET_NAME))]
    pub name: String,
    /// Redis URL of the target (`redis://host:port`); for `mode: Cluster`, the seed nodes of the Redis
    /// Cluster as `host:port` separated by commas.
    pub redis: SecretKeyRef,
    /// A single Redis (default) or a Redis Cluster (the model partitioned over its masters).
    #[serde(default)]
    pub mode: RedisMode,
    /// MongoDB URL for document projections beside this target (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<SecretKeyRef>,
}

/// How a projection target's Redis runs.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RedisMode {
    #[default]
    Standalone,
    Cluster,
}

/// Automatic failover of the primary projection target.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicy {
    /// Promote a standby automatically when the primary fails.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consecutive failed health checks (one every half second) before the primary counts as failed (1 to 20).
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 20))]
    pub failure_threshold: i32,
    /// Seconds the primary must stay failed before the promotion (0 to 300).
    #[serde(default = "default_delay")]
    #[schemars(range(min = 0, max = 300))]
    pub delay_seconds: i32,
    /// A standby further behind than this many events is not promoted.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub max_lag_events: i64,
}

fn yes() -> bool {
    true
}
fn default_threshold() -> i32 {
    3
}
fn default_delay() -> i32 {
    1
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
    #[schemars(length(min = 1, max = 31), pattern(TARGET_NAME))]
    pub target: String,
    /// Any string; a new value asks for a new rebuild.
    #[schemars(length(min = 1, max = 63))]
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
    #[schemars(length(min = 1, max = 31), pattern(TARGET_NAME))]
    pub target: String,
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
