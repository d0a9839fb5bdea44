//! Pure tests of the pipeline's first steps: the committed CRD is current, the examples are valid (schema
//! rules checked locally with the CRD's own CEL), invalid specs are refused with clear reasons, and
//! build turns the full example into exactly the objects in `tests/fixtures/full-desired.yaml`.
#![allow(clippy::unwrap_used)]

mod admission;

use socialnet_crd::{RebuildRequest, SocialCluster};
use socialnet_operator::build::{self, Component};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> SocialCluster {
    let text = std::fs::read_to_string(root().join("examples").join(name)).unwrap();
    let mut sc: SocialCluster = serde_yaml::from_str(&text).unwrap();
    sc.metadata.namespace = Some("apps".into());
    sc.metadata.uid = Some("0b5f4a5e-1111-4c2b-9d7e-5a0c2f1e3d4c".into());
    sc
}

fn spec_json(sc: &SocialCluster) -> serde_json::Value {
    serde_json::to_value(&sc.spec).unwrap()
}

#[test]
fn the_committed_crd_is_generated_from_the_types() {
    let committed = std::fs::read_to_string(root().join("crds/socialcluster.yaml")).unwrap();
    assert!(
        committed == socialnet_operator::crd_yaml(),
        "crds/socialcluster.yaml is stale: run `cargo run -p socialnet-operator -- crd > crds/socialcluster.yaml`"
    );
    let chart =
        std::fs::read_to_string(root().join("charts/socialnet-operator/crds/socialcluster.yaml")).unwrap();
    assert!(
        chart == committed,
        "the chart's CRD copy is stale: cp crds/socialcluster.yaml charts/socialnet-operator/crds/"
    );
    for word in
        ["x-kubernetes-validations", "x-kubernetes-list-type", "subresources", "status: {}", "Progress"]
    {
        assert!(committed.contains(word), "the CRD lacks {word}");
    }
}

/// The API server estimates the cost of every CEL rule from the sizes the schema allows, and refuses
/// rules over unbounded data; bounded fields also keep a status or spec from growing without limit.
#[test]
fn every_field_of_the_crd_is_bounded() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(SocialCluster::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = Vec::new();
    admission::unbounded(&schema["properties"]["spec"], "spec", &mut out);
    admission::unbounded(&schema["properties"]["status"], "status", &mut out);
    assert!(out.is_empty(), "unbounded fields:\n{}", out.join("\n"));
    // The walk does look: an unbounded field is found.
    let mut probe = Vec::new();
    admission::unbounded(
        &serde_json::json!({"type": "object", "properties": {"x": {"type": "string"}}}),
        "p",
        &mut probe,
    );
    assert_eq!(probe, ["p.x: string without maxLength"]);
}

/// Short names of built-in resources (kubectl 1.32 `api-resources`): ours must not take one, or
/// `kubectl get <short>` would ask for something else.
#[test]
fn the_short_names_belong_to_no_builtin_resource() {
    use kube::CustomResourceExt;
    const BUILTIN: &[&str] = &[
        "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc", "crd",
        "crds", "deploy", "ds", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol", "pdb", "pc", "sc",
        "ingclass", "vac",
    ];
    let crd = serde_json::to_value(SocialCluster::crd()).unwrap();
    let names: Vec<String> = serde_json::from_value(crd["spec"]["names"]["shortNames"].clone()).unwrap();
    assert!(!names.is_empty());
    for n in names {
        assert!(!BUILTIN.contains(&n.as_str()), "short name {n} belongs to a built-in resource");
    }
}

#[test]
fn the_examples_are_valid() {
    for name in ["minimal.yaml", "full.yaml"] {
        let sc = example(name);
        socialnet_operator::validate::validate(&sc).unwrap();
        let problems = admission::check(&spec_json(&sc));
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

/// Each bad spec is refused both by the CRD (its schema and CEL rules: what `kubectl apply` meets) and by
/// the operator's own validation (what it reports in status where the API server does not check).
#[test]
fn invalid_specs_are_refused_with_a_clear_reason() {
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "replicas out of range",
            Box::new(|s| s["ingester"] = serde_json::json!({"replicas": 150})),
            "replicas",
        ),
        ("negative replicas", Box::new(|s| s["readApi"] = serde_json::json!({"replicas": -1})), "replicas"),
        (
            "unknown rebuild target",
            Box::new(|s| s["rebuild"] = serde_json::json!({"target": "nope", "token": "t"})),
            "rebuild.target",
        ),
        (
            "unknown switchover target",
            Box::new(|s| s["switchover"] = serde_json::json!({"target": "nope"})),
            "switchover.target",
        ),
        (
            "min above max",
            Box::new(|s| {
                s["writeApi"] = serde_json::json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})
            }),
            "minReplicas",
        ),
        (
            "duplicate targets",
            Box::new(|s| {
                let t = s["projections"]["targets"][0].clone();
                s["projections"]["targets"].as_array_mut().unwrap().push(t);
            }),
            "twice",
        ),
        (
            "nine targets",
            Box::new(|s| {
                let t = s["projections"]["targets"][0].clone();
                let many: Vec<serde_json::Value> = (0..9)
                    .map(|i| {
                        let mut t = t.clone();
                        t["name"] = format!("t{i}").into();
                        t
                    })
                    .collect();
                s["projections"]["targets"] = many.into();
            }),
            "1 to 8",
        ),
        (
            "too many CORS origins",
            Box::new(|s| {
                let many: Vec<String> = (0..33).map(|i| format!("https://a{i}.example")).collect();
                s["gatewayPolicy"]["corsAllowedOrigins"] = serde_json::json!(many);
            }),
            "corsAllowedOrigins",
        ),
        (
            "bad target name",
            Box::new(|s| s["projections"]["targets"][0]["name"] = "Primary!".into()),
            "target name",
        ),
        (
            "CORS origin with a path",
            Box::new(|s| {
                s["gatewayPolicy"]["corsAllowedOrigins"] = serde_json::json!(["https://app.example/x"])
            }),
            "corsAllowedOrigins",
        ),
        (
            "OTLP endpoint not a URL",
            Box::new(|s| s["gatewayPolicy"]["otlpEndpoint"] = "collector:4318".into()),
            "otlpEndpoint",
        ),
        ("zero reads per user", Box::new(|s| s["gatewayPolicy"]["readsPerUser"] = 0.into()), "readsPerUser"),
        (
            "access-log share above 100 %",
            Box::new(|s| s["gatewayPolicy"]["accessLogSuccessPercent"] = 150.into()),
            "accessLogSuccessPercent",
        ),
        (
            "more ingesters than partitions",
            Box::new(|s| {
                s["queue"]["partitions"] = 2.into();
                s["ingester"] = serde_json::json!({"replicas": 3});
            }),
            "partition",
        ),
        (
            "autoscaled ingester on a partitioned queue",
            Box::new(|s| {
                s["queue"]["partitions"] = 4.into();
                s["ingester"] = serde_json::json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}});
            }),
            "autoscale",
        ),
        ("zero partitions", Box::new(|s| s["queue"]["partitions"] = 0.into()), "partitions"),
        (
            "threshold out of range",
            Box::new(|s| s["projections"]["failover"]["failureThreshold"] = 0.into()),
            "failureThreshold",
        ),
    ];
    let base = spec_json(&example("full.yaml"));
    for (case, mutate, word) in cases {
        let mut spec = base.clone();
        mutate(&mut spec);
        let refused = admission::check(&spec);
        let cel_text = format!("{refused:?}");
        assert!(!refused.is_empty(), "{case}: the CRD accepted it");
        let mut sc = example("full.yaml");
        sc.spec = serde_json::from_value(spec).unwrap();
        let ours = socialnet_operator::validate::validate(&sc);
        let why = ours.expect_err(case);
        assert!(
            why.contains(word) || why.to_lowercase().contains(&word.to_lowercase()),
            "{case}: operator reason {why:?} does not mention {word} (CEL said {cel_text})"
        );
    }
}

#[test]
fn build_matches_the_fixture() {
    let sc = example("full.yaml");
    let desired = build::desired(&sc, "primary");
    let text = serde_yaml::to_string(&desired).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/full-desired.yaml");
    if std::env::var("UPDATE_FIXTURES").is_ok() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert!(text == expected, "build output changed; review and run with UPDATE_FIXTURES=1 to accept");
    // Every object carries the hash of what the operator applies, and a changed spec changes it.
    let hashes: Vec<Option<String>> = desired.children().iter().map(|c| c.hash()).collect();
    assert!(hashes.iter().all(Option::is_some));
    let mut bigger = sc.clone();
    bigger.spec.ingester.replicas = 7;
    let changed: Vec<Option<String>> =
        build::desired(&bigger, "primary").children().iter().map(|c| c.hash()).collect();
    assert_eq!(
        hashes.iter().zip(&changed).filter(|(a, b)| a != b).count(),
        1,
        "only the ingester's Deployment changes"
    );
}

#[test]
fn build_follows_the_spec() {
    let sc = example("full.yaml");
    let d = build::desired(&sc, "standby");
    assert_eq!(d.deployments.len(), 5);
    assert_eq!(d.services.len(), 5);
    for dep in &d.deployments {
        let owner = &dep.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("SocialCluster", "social", Some(true))
        );
        let c = &dep.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("socialnet:dev"));
        assert_eq!(
            c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/healthz")
        );
    }
    let write =
        d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("social-write-api")).unwrap();
    assert_eq!(write.spec.replicas, None, "with an HPA the operator must not own replicas");
    let gateway =
        d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("social-gateway")).unwrap();
    assert_eq!(gateway.spec.replicas, Some(2));
    assert_eq!(d.hpas.len(), 1);
    assert_eq!(d.hpas[0].spec.max_replicas, 6);
    let pdbs: Vec<&str> = d.pdbs.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(pdbs, vec!["social-gateway", "social-write-api", "social-ingester", "social-read-api"]);
    let cm = d.config_map.unwrap();
    assert_eq!(cm.data.as_ref().unwrap()["active"], "standby");
    assert_eq!(cm.data.as_ref().unwrap()["targets"], "primary,standby");

    let projector = build::deployment(&sc, Component::Projector);
    let c = &projector.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.args.as_ref().unwrap(), &vec!["projector".to_owned(), "run".to_owned()]);
    let env = c.env.as_ref().unwrap();
    let targets = env.iter().find(|e| e.name == "SOCIALNET_TARGETS").unwrap();
    assert_eq!(
        targets.value.as_deref(),
        Some("primary=$(SOCIALNET_REDIS_PRIMARY),standby=$(SOCIALNET_REDIS_STANDBY)")
    );
    let db = env.iter().find(|e| e.name == "SOCIALNET_DATABASE_URL").unwrap();
    let sel = db.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("socialnet-stores", "postgres-url"));
    assert!(env.iter().any(|e| e.name == "SOCIALNET_MONGO_TARGETS"));
    assert!(
        !env.iter().any(|e| e.value.as_deref().is_some_and(|v| v.contains("postgres://"))),
        "no secret in plain env"
    );

    let minimal = example("minimal.yaml");
    let d = build::desired(&minimal, "primary");
    assert!(d.hpas.is_empty() && d.pdbs.is_empty(), "single replicas need no HPA or PDB");
}

/// A Redis Cluster target becomes `name=redis+cluster://$(VAR)` (the Secret holds the seeds); the queue's
/// partitions and stream replicas reach the write API and the ingester.
#[test]
fn cluster_targets_and_queue_scaling_reach_the_components() {
    let sc = example("scaled.yaml");
    let env_of = |c: Component| {
        let d = build::deployment(&sc, c);
        d.spec.template.spec.unwrap().containers[0].env.clone().unwrap()
    };
    let value = |env: &[k8s_openapi::api::core::v1::EnvVar], name: &str| {
        env.iter().find(|e| e.name == name).and_then(|e| e.value.clone())
    };
    for c in [Component::Projector, Component::ReadApi] {
        assert_eq!(
            value(&env_of(c), "SOCIALNET_TARGETS").as_deref(),
            Some("primary=redis+cluster://$(SOCIALNET_REDIS_PRIMARY),standby=$(SOCIALNET_REDIS_STANDBY)")
        );
    }
    for c in [Component::WriteApi, Component::Ingester] {
        let env = env_of(c);
        assert_eq!(value(&env, "SOCIALNET_QUEUE_PARTITIONS").as_deref(), Some("12"));
        assert_eq!(value(&env, "SOCIALNET_STREAM_REPLICAS").as_deref(), Some("3"));
    }
    let minimal = env_of_minimal();
    assert_eq!(value(&minimal, "SOCIALNET_QUEUE_PARTITIONS").as_deref(), Some("1"));
}

/// On a partitioned queue each ingester replica is a Deployment of its own with its index; without
/// partitions the ingester stays one Deployment (its replicas share the one consumer).
#[test]
fn ingester_replicas_on_a_partitioned_queue_each_get_their_index() {
    let mut sc = example("scaled.yaml");
    sc.spec.ingester.replicas = 3;
    let d = build::desired(&sc, "primary");
    let ingesters: Vec<_> = d
        .deployments
        .iter()
        .filter(|x| build::runs(&sc, Component::Ingester, &x.metadata.name.clone().unwrap()))
        .collect();
    let names: Vec<String> = ingesters.iter().map(|x| x.metadata.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        vec!["social-scaled-ingester-0", "social-scaled-ingester-1", "social-scaled-ingester-2"]
    );
    for (i, x) in ingesters.iter().enumerate() {
        assert_eq!(x.spec.replicas, Some(1));
        let selector = x.spec.selector.match_labels.clone().unwrap();
        assert_eq!(selector[build::INGESTER_INDEX_LABEL], i.to_string(), "selectors must not overlap");
        let pod = x.spec.template.metadata.clone().unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| pod.get(k) == Some(v)), "the pods match their selector");
        let env = x.spec.template.spec.clone().unwrap().containers[0].env.clone().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(
            (get("SOCIALNET_INGESTER_INDEX"), get("SOCIALNET_INGESTER_REPLICAS")),
            (Some(i.to_string()), Some("3".into()))
        );
    }
    assert!(!build::runs(&sc, Component::Ingester, "social-scaled-ingester-x"));
    assert!(!build::runs(&sc, Component::WriteApi, "social-scaled-write-api-0"));
    let full = example("full.yaml");
    let single: Vec<_> = build::desired(&full, "primary")
        .deployments
        .into_iter()
        .filter(|x| build::runs(&full, Component::Ingester, &x.metadata.name.clone().unwrap()))
        .collect();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].spec.replicas, Some(2));
}

fn env_of_minimal() -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let d = build::deployment(&example("minimal.yaml"), Component::Ingester);
    d.spec.template.spec.unwrap().containers[0].env.clone().unwrap()
}

#[test]
fn the_rebuild_job_runs_the_rebuild_for_its_target() {
    let sc = example("full.yaml");
    let job = socialnet_operator::jobs::rebuild_job(&sc, "standby", "t-1");
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let name = job.metadata.name.clone().unwrap();
    assert_eq!(
        pod.containers[0].args.as_ref().unwrap().join(" "),
        format!("projector rebuild --target standby --run-id {name}"),
        "the run id lets the operator tell this rebuild's progress from an older one's"
    );
    let again = socialnet_operator::jobs::rebuild_job(&sc, "standby", "t-1");
    assert_eq!(job.metadata.name, again.metadata.name, "one request, one job name");
    let other = socialnet_operator::jobs::rebuild_job(&sc, "standby", "t-2");
    assert_ne!(job.metadata.name, other.metadata.name);
    assert!(job.metadata.name.as_ref().unwrap().len() <= 63);

    // A request that asks for streaming gets it; another target's (automatic) rebuild does not.
    let mut sc = sc;
    sc.spec.rebuild = Some(RebuildRequest { target: "standby".into(), token: "t-3".into(), streaming: true });
    let args = |job: &k8s_openapi::api::batch::v1::Job| {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ")
    };
    let job = socialnet_operator::jobs::rebuild_job(&sc, "standby", "t-3");
    assert!(args(&job).ends_with(" --streaming"), "{}", args(&job));
    let automatic = socialnet_operator::jobs::rebuild_job(&sc, "primary", "auto-1");
    assert!(!args(&automatic).contains("--streaming"));
}

/// The gateway's generated config is one the gateway itself accepts, and it points at the cluster's
/// write and read Services with the cluster's token settings; the gateway Deployment mounts it.
#[test]
fn the_otlp_endpoint_and_the_access_log_share_reach_the_configs() {
    let mut sc = example("full.yaml");
    let name = sc.metadata.name.clone().unwrap();
    sc.spec.gateway_policy.get_or_insert_with(Default::default).otlp_endpoint =
        Some("http://otel-collector:4318".into());
    let yaml = &build::gateway_config_map(&sc).data.unwrap()["gateway.yaml"];
    let config = gateway::GatewayConfig::parse(yaml).unwrap();
    assert_eq!(config, build::gateway_config(&sc), "the file is the config, serialised");
    assert_eq!(config.otlp.unwrap().endpoint, "http://otel-collector:4318");
    assert_eq!(config.access_log.successes, 1.0, "every request logged unless the policy says otherwise");
    sc.spec.gateway_policy.get_or_insert_with(Default::default).access_log_success_percent = Some(10);
    let yaml = &build::gateway_config_map(&sc).data.unwrap()["gateway.yaml"];
    assert_eq!(gateway::GatewayConfig::parse(yaml).unwrap().access_log.successes, 0.1);
    let env = |c: Component| -> Vec<(String, String)> {
        let pod = build::deployment(&sc, c).spec.template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap_or_default();
        env.into_iter()
            .filter(|e| e.name.starts_with("SOCIALNET_OTLP"))
            .map(|e| (e.name, e.value.unwrap()))
            .collect()
    };
    for (c, service) in [(Component::WriteApi, "write-api"), (Component::ReadApi, "read-api")] {
        assert_eq!(
            env(c),
            vec![
                ("SOCIALNET_OTLP_ENDPOINT".to_owned(), "http://otel-collector:4318".to_owned()),
                ("SOCIALNET_OTLP_SERVICE_NAME".to_owned(), format!("{name}-{service}")),
            ]
        );
    }
    assert!(env(Component::Ingester).is_empty(), "the ingester serves no requests to trace");
}

#[test]
fn the_gateway_gets_a_config_it_accepts() {
    let mut sc = example("full.yaml");
    sc.spec.auth.issuer = Some("https://id.example/\"quoted\"".into());
    sc.spec.auth.audience = Some("socialnet".into());
    let cm = build::gateway_config_map(&sc);
    let yaml = &cm.data.as_ref().unwrap()["gateway.yaml"];
    let config = gateway::GatewayConfig::parse(yaml).unwrap();
    let name = sc.metadata.name.clone().unwrap();
    assert_eq!(config.upstreams["write"].url, format!("http://{name}-write-api:8080"));
    assert_eq!(config.upstreams["read"].url, format!("http://{name}-read-api:8080"));
    assert_eq!(config.route("GET", "/v1/users/alice").unwrap().upstream, "read");
    assert_eq!(config.route("POST", "/v1/posts").unwrap().upstream, "write");
    // Reads are pipelined over two connections per read API pod the HPA may run, 8 at least.
    let read_pods =
        sc.spec.read_api.autoscaling.as_ref().map_or(sc.spec.read_api.replicas, |a| a.max_replicas);
    assert_eq!(config.upstreams["read"].pipeline.connections as i32, (2 * read_pods).max(8));
    assert!(config.upstreams["read"].pipeline.enabled);
    sc.spec.read_api.autoscaling = None;
    sc.spec.read_api.replicas = 2;
    assert_eq!(build::read_connections(&sc), 8, "never fewer than 8");
    sc.spec.read_api.replicas = 40;
    assert_eq!(build::read_connections(&sc), 80);
    assert_eq!(config.auth.hs256_secret_env.as_deref(), Some("SOCIALNET_JWT_SECRET"));
    assert_eq!(config.auth.issuer.as_deref(), Some("https://id.example/\"quoted\""));
    // The full example's gatewayPolicy: 100 reads and 20 writes per user per second, bursts of twice that.
    let reads = config.limits["read"].per_user.unwrap();
    assert_eq!((reads.requests, reads.burst()), (100, 200));
    assert_eq!(config.limits["write"].per_user.unwrap().requests, 20);
    assert_eq!(config.limits["write"].per_ip.unwrap().requests, 200, "the default per-IP rate");
    assert!(config.cors.allows("https://app.example.com") && !config.cors.allows("https://evil.example"));
    assert!(config.otlp.is_none());
    assert_eq!(config.auth.audience.as_deref(), Some("socialnet"));

    let d = build::deployment(&sc, Component::Gateway);
    let pod = d.spec.template.spec.unwrap();
    let volume = &pod.volumes.unwrap()[0];
    assert_eq!(volume.config_map.as_ref().unwrap().name, build::gateway_config_name(&sc));
    let container = &pod.containers[0];
    let mount = &container.volume_mounts.as_ref().unwrap()[0];
    let env = container.env.as_ref().unwrap();
    let config_path =
        env.iter().find(|e| e.name == "SOCIALNET_GATEWAY_CONFIG").unwrap().value.clone().unwrap();
    assert_eq!(config_path, format!("{}/gateway.yaml", mount.mount_path));
}

/// `socialnet-operator render`: the objects the operator would create, owner references only when the
/// cluster's uid is known, the rebuild Job its request would start, a multi-document stream.
#[test]
fn render_prints_every_object_the_operator_would_create() {
    use socialnet_operator::render;
    let text = std::fs::read_to_string(root().join("examples/full.yaml")).unwrap();
    let sc = render::parse(&text, "apps", None).unwrap();
    let objects = render::objects(&sc);
    let kinds: Vec<String> = objects.iter().map(|o| o.kind().to_string()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "Deployment").count(), 5);
    assert_eq!(kinds.last().map(String::as_str), Some("Job"), "the rebuild request's Job last");
    let yaml = render::to_yaml(&objects);
    assert_eq!(yaml.matches("\n---\n").count() + 1, objects.len(), "{yaml}");
    assert!(!yaml.contains("ownerReferences"), "no owner reference without the cluster's uid");
    let owned =
        render::objects(&render::parse(&text, "apps", Some("0b5f4a5e-1111-4c2b-9d7e-5a0c2f1e3d4c")).unwrap());
    assert!(render::to_yaml(&owned).contains("ownerReferences"));
    let bad = text.replace("maxReplicas: 6", "maxReplicas: 1");
    let err = render::parse(&bad, "apps", None).unwrap_err().to_string();
    assert!(err.contains("minReplicas (2) exceeds maxReplicas (1)"), "{err}");
}
