//! Build: the pure step of the reconcile pipeline. From a `SocialCluster` (and what the operator decided:
//! the active projection target) to the exact objects that should exist: a Deployment and Service per
//! component, optional HPAs (then the Deployment does not set `replicas`), PDBs, and the ConfigMap with
//! the projection targets and the active one. No I/O; unit-tested with YAML fixtures.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use socialnet_crd::{ComponentSpec, SecretKeyRef, SocialCluster};
use std::collections::BTreeMap;

/// The components, in the order they are listed in status.
pub const COMPONENTS: [Component; 5] =
    [Component::Gateway, Component::WriteApi, Component::Ingester, Component::Projector, Component::ReadApi];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Gateway,
    WriteApi,
    Ingester,
    Projector,
    ReadApi,
}

/// Every component listens on this port for its API or its operational routes.
pub const PORT: i32 = 8080;

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::WriteApi => "write-api",
            Component::Ingester => "ingester",
            Component::Projector => "projector",
            Component::ReadApi => "read-api",
        }
    }

    fn spec(self, sc: &SocialCluster) -> &ComponentSpec {
        let s = &sc.spec;
        match self {
            Component::Gateway => &s.gateway,
            Component::WriteApi => &s.write_api,
            Component::Ingester => &s.ingester,
            Component::Projector => &s.projector,
            Component::ReadApi => &s.read_api,
        }
    }

    /// The `socialnet` subcommand.
    fn args(self) -> Vec<String> {
        let v: &[&str] = match self {
            Component::Gateway => &["gateway"],
            Component::WriteApi => &["write-api"],
            Component::Ingester => &["ingester"],
            Component::Projector => &["projector", "run"],
            Component::ReadApi => &["read-api"],
        };
        v.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// Object names for a cluster.
pub fn object_name(sc: &SocialCluster, c: Component) -> String {
    format!("{}-{}", sc.name_any(), c.name())
}

pub fn config_map_name(sc: &SocialCluster) -> String {
    format!("{}-projections", sc.name_any())
}

pub fn labels(sc: &SocialCluster, c: Option<Component>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "socialnet".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), sc.name_any()),
        ("app.kubernetes.io/managed-by".to_owned(), "socialnet-operator".to_owned()),
    ]);
    if let Some(c) = c {
        l.insert("app.kubernetes.io/component".to_owned(), c.name().to_owned());
    }
    l
}

fn selector(sc: &SocialCluster, c: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), sc.name_any()),
        ("app.kubernetes.io/component".to_owned(), c.name().to_owned()),
    ])
}

fn owner(sc: &SocialCluster) -> OwnerReference {
    OwnerReference {
        api_version: "socialnet.io/v1alpha1".into(),
        kind: "SocialCluster".into(),
        name: sc.name_any(),
        uid: sc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn meta(sc: &SocialCluster, name: String, c: Option<Component>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: sc.namespace(),
        labels: Some(labels(sc, c)),
        owner_references: Some(vec![owner(sc)]),
        ..ObjectMeta::default()
    }
}

fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

/// The environment a component needs: its listen address, stores, queue, secrets and targets.
fn env(sc: &SocialCluster, c: Component) -> Vec<EnvVar> {
    let s = &sc.spec;
    let mut env =
        vec![plain_env("SOCIALNET_LISTEN", format!("0.0.0.0:{PORT}")), plain_env("RUST_LOG", "info")];
    let needs_store =
        matches!(c, Component::WriteApi | Component::Ingester | Component::Projector | Component::ReadApi);
    let needs_queue = matches!(c, Component::WriteApi | Component::Ingester);
    let needs_auth = matches!(c, Component::Gateway | Component::WriteApi | Component::ReadApi);
    let needs_targets = matches!(c, Component::Projector | Component::ReadApi);
    if needs_store {
        env.push(secret_env("SOCIALNET_DATABASE_URL", &s.event_store.primary));
        if let Some(b) = &s.event_store.backup {
            env.push(secret_env("SOCIALNET_BACKUP_DATABASE_URL", b));
        }
    }
    if needs_queue {
        env.push(secret_env("SOCIALNET_NATS_URL", &s.queue.primary));
        if let Some(q) = &s.queue.secondary {
            env.push(secret_env("SOCIALNET_NATS_SECONDARY_URL", q));
        }
    }
    if needs_auth {
        env.push(secret_env("SOCIALNET_JWT_SECRET", &s.auth.jwt_secret));
        if let Some(i) = &s.auth.issuer {
            env.push(plain_env("SOCIALNET_JWT_ISSUER", i.clone()));
        }
        if let Some(a) = &s.auth.audience {
            env.push(plain_env("SOCIALNET_JWT_AUDIENCE", a.clone()));
        }
    }
    if needs_targets {
        // Each URL comes from its Secret; SOCIALNET_TARGETS refers to them with $(VAR) expansion.
        let mut parts = Vec::new();
        let mut mongo = Vec::new();
        for t in &s.projections.targets {
            let var = format!("SOCIALNET_REDIS_{}", t.name.to_uppercase().replace('-', "_"));
            env.push(secret_env(&var, &t.redis));
            parts.push(format!("{}=$({var})", t.name));
            if let Some(m) = t.mongodb.as_ref().filter(|_| c == Component::Projector) {
                let mvar = format!("SOCIALNET_MONGO_{}", t.name.to_uppercase().replace('-', "_"));
                env.push(secret_env(&mvar, m));
                mongo.push(format!("{}-docs=$({mvar})", t.name));
            }
        }
        env.push(plain_env("SOCIALNET_TARGETS", parts.join(",")));
        if !mongo.is_empty() {
            env.push(plain_env("SOCIALNET_MONGO_TARGETS", mongo.join(",")));
        }
        if let Some(f) = s.projections.fanout_threshold {
            env.push(plain_env("SOCIALNET_FANOUT_THRESHOLD", f.to_string()));
        }
    }
    if matches!(c, Component::WriteApi | Component::ReadApi)
        && let Some(e) = s.gateway_policy.as_ref().and_then(|p| p.otlp_endpoint.as_ref())
    {
        // The services export their spans to the gateway's collector: one trace per request, end to end.
        env.push(plain_env("SOCIALNET_OTLP_ENDPOINT", e.clone()));
        env.push(plain_env("SOCIALNET_OTLP_SERVICE_NAME", format!("{}-{}", sc.name_any(), c.name())));
    }
    if c == Component::ReadApi {
        // New read API pods start on the active target recorded in the ConfigMap.
        env.push(EnvVar {
            name: "SOCIALNET_ACTIVE_TARGET".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: config_map_name(sc),
                    key: "active".into(),
                    optional: Some(true),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    if c == Component::Gateway {
        env.push(plain_env("SOCIALNET_GATEWAY_CONFIG", format!("{GATEWAY_CONFIG_DIR}/{GATEWAY_CONFIG_KEY}")));
        if let Some(r) = s.gateway_policy.as_ref().and_then(|p| p.rate_limit_redis.as_ref()) {
            env.push(secret_env("SOCIALNET_GATEWAY_REDIS_URL", r));
        }
    }
    env
}

pub fn gateway_config_name(sc: &SocialCluster) -> String {
    format!("{}-gateway", sc.name_any())
}

const GATEWAY_CONFIG_DIR: &str = "/etc/socialnet/gateway";
const GATEWAY_CONFIG_KEY: &str = "gateway.yaml";

/// A YAML (JSON) string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The gateway's config file: the write and read APIs' Services as upstreams, the cluster's token
/// settings, default limits. Mounted from a ConfigMap; the gateway reloads it when the kubelet updates the
/// file, so a change here needs no rollout.
pub fn gateway_config_map(sc: &SocialCluster) -> ConfigMap {
    let auth = &sc.spec.auth;
    let policy = sc.spec.gateway_policy.clone().unwrap_or_default();
    let mut auth_lines = vec!["  hs256_secret_env: SOCIALNET_JWT_SECRET".to_owned()];
    if let Some(i) = &auth.issuer {
        auth_lines.push(format!("  issuer: {}", quoted(i)));
    }
    if let Some(a) = &auth.audience {
        auth_lines.push(format!("  audience: {}", quoted(a)));
    }
    let rate = |n: i32| format!("{{ requests: {n}, burst: {} }}", n.saturating_mul(2));
    let per_ip = rate(policy.requests_per_ip.unwrap_or(200));
    let mut extra = String::new();
    if !policy.cors_allowed_origins.is_empty() {
        let origins: Vec<String> = policy.cors_allowed_origins.iter().map(|o| quoted(o)).collect();
        extra.push_str(&format!("cors: {{ allowed_origins: [{}] }}\n", origins.join(", ")));
    }
    if let Some(h) = &policy.trusted_proxy_header {
        extra.push_str(&format!("trusted_proxy_header: {}\n", quoted(h)));
    }
    if let Some(p) = policy.access_log_success_percent {
        extra.push_str(&format!("access_log: {{ successes: {} }}\n", f64::from(p.clamp(0, 100)) / 100.0));
    }
    if let Some(e) = &policy.otlp_endpoint {
        extra.push_str(&format!(
            "otlp: {{ endpoint: {}, service_name: {} }}\n",
            quoted(e),
            quoted(&format!("{}-gateway", sc.name_any()))
        ));
    }
    let yaml = format!(
        r#"# Generated by socialnet-operator for SocialCluster {name}; edits are overwritten.
upstreams:
  write: {{ url: "http://{write}:{PORT}", timeout_ms: 5000 }}
  read: {{ url: "http://{read}:{PORT}", timeout_ms: 5000, pipeline: {{ connections: {read_connections} }} }}
routes:
  - {{ prefix: /v1/, methods: [GET, HEAD], upstream: read, class: read }}
  - {{ prefix: /v1/, upstream: write, class: write }}
auth:
{auth}
limits:
  read: {{ per_user: {reads}, per_ip: {per_ip} }}
  write: {{ per_user: {writes}, per_ip: {per_ip} }}
{extra}"#,
        name = sc.name_any(),
        write = object_name(sc, Component::WriteApi),
        read = object_name(sc, Component::ReadApi),
        auth = auth_lines.join("\n"),
        reads = rate(policy.reads_per_user.unwrap_or(50)),
        writes = rate(policy.writes_per_user.unwrap_or(10)),
        read_connections = read_connections(sc),
    );
    ConfigMap {
        metadata: meta(sc, gateway_config_name(sc), Some(Component::Gateway)),
        data: Some(BTreeMap::from([(GATEWAY_CONFIG_KEY.to_owned(), yaml)])),
        ..ConfigMap::default()
    }
}

/// Connections each gateway pod keeps for reads: they are pipelined, so a few carry all the traffic, but
/// the read API's Service balances connections, not requests, so every pod it may run (up to the HPA's
/// maximum) should get two. At least 8, at most 256.
pub fn read_connections(sc: &SocialCluster) -> i32 {
    let spec = Component::ReadApi.spec(sc);
    let pods = spec.autoscaling.as_ref().map_or(spec.replicas, |a| a.max_replicas);
    pods.saturating_mul(2).clamp(8, 256)
}

fn probe(path: &str, initial: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(PORT),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

pub fn deployment(sc: &SocialCluster, c: Component) -> Deployment {
    let spec = c.spec(sc);
    let name = object_name(sc, c);
    let container = Container {
        name: c.name().to_owned(),
        image: Some(sc.spec.image.clone()),
        image_pull_policy: sc.spec.image_pull_policy.clone(),
        args: Some(c.args()),
        env: Some(env(sc, c)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: spec.resources.clone(),
        volume_mounts: (c == Component::Gateway).then(|| {
            vec![VolumeMount {
                name: "gateway-config".into(),
                mount_path: GATEWAY_CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        ..Container::default()
    };
    let volumes = (c == Component::Gateway).then(|| {
        vec![Volume {
            name: "gateway-config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: gateway_config_name(sc),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }]
    });
    Deployment {
        metadata: meta(sc, name, Some(c)),
        spec: DeploymentSpec {
            // With an HPA the autoscaler owns the replica count: leave the field out of our apply.
            replicas: if spec.autoscaling.is_some() { None } else { Some(spec.replicas) },
            selector: LabelSelector { match_labels: Some(selector(sc, c)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(sc, Some(c))), ..ObjectMeta::default() }),
                spec: Some(PodSpec { containers: vec![container], volumes, ..PodSpec::default() }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

pub fn service(sc: &SocialCluster, c: Component) -> Service {
    Service {
        metadata: meta(sc, object_name(sc, c), Some(c)),
        spec: Some(ServiceSpec {
            selector: Some(selector(sc, c)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::Int(PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn hpa(sc: &SocialCluster, c: Component) -> Option<HorizontalPodAutoscaler> {
    let a = c.spec(sc).autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: meta(sc, object_name(sc, c), Some(c)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: object_name(sc, c),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        },
        status: None,
    })
}

/// A PDB keeps one pod of a component up during voluntary disruptions, when it runs more than one.
pub fn pdb(sc: &SocialCluster, c: Component) -> Option<PodDisruptionBudget> {
    let spec = c.spec(sc);
    let pods = spec.autoscaling.as_ref().map(|a| a.min_replicas).unwrap_or(spec.replicas);
    if pods < 2 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: meta(sc, object_name(sc, c), Some(c)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector(sc, c)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// The projection targets and the active one, for people and for new read API pods.
pub fn config_map(sc: &SocialCluster, active: &str) -> ConfigMap {
    let targets: Vec<&str> = sc.spec.projections.targets.iter().map(|t| t.name.as_str()).collect();
    ConfigMap {
        metadata: meta(sc, config_map_name(sc), None),
        data: Some(BTreeMap::from([
            ("targets".to_owned(), targets.join(",")),
            ("active".to_owned(), active.to_owned()),
        ])),
        ..ConfigMap::default()
    }
}

/// Everything that should exist for this cluster.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Desired {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub config_map: Option<ConfigMap>,
    pub gateway_config: Option<ConfigMap>,
}

pub fn desired(sc: &SocialCluster, active: &str) -> Desired {
    let mut d = Desired {
        config_map: Some(config_map(sc, active)),
        gateway_config: Some(gateway_config_map(sc)),
        ..Desired::default()
    };
    for c in COMPONENTS {
        d.deployments.push(deployment(sc, c));
        d.services.push(service(sc, c));
        d.hpas.extend(hpa(sc, c));
        d.pdbs.extend(pdb(sc, c));
    }
    d
}
