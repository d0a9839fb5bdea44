//! FAKE-API TESTS: reconcile against an emulated Kubernetes API on loopback (tests/fake_api), not a real
//! cluster, with stand-in read API and projector pods (tests/pods). The test plays the Deployment and
//! Job controllers. Besides final states, these tests read the fake's log of every request and check
//! the sequence of writes: nothing done twice, no status going backwards, also when the watches lag
//! behind the writes as they do on a busy API server. What only a real cluster proves is listed in
//! e2e/README.md.
#![allow(clippy::unwrap_used)]

mod fake_api;
mod pods;

use fake_api::{FakeApi, Request};
use kube::runtime::reflector::ObjectRef;
use pods::FakePod;
use serde_json::{Value, json};
use socialnet_operator::reconcile::{Operator, Settings, reconcile_once};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "apps";
const SC: &str = "apis/socialnet.io/v1alpha1";
const APPS: &str = "apis/apps/v1";

fn example(name: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text).unwrap()).unwrap()
}

struct World {
    api: FakeApi,
    ctx: Arc<socialnet_operator::reconcile::Ctx>,
}

impl World {
    /// The fake API with the auth Secret; the operator's caches and monitors started. `run`: the whole
    /// controller runs too (else the test calls reconcile itself).
    async fn new(watch_delay: Duration, run: bool) -> World {
        let api = FakeApi::start().await;
        api.set_watch_delay(watch_delay);
        api.put(
            "api/v1",
            NS,
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "socialnet-auth"},
            "data": {"jwt-secret": "Y2hhbmdlLW1lLXRvLWEtbG9uZy1yYW5kb20tc3RyaW5n"}}),
        );
        let settings = Settings {
            namespace: Some(NS.into()),
            health_interval: Duration::from_millis(100),
            identity: "test-0".into(),
        };
        let operator = Operator::start(api.client(), &settings);
        let ctx = operator.ctx.clone();
        if run {
            tokio::spawn(operator.run());
        }
        World { api, ctx }
    }

    /// Another operator on the same API, with nothing in memory (as a new leader after a crash).
    fn successor(&self, identity: &str) -> Arc<socialnet_operator::reconcile::Ctx> {
        let settings = Settings {
            namespace: Some(NS.into()),
            health_interval: Duration::from_millis(100),
            identity: identity.into(),
        };
        Operator::start(self.api.client(), &settings).ctx.clone()
    }

    async fn reconcile(&self, name: &str) -> Value {
        reconcile_once(&self.ctx, &ObjectRef::new(name).within(NS)).await.unwrap();
        self.status(name)
    }

    fn status(&self, name: &str) -> Value {
        self.api.get(SC, NS, "socialclusters", name).map(|c| c["status"].clone()).unwrap_or(Value::Null)
    }

    /// Change the spec as `kubectl edit` would (a write to the main resource leaves status alone).
    fn edit(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.api.get(SC, NS, "socialclusters", name).unwrap();
        f(&mut obj["spec"]);
        self.api.update(SC, NS, "socialclusters", obj);
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

    /// Wait until the caches have caught up (the watch delay, and a little).
    async fn settle(&self) {
        tokio::time::sleep(self.api.watch_delay() + Duration::from_millis(300)).await;
    }

    async fn wait(&self, what: &str, limit: Duration, f: impl Fn(&World) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !f(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; status: {}",
                self.status("social")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn writes(&self) -> Vec<Request> {
        self.api.requests().into_iter().filter(|r| r.is_write() && !r.is_lease()).collect()
    }
}

fn events_with(w: &World, reason: &str) -> usize {
    w.api.list("api/v1", NS, "events").iter().filter(|e| e["reason"] == reason).count()
}

#[tokio::test]
async fn a_cluster_is_provisioned_owned_updated_repaired_and_garbage_collected() {
    let w = World::new(Duration::ZERO, false).await;
    w.api.put(SC, NS, "socialclusters", example("full.yaml"));
    let st = w.reconcile("social").await;
    let uid = w.api.get(SC, NS, "socialclusters", "social").unwrap()["metadata"]["uid"].clone();
    let deployments = w.deployments();
    assert_eq!(deployments.len(), 5);
    assert!(deployments.iter().all(|d| d["metadata"]["ownerReferences"][0]["uid"] == uid));
    assert_eq!(w.api.list("api/v1", NS, "services").len(), 5);
    assert_eq!(w.api.list("apis/autoscaling/v2", NS, "horizontalpodautoscalers").len(), 1);
    assert_eq!(w.api.list("apis/policy/v1", NS, "poddisruptionbudgets").len(), 4);
    assert_eq!(
        w.api.get("api/v1", NS, "configmaps", "social-projections").unwrap()["data"]["active"],
        "primary"
    );
    assert!(
        w.api.get(APPS, NS, "deployments", "social-write-api").unwrap()["spec"].get("replicas").is_none()
    );
    assert_eq!((st["observedGeneration"].clone(), st["phase"].clone()), (json!(1), json!("Provisioning")));
    assert!(w.api.list("apis/batch/v1", NS, "jobs").is_empty(), "the example's token is recorded, not run");
    assert_eq!(st["handledRebuildToken"], "initial");

    w.settle().await;
    w.make_ready();
    w.settle().await;
    let st = w.reconcile("social").await;
    assert_eq!(st["ready"], "9/9");
    let before = w.writes().len();
    w.reconcile("social").await;
    assert_eq!(w.writes().len(), before, "an unchanged world makes no writes");

    w.edit("social", |s| s["ingester"]["replicas"] = json!(3));
    let st = w.reconcile("social").await;
    assert_eq!(w.api.get(APPS, NS, "deployments", "social-ingester").unwrap()["spec"]["replicas"], 3);
    assert_eq!(st["observedGeneration"], 2);
    let ingester_writes =
        w.writes().iter().filter(|r| r.path.ends_with("deployments/social-ingester")).count();
    assert_eq!(ingester_writes, 2, "created once, changed once");

    w.api.delete(APPS, NS, "deployments", "social-read-api");
    w.settle().await;
    w.reconcile("social").await;
    assert!(w.api.get(APPS, NS, "deployments", "social-read-api").is_some(), "a deleted child comes back");

    // Deleting the cluster deletes what it owns (the fake garbage-collects by owner reference); the
    // operator then leaves it all gone.
    w.api.delete(SC, NS, "socialclusters", "social");
    assert!(w.deployments().is_empty() && w.api.list("api/v1", NS, "configmaps").is_empty());
    w.settle().await;
    reconcile_once(&w.ctx, &ObjectRef::new("social").within(NS)).await.unwrap();
    assert!(w.deployments().is_empty(), "nothing recreated for a deleted cluster");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_in_status_without_failing_reconcile() {
    let w = World::new(Duration::ZERO, false).await;
    let mut bad = example("full.yaml");
    // The fake API runs no CEL, so this reaches the operator, as with an old API server.
    bad["spec"]["writeApi"]["autoscaling"] = json!({"minReplicas": 5, "maxReplicas": 2});
    bad["spec"]["rebuild"]["target"] = json!("nowhere");
    w.api.put(SC, NS, "socialclusters", bad);
    let st = w.reconcile("social").await;
    assert_eq!(st["phase"], "Invalid");
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("minReplicas (5) exceeds maxReplicas (2)") && msg.contains("rebuild.target \"nowhere\""),
        "{msg}"
    );
    let degraded =
        st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap().clone();
    assert_eq!(
        (degraded["status"].clone(), degraded["reason"].clone()),
        (json!("True"), json!("InvalidSpec"))
    );
    assert!(w.deployments().is_empty(), "nothing is applied from an invalid spec");
    assert_eq!(events_with(&w, "InvalidSpec"), 1);
    w.reconcile("social").await;
    assert_eq!(events_with(&w, "InvalidSpec"), 1, "the same problem is not reported again");
}

#[tokio::test]
async fn a_paused_cluster_is_left_alone() {
    let w = World::new(Duration::ZERO, false).await;
    w.api.put(SC, NS, "socialclusters", example("minimal.yaml"));
    w.reconcile("social-min").await;
    assert_eq!(w.deployments().len(), 5);
    w.edit("social-min", |s| s["paused"] = json!(true));
    w.api.delete(APPS, NS, "deployments", "social-min-gateway");
    w.settle().await;
    let st = w.reconcile("social-min").await;
    assert_eq!(w.deployments().len(), 4, "paused: no repair");
    assert_eq!(st["phase"], "Paused");
}

/// Status writes at start-up, with the watches lagging: a handful, not dozens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_writes_status_a_few_times_not_dozens() {
    let w = World::new(Duration::from_millis(800), true).await;
    w.api.put(SC, NS, "socialclusters", example("minimal.yaml"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status_writes = w.api.requests().iter().filter(|r| r.is_status_write()).count();
    let child_writes =
        w.writes().iter().filter(|r| !r.is_status_write() && !r.path.contains("/events")).count();
    eprintln!("START-UP: {status_writes} status writes, {child_writes} child writes in 5 s (12 children)");
    assert!((1..=4).contains(&status_writes), "{status_writes} status writes");
    assert_eq!(child_writes, 12, "each child applied once");
}

fn status_writes(w: &World) -> Vec<Value> {
    w.api
        .requests()
        .iter()
        .filter(|r| r.is_status_write() && r.status < 300)
        .filter_map(|r| r.body.clone())
        .map(|b| b["status"].clone())
        .collect()
}

fn applied_active(w: &World) -> Vec<String> {
    w.writes()
        .iter()
        .filter(|r| r.path.ends_with("configmaps/social-projections") && r.status < 300)
        .filter_map(|r| r.body.as_ref()?["data"]["active"].as_str().map(str::to_owned))
        .collect()
}

/// The full example (no rebuild token) with two stand-in read API pods and a projector pod, all reading
/// the primary.
async fn full_with_pods(w: &World) -> (FakePod, FakePod, FakePod) {
    let targets = ["primary", "standby"];
    let (a, b) = (FakePod::read_api("primary", &targets).await, FakePod::read_api("primary", &targets).await);
    let projector = FakePod::projector(&targets).await;
    let mut sc = example("full.yaml");
    sc["spec"]["rebuild"] = Value::Null;
    w.api.put(SC, NS, "socialclusters", sc);
    pods::register(&w.api, NS, "social", "social-read-api", &[a.port, b.port]);
    pods::register(&w.api, NS, "social", "social-projector", &[projector.port]);
    (a, b, projector)
}

/// A failover and a rebuild with every watch 1.5 s behind the writes, driven by the whole controller
/// (monitor wake-ups, watch triggers, requeues): every action happens once and nothing goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_a_lagging_watch_a_failover_and_a_rebuild_happen_exactly_once() {
    let w = World::new(Duration::from_millis(1500), true).await;
    let (a, b, projector) = full_with_pods(&w).await;
    w.wait("provisioned", Duration::from_secs(20), |w| w.deployments().len() == 5).await;
    w.make_ready();
    w.wait("available", Duration::from_secs(20), |w| w.status("social")["phase"] == "Available").await;

    // The primary fails; pod b refuses the first two switches.
    b.refuse_switches(2);
    for p in [&a, &b, &projector] {
        p.set_healthy("primary", false);
    }
    w.wait("both pods on the standby", Duration::from_secs(20), |_| {
        a.active() == "standby" && b.active() == "standby"
    })
    .await;
    w.wait("the failover completed", Duration::from_secs(20), |w| {
        let st = w.status("social");
        st["currentPrimary"] == "standby" && st["phase"] != "FailingOver" && st["targetPrimary"].is_null()
    })
    .await;

    // A rebuild, requested once, its Job run by the test.
    w.edit("social", |s| s["rebuild"] = json!({"target": "standby", "token": "r1"}));
    w.wait("the rebuild job", Duration::from_secs(20), |w| {
        !w.api.list("apis/batch/v1", NS, "jobs").is_empty()
    })
    .await;
    let mut job = w.api.list("apis/batch/v1", NS, "jobs").remove(0);
    let run_id = job["metadata"]["name"].as_str().unwrap().to_owned();
    job["status"] = json!({"active": 1});
    let job = w.api.put("apis/batch/v1", NS, "jobs", job);
    for done in [100, 500, 900] {
        projector.set_rebuild(
            "standby",
            contract::admin::RebuildProgress::at(Some(run_id.clone()), done, 1000, 0, 10_000),
        );
        let want = format!("{done}/1000");
        w.wait("progress in status", Duration::from_secs(20), |w| {
            w.status("social")["rebuild"]["progress"] == want.as_str()
        })
        .await;
    }
    let mut job = job;
    job["status"] = json!({"succeeded": 1});
    w.api.put("apis/batch/v1", NS, "jobs", job);
    w.wait("the rebuild succeeded", Duration::from_secs(20), |w| {
        w.status("social")["rebuild"]["phase"] == "Succeeded"
    })
    .await;

    // The primary is back; a switchover returns to it: a second, separate pair of Events.
    for p in [&a, &b, &projector] {
        p.set_healthy("primary", true);
    }
    w.wait("the primary healthy", Duration::from_secs(20), |w| {
        w.status("social")["projections"].as_array().is_some_and(|ps| ps.iter().all(|p| p["healthy"] == true))
    })
    .await;
    w.edit("social", |s| s["switchover"] = json!({"target": "primary"}));
    w.wait("switched back", Duration::from_secs(20), |w| w.status("social")["currentPrimary"] == "primary")
        .await;
    assert!(a.active() == "primary" && b.active() == "primary");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Exactly once each, per failover: two failovers are two Events each, with their own messages.
    for (reason, n) in
        [("FailoverStarted", 2), ("FailoverCompleted", 2), ("RebuildStarted", 1), ("RebuildSucceeded", 1)]
    {
        assert_eq!(events_with(&w, reason), n, "{reason} events");
    }
    let completed: Vec<String> = w
        .api
        .list("api/v1", NS, "events")
        .iter()
        .filter(|e| e["reason"] == "FailoverCompleted")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    let says = |t: &str| completed.iter().any(|m| m.contains(&format!("now read {t}")));
    assert!(says("standby") && says("primary"), "{completed:?}");
    assert!(events_with(&w, "FailoverIncomplete") >= 1, "the refused switch was reported");
    assert!(b.switches() >= 1, "pod b was switched on a later pass");
    let job_writes = w.writes().iter().filter(|r| r.path.contains("/jobs/")).count();
    assert_eq!(job_writes, 1, "one Job apply for one token");
    // Nothing goes backwards: the primary moves once per failover, the ConfigMap never names the failed
    // target again before the switch back, the rebuild's phase only moves forward.
    let statuses = status_writes(&w);
    let primaries: Vec<&str> = statuses.iter().filter_map(|s| s["currentPrimary"].as_str()).collect();
    let mut moves: Vec<&str> = primaries.clone();
    moves.dedup();
    assert_eq!(
        moves,
        ["primary", "standby", "primary"],
        "the primary moved once per failover: {primaries:?}"
    );
    let mut actives = applied_active(&w);
    actives.dedup();
    assert_eq!(actives, ["primary", "standby", "primary"], "ConfigMap flip-flop");
    let order = |p: &str| ["Pending", "Running", "Succeeded", "Failed"].iter().position(|x| *x == p).unwrap();
    let phases: Vec<usize> =
        statuses.iter().filter_map(|s| s["rebuild"]["phase"].as_str()).map(order).collect();
    assert!(phases.windows(2).all(|p| p[0] <= p[1]), "rebuild phase went backwards: {phases:?}");
    let conflicts = w.api.requests().iter().filter(|r| r.status == 409).count();
    eprintln!(
        "LAGGING WATCH: {} status writes, {} writes in all, {conflicts} conflicts",
        statuses.len(),
        w.writes().len()
    );
    // Decisions rest on a fresh read, not on the lagging cache: a write may race a spec edit, no more.
    assert!(conflicts <= 3, "{conflicts} writes refused as stale");
}

fn ingester_names(w: &World) -> Vec<String> {
    let mut names: Vec<String> = w
        .deployments()
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
        .filter(|n| n.contains("-ingester"))
        .collect();
    names.sort();
    names
}

fn requests_to(w: &World, method: &str, name: &str) -> usize {
    w.writes()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(&format!("deployments/{name}")))
        .count()
}

/// The scaled example (a Redis Cluster primary, a partitioned queue on a NATS cluster) with every watch
/// behind the writes: each ingester index is a Deployment created once, scaling 2 → 3 → 1 creates and
/// deletes exactly the Deployments that change (once each, even when the next reconcile still sees the
/// deleted ones in its stale cache; one ingester is one Deployment again, consuming every partition), and
/// status never goes backwards.
#[tokio::test]
async fn a_scaled_cluster_s_ingesters_scale_one_deployment_each_under_a_lagging_watch() {
    let w = World::new(Duration::from_millis(400), false).await;
    w.api.put(SC, NS, "socialclusters", example("scaled.yaml"));
    w.reconcile("social-scaled").await;
    assert_eq!(ingester_names(&w), ["social-scaled-ingester-0", "social-scaled-ingester-1"]);
    let projector = w.api.get(APPS, NS, "deployments", "social-scaled-projector").unwrap().to_string();
    assert!(projector.contains("primary=redis+cluster://$(SOCIALNET_REDIS_PRIMARY)"), "{projector}");
    w.settle().await;
    w.make_ready();
    w.settle().await;
    let st = w.reconcile("social-scaled").await;
    assert_eq!(st["components"]["ingester"]["replicas"], 2, "{st}");

    w.edit("social-scaled", |s| s["ingester"]["replicas"] = json!(3));
    w.reconcile("social-scaled").await;
    w.reconcile("social-scaled").await;
    assert_eq!(ingester_names(&w).len(), 3);
    w.settle().await;
    w.make_ready();
    w.settle().await;
    let st = w.reconcile("social-scaled").await;
    assert_eq!(st["components"]["ingester"]["readyReplicas"], 3, "{st}");

    w.edit("social-scaled", |s| s["ingester"]["replicas"] = json!(1));
    w.reconcile("social-scaled").await;
    // The watch has not shown the deletions yet: the next reconcile must not delete them again.
    w.reconcile("social-scaled").await;
    w.settle().await;
    w.reconcile("social-scaled").await;
    assert_eq!(ingester_names(&w), ["social-scaled-ingester"]);
    for i in 0..3 {
        assert_eq!(
            requests_to(&w, "DELETE", &format!("social-scaled-ingester-{i}")),
            1,
            "DELETE ingester-{i}"
        );
    }
    assert_eq!(requests_to(&w, "DELETE", "social-scaled-ingester"), 0);
    let generations: Vec<i64> =
        status_writes(&w).iter().filter_map(|s| s["observedGeneration"].as_i64()).collect();
    assert!(generations.windows(2).all(|p| p[0] <= p[1]), "observedGeneration went back: {generations:?}");
    assert_eq!(generations.last(), Some(&3));
}

/// The leader dies after writing `targetPrimary` and before switching anything. A new operator with
/// nothing in memory finishes that promotion: every read API pod and the ConfigMap move to the target once,
/// status ends with it as `currentPrimary` (one `FailoverCompleted`), and the old primary is never made
/// active again on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_finishes_the_promotion_a_dead_leader_began() {
    let w = World::new(Duration::from_millis(300), false).await;
    let (a, b, projector) = full_with_pods(&w).await;
    w.reconcile("social").await;
    w.settle().await;
    w.make_ready();
    w.settle().await;
    w.reconcile("social").await;
    assert_eq!(w.status("social")["currentPrimary"], "primary");

    // The dead leader's last act: it saw the primary fail and wrote the promotion it was starting.
    for p in [&a, &b, &projector] {
        p.set_healthy("primary", false);
    }
    let mut sc = w.api.get(SC, NS, "socialclusters", "social").unwrap();
    sc["status"]["targetPrimary"] = json!("standby");
    sc["status"]["targetPrimaryTimestamp"] = json!(chrono::Utc::now().to_rfc3339());
    w.api.put(SC, NS, "socialclusters", sc);

    let next = w.successor("test-1");
    let key = ObjectRef::new("social").within(NS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        reconcile_once(&next, &key).await.unwrap();
        let st = w.status("social");
        if st["currentPrimary"] == "standby" && st["targetPrimary"].is_null() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the promotion was not finished: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!((a.active(), b.active()), ("standby".to_owned(), "standby".to_owned()));
    assert_eq!(events_with(&w, "FailoverCompleted"), 1);
    let active = applied_active(&w);
    let first_standby = active.iter().position(|t| t == "standby").expect("the ConfigMap names the standby");
    assert!(active[first_standby..].iter().all(|t| t == "standby"), "the old primary came back: {active:?}");
    let primaries: Vec<String> =
        status_writes(&w).iter().filter_map(|s| s["currentPrimary"].as_str().map(str::to_owned)).collect();
    let switched = primaries.iter().position(|p| p == "standby").unwrap();
    assert!(primaries[switched..].iter().all(|p| p == "standby"), "{primaries:?}");
}
