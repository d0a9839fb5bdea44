//! Build: the pure step of the reconcile pipeline. From a `SocialCluster` (and what the operator decided:
//! the active projection target) to the exact objects that should exist: a Deployment and Service per
//! component, optional HPAs (then the Deployment does not set `replicas`), PDBs, and the ConfigMap with
//! the projection targets and the active one. No I/O; unit-tested with YAML fixtures.

use crate::children::Child;
use contract::gateway::{ClassLimits, GatewayConfig, Otlp, Rate, Route, Upstream};
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
    if matches!(c, Component::WriteApi | Component::Ingester | Component::Projector | Component::ReadApi) {
        env.push(secret_env("SOCIALNET_DATABASE_URL", &s.event_store.primary));
        env.extend(s.event_store.backup.as_ref().map(|b| secret_env("SOCIALNET_BACKUP_DATABASE_URL", b)));
    }
    if matches!(c, Component::WriteApi | Component::Ingester) {
        env.push(secret_env("SOCIALNET_NATS_URL", &s.queue.primary));
        env.extend(s.queue.secondary.as_ref().map(|q| secret_env("SOCIALNET_NATS_SECONDARY_URL", q)));
        env.push(plain_env("SOCIALNET_QUEUE_PARTITIONS", s.queue.partitions.to_string()));
        env.push(plain_env("SOCIALNET_STREAM_REPLICAS", s.queue.stream_replicas.to_string()));
    }
    if matches!(c, Component::Gateway | Component::WriteApi | Component::ReadApi) {
        env.push(secret_env("SOCIALNET_JWT_SECRET", &s.auth.jwt_secret));
        env.extend(s.auth.issuer.as_ref().map(|i| plain_env("SOCIALNET_JWT_ISSUER", i.clone())));
        env.extend(s.auth.audience.as_ref().map(|a| plain_env("SOCIALNET_JWT_AUDIENCE", a.clone())));
    }
    if matches!(c, Component::Projector | Component::ReadApi) {
        env.extend(target_env(sc, c));
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
        let key =
            ConfigMapKeySelector { name: config_map_name(sc), key: "active".into(), optional: Some(true) };
        env.push(EnvVar {
            name: "SOCIALNET_ACTIVE_TARGET".into(),
            value_from: Some(EnvVarSource { config_map_key_ref: Some(key), ..EnvVarSource::default() }),
            ..EnvVar::default()
        });
    }
    if c == Component::Gateway {
        env.push(plain_env("SOCIALNET_GATEWAY_CONFIG", format!("{GATEWAY_CONFIG_DIR}/{GATEWAY_CONFIG_KEY}")));
        let redis = s.gateway_policy.as_ref().and_then(|p| p.rate_limit_redis.as_ref());
        env.extend(redis.map(|r| secret_env("SOCIALNET_GATEWAY_REDIS_URL", r)));
    }
    env
}

/// The projection targets: each URL from its Secret, `SOCIALNET_TARGETS` referring to them with `$(VAR)`.
fn target_env(sc: &SocialCluster, c: Component) -> Vec<EnvVar> {
    let s = &sc.spec;
    let var = |kind: &str, name: &str| format!("SOCIALNET_{kind}_{}", name.to_uppercase().replace('-', "_"));
    let (mut env, mut parts, mut mongo) = (Vec::new(), Vec::new(), Vec::new());
    for t in &s.projections.targets {
        let redis = var("REDIS", &t.name);
        env.push(secret_env(&redis, &t.redis));
        parts.push(match t.mode {
            socialnet_crd::RedisMode::Standalone => format!("{}=$({redis})", t.name),
            socialnet_crd::RedisMode::Cluster => format!("{}=redis+cluster://$({redis})", t.name),
        });
        if let Some(m) = t.mongodb.as_ref().filter(|_| c == Component::Projector) {
            let docs = var("MONGO", &t.name);
            env.push(secret_env(&docs, m));
            mongo.push(format!("{}-docs=$({docs})", t.name));
        }
    }
    env.push(plain_env("SOCIALNET_TARGETS", parts.join(",")));
    if !mongo.is_empty() {
        env.push(plain_env("SOCIALNET_MONGO_TARGETS", mongo.join(",")));
    }
    env.extend(
        s.projections.fanout_threshold.map(|f| plain_env("SOCIALNET_FANOUT_THRESHOLD", f.to_string())),
    );
    env
}

pub fn gateway_config_name(sc: &SocialCluster) -> String {
    format!("{}-gateway", sc.name_any())
}

const GATEWAY_CONFIG_DIR: &str = "/etc/socialnet/gateway";
const GATEWAY_CONFIG_KEY: &str = "gateway.yaml";

/// The gateway's config: the write and read APIs' Services as upstreams, the cluster's token settings,
/// the spec's gateway policy (limits, CORS, trusted proxy header, span export, access-log share).
pub fn gateway_config(sc: &SocialCluster) -> GatewayConfig {
    let auth = &sc.spec.auth;
    let policy = sc.spec.gateway_policy.clone().unwrap_or_default();
    let upstream = |c: Component| Upstream::new(format!("http://{}:{PORT}", object_name(sc, c)));
    let mut read = upstream(Component::ReadApi);
    read.pipeline.connections = usize::try_from(read_connections(sc)).unwrap_or(8);
    let upstreams =
        BTreeMap::from([("write".to_owned(), upstream(Component::WriteApi)), ("read".to_owned(), read)]);
    let route = |methods: &[&str], upstream: &str| Route {
        prefix: "/v1/".into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        upstream: upstream.into(),
        class: Some(upstream.into()),
        auth: true,
    };
    let mut config =
        GatewayConfig::new(upstreams, vec![route(&["GET", "HEAD"], "read"), route(&[], "write")]);
    config.auth.hs256_secret_env = Some("SOCIALNET_JWT_SECRET".into());
    config.auth.issuer = auth.issuer.clone();
    config.auth.audience = auth.audience.clone();
    let rate = |n: i32| {
        let n = u32::try_from(n.max(1)).unwrap_or(1);
        Rate { requests: n, per_secs: 1, burst: Some(n.saturating_mul(2)) }
    };
    let per_ip = Some(rate(policy.requests_per_ip.unwrap_or(200)));
    for (class, per_user) in
        [("read", policy.reads_per_user.unwrap_or(50)), ("write", policy.writes_per_user.unwrap_or(10))]
    {
        config.limits.insert(class.into(), ClassLimits { per_user: Some(rate(per_user)), per_ip });
    }
    config.cors.allowed_origins = policy.cors_allowed_origins.clone();
    config.trusted_proxy_header = policy.trusted_proxy_header.clone();
    if let Some(p) = policy.access_log_success_percent {
        config.access_log.successes = f64::from(p.clamp(0, 100)) / 100.0;
    }
    config.otlp = policy
        .otlp_endpoint
        .clone()
        .map(|endpoint| Otlp { endpoint, service_name: format!("{}-gateway", sc.name_any()) });
    config
}

/// The gateway's config file in a ConfigMap. The gateway reloads it when the kubelet updates the mounted
/// file, so a change here needs no rollout.
pub fn gateway_config_map(sc: &SocialCluster) -> ConfigMap {
    let yaml = gateway_config(sc).to_yaml().unwrap_or_default();
    let text = format!(
        "# Generated by socialnet-operator for SocialCluster {}; edits are overwritten.\n{yaml}",
        sc.name_any()
    );
    ConfigMap {
        metadata: meta(sc, gateway_config_name(sc), Some(Component::Gateway)),
        data: Some(BTreeMap::from([(GATEWAY_CONFIG_KEY.to_owned(), text)])),
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
        image_pull_policy: sc.spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(c.args()),
        env: Some(env(sc, c)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: spec.resources.as_ref().map(socialnet_crd::Resources::to_k8s),
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

/// Label telling the Deployments of a partitioned queue's ingester replicas apart.
pub const INGESTER_INDEX_LABEL: &str = "socialnet.io/ingester-index";

/// Whether the ingester runs as replicas that each own their share of the queue's partitions.
pub fn ingester_sharded(sc: &SocialCluster) -> bool {
    sc.spec.queue.partitions > 1 && sc.spec.ingester.replicas > 1 && sc.spec.ingester.autoscaling.is_none()
}

/// The ingester's Deployments: one; or, on a partitioned queue, one per replica index (`NAME-ingester-I`,
/// one pod each), since replica I consumes partitions I, I+N, … and a Deployment's pods have no stable
/// index. The Service and PDB still select them all by component.
pub fn ingester_deployments(sc: &SocialCluster) -> Vec<Deployment> {
    if !ingester_sharded(sc) {
        return vec![deployment(sc, Component::Ingester)];
    }
    let n = sc.spec.ingester.replicas;
    (0..n)
        .map(|i| {
            let mut d = deployment(sc, Component::Ingester);
            d.metadata.name = Some(format!("{}-{i}", object_name(sc, Component::Ingester)));
            d.spec.replicas = Some(1);
            let index = (INGESTER_INDEX_LABEL.to_owned(), i.to_string());
            d.spec
                .selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(index.0.clone(), index.1.clone());
            if let Some(m) = d.spec.template.metadata.as_mut() {
                m.labels.get_or_insert_with(BTreeMap::new).insert(index.0, index.1);
            }
            if let Some(c) = d.spec.template.spec.as_mut().and_then(|p| p.containers.first_mut()) {
                let env = c.env.get_or_insert_with(Vec::new);
                env.push(plain_env("SOCIALNET_INGESTER_INDEX", i.to_string()));
                env.push(plain_env("SOCIALNET_INGESTER_REPLICAS", n.to_string()));
            }
            d
        })
        .collect()
}

/// Whether Deployment `name` runs component `c` (the ingester may run as `NAME-ingester-I`).
pub fn runs(sc: &SocialCluster, c: Component, name: &str) -> bool {
    let base = object_name(sc, c);
    name == base
        || (c == Component::Ingester
            && name
                .strip_prefix(&format!("{base}-"))
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())))
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

impl Desired {
    /// Every object, each carrying the hash of its content; ConfigMaps first (the pods mount them).
    pub fn children(&self) -> Vec<Child> {
        let mut out: Vec<Child> = Vec::new();
        out.extend(self.config_map.iter().chain(&self.gateway_config).cloned().map(Child::ConfigMap));
        out.extend(self.deployments.iter().cloned().map(Child::Deployment));
        out.extend(self.services.iter().cloned().map(Child::Service));
        out.extend(self.hpas.iter().cloned().map(Child::HorizontalPodAutoscaler));
        out.extend(self.pdbs.iter().cloned().map(Child::PodDisruptionBudget));
        out.into_iter().map(Child::hashed).collect()
    }
}

pub fn desired(sc: &SocialCluster, active: &str) -> Desired {
    let mut d = Desired {
        config_map: Some(config_map(sc, active)),
        gateway_config: Some(gateway_config_map(sc)),
        ..Desired::default()
    };
    for c in COMPONENTS {
        if c == Component::Ingester {
            d.deployments.extend(ingester_deployments(sc));
        } else {
            d.deployments.push(deployment(sc, c));
        }
        d.services.push(service(sc, c));
        d.hpas.extend(hpa(sc, c));
        d.pdbs.extend(pdb(sc, c));
    }
    d
}
