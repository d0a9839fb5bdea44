//! FAKE-API TESTS: reconcile against an emulated Kubernetes API on loopback (tests/fake_api), not a real
//! cluster. The test plays the Deployment and Job controllers. What only a real cluster proves (garbage
//! collection through owner references, CEL at admission, HPAs acting, pods actually running) is listed
//! in e2e/README.md and checked by the kind end-to-end script.
#![allow(clippy::unwrap_used)]

mod fake_api;

use fake_api::FakeApi;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use socialnet_crd::SocialCluster;
use socialnet_operator::reconcile::{Ctx, reconcile};
use std::sync::Arc;

const NS: &str = "apps";
const SC: &str = "apis/socialnet.io/v1alpha1";
const APPS: &str = "apis/apps/v1";

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name),
    )
    .unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    serde_json::to_value(v).unwrap()
}

struct World {
    api: FakeApi,
    ctx: Arc<Ctx>,
    clusters: Api<SocialCluster>,
}

impl World {
    async fn new() -> World {
        let api = FakeApi::start().await;
        let client = api.client();
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "socialnet-operator".into(), instance: None },
        );
        let ctx = Arc::new(Ctx::new(client.clone(), recorder));
        api.put(
            "api/v1",
            NS,
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "socialnet-auth"},
            "data": {"jwt-secret": "Y2hhbmdlLW1lLXRvLWEtbG9uZy1yYW5kb20tc3RyaW5n"}}),
        );
        World { api, ctx, clusters: Api::namespaced(client, NS) }
    }

    async fn reconcile(&self, name: &str) -> SocialCluster {
        let sc = self.clusters.get(name).await.unwrap();
        reconcile(Arc::new(sc), self.ctx.clone()).await.unwrap();
        self.clusters.get(name).await.unwrap()
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.api.get(SC, NS, "socialclusters", name).unwrap();
        f(&mut obj["spec"]);
        self.api.put(SC, NS, "socialclusters", obj);
    }

    fn deployments(&self) -> Vec<Value> {
        self.api.list(APPS, NS, "deployments")
    }

    /// Play the Deployment controller: every pod wanted is ready.
    fn make_ready(&self) {
        for mut d in self.deployments() {
            let want = d["spec"]["replicas"].as_i64().unwrap_or(2);
            d["status"] = json!({"replicas": want, "readyReplicas": want});
            self.api.put(APPS, NS, "deployments", d);
        }
    }
}

#[tokio::test]
async fn a_cluster_is_provisioned_owned_updated_repaired_and_reported() {
    let w = World::new().await;
    w.api.put(SC, NS, "socialclusters", example("full.yaml"));
    let sc = w.reconcile("social").await;
    let uid = sc.metadata.uid.clone().unwrap();

    let deployments = w.deployments();
    assert_eq!(deployments.len(), 5);
    for d in &deployments {
        assert_eq!(
            d["metadata"]["ownerReferences"][0]["uid"],
            uid.as_str(),
            "owner reference on {}",
            d["metadata"]["name"]
        );
    }
    assert_eq!(w.api.list("api/v1", NS, "services").len(), 5);
    assert_eq!(w.api.list("apis/autoscaling/v2", NS, "horizontalpodautoscalers").len(), 1);
    assert_eq!(w.api.list("apis/policy/v1", NS, "poddisruptionbudgets").len(), 4);
    let cm = w.api.get("api/v1", NS, "configmaps", "social-projections").unwrap();
    assert_eq!(cm["data"]["active"], "primary");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    let write = w.api.get(APPS, NS, "deployments", "social-write-api").unwrap();
    assert!(write["spec"].get("replicas").is_none(), "replicas left to the HPA");

    let st = sc.status.clone().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.phase.as_deref(), Some("Rebuilding"), "the full example asks for a rebuild: {st:?}");
    assert_eq!(st.current_primary.as_deref(), Some("primary"));
    assert_eq!(st.components.len(), 5);
    assert!(st.conditions.iter().any(|c| c.type_ == "Available" && c.status == "False"));

    // The test plays the Deployment and Job controllers: everything ready, the rebuild done.
    w.make_ready();
    let jobs = w.api.list("apis/batch/v1", NS, "jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["projector", "rebuild", "--target", "standby"])
    );
    let mut job = jobs[0].clone();
    job["status"] = json!({"succeeded": 1});
    w.api.put("apis/batch/v1", NS, "jobs", job);
    let sc = w.reconcile("social").await;
    let st = sc.status.clone().unwrap();
    assert_eq!(st.rebuild.as_ref().unwrap().phase, "Succeeded");
    assert_eq!(st.phase.as_deref(), Some("Available"), "{st:?}");
    assert_eq!(st.ready.as_deref(), Some("9/9"));

    // Change replicas: applied, observedGeneration follows.
    w.edit("social", |s| s["ingester"]["replicas"] = json!(3));
    let sc = w.reconcile("social").await;
    assert_eq!(w.api.get(APPS, NS, "deployments", "social-ingester").unwrap()["spec"]["replicas"], 3);
    assert_eq!(sc.status.unwrap().observed_generation, Some(2));

    // An owned Deployment deleted by hand comes back.
    w.api.delete(APPS, NS, "deployments", "social-read-api");
    w.reconcile("social").await;
    assert!(w.api.get(APPS, NS, "deployments", "social-read-api").is_some());

    // A new rebuild token starts a new Job; the same token does not start a second one.
    w.edit("social", |s| s["rebuild"]["token"] = json!("again"));
    w.reconcile("social").await;
    w.reconcile("social").await;
    assert_eq!(w.api.list("apis/batch/v1", NS, "jobs").len(), 2);
    let sc = w.clusters.get("social").await.unwrap();
    let rb = sc.status.unwrap().rebuild.unwrap();
    assert_eq!((rb.phase.as_str(), rb.token.as_str()), ("Running", "again"));

    // Events were recorded.
    assert!(!w.api.list("apis/events.k8s.io/v1", NS, "events").is_empty());
}

#[tokio::test]
async fn an_invalid_spec_is_reported_in_status_without_failing_reconcile() {
    let w = World::new().await;
    let mut bad = example("full.yaml");
    // The fake API runs no CEL, so this reaches the operator, as with an old API server.
    bad["spec"]["writeApi"]["autoscaling"] = json!({"minReplicas": 5, "maxReplicas": 2});
    bad["spec"]["rebuild"]["target"] = json!("nowhere");
    w.api.put(SC, NS, "socialclusters", bad);
    let sc = w.reconcile("social").await;
    let st = sc.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Invalid"));
    let msg = st.message.unwrap();
    assert!(msg.contains("minReplicas (5) exceeds maxReplicas (2)"), "{msg}");
    assert!(msg.contains("rebuild.target \"nowhere\""), "{msg}");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidSpec")
    );
    assert!(w.deployments().is_empty(), "nothing is applied from an invalid spec");
}

#[tokio::test]
async fn a_paused_cluster_is_left_alone() {
    let w = World::new().await;
    w.api.put(SC, NS, "socialclusters", example("minimal.yaml"));
    w.reconcile("social-min").await;
    assert_eq!(w.deployments().len(), 5);
    w.edit("social-min", |s| s["paused"] = json!(true));
    w.api.delete(APPS, NS, "deployments", "social-min-gateway");
    let sc = w.reconcile("social-min").await;
    assert_eq!(w.deployments().len(), 4, "paused: no repair");
    assert_eq!(sc.status.unwrap().phase.as_deref(), Some("Paused"));
}
