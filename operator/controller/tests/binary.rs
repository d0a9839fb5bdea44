//! FAKE-API, BINARY-LEVEL TEST: the real `socialnet-operator run` process against the emulated Kubernetes
//! API (tests/fake_api), driven with the real `kubectl` as a platform engineer would (apply, edit and
//! re-apply, get with printer columns, patch, delete), with real `socialnet` read API (two "pods"),
//! projector, write API and ingester processes on real PostgreSQL, NATS and two Redis targets. The read API
//! pods are registered through EndpointSlices as a real cluster would. The primary Redis is killed: the
//! operator must promote the standby and switch every read API pod; the time from the kill to every pod
//! switched is printed. The test plays the Job controller: it runs each rebuild Job's own command.
#![allow(clippy::unwrap_used)]

mod fake_api;
mod kubectl;
mod procs;

use fake_api::FakeApi;
use kubectl::Kubectl;
use procs::{bin, get_text, wait_for};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{ChildGuard, free_port};

const NS: &str = "apps";
const SECRET: &str = "binary-test-secret-0123456789abcdef";

fn socialnet(args: &[&str], env: &[(&str, String)]) -> ChildGuard {
    let mut c = Command::new(bin("socialnet"));
    c.args(args).env("RUST_LOG", "warn").env("SOCIALNET_JWT_SECRET", SECRET).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    ChildGuard::spawn(&mut c)
}

async fn get(port: u16, path: &str, token: &str) -> Option<Value> {
    serde_json::from_str(&get_text(port, path, Some(token)).await?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_fails_over_the_projection_and_runs_rebuilds() {
    let api = FakeApi::start().await;
    let mut primary = testkit::RedisServer::start();
    let standby_url = testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (p, s) = (format!("p{}", &tag[..8]), format!("s{}", &tag[..8]));
    let targets = format!("{p}={},{s}={standby_url}", primary.url());
    let db = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
    let common = vec![
        ("SOCIALNET_DATABASE_URL", db.clone()),
        ("SOCIALNET_NATS_URL", testkit::env_url("SOCIALNET_TEST_NATS_URL")),
        ("SOCIALNET_QUEUE_PREFIX", testkit::queue_prefix()),
        ("SOCIALNET_TARGETS", targets.clone()),
    ];
    let (w, i, pr, r1, r2) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let _write = socialnet(&["write-api", "--listen", &format!("127.0.0.1:{w}")], &common);
    let _ingester = socialnet(&["ingester", "--listen", &format!("127.0.0.1:{i}")], &common);
    let _projector = socialnet(&["projector", "run", "--listen", &format!("127.0.0.1:{pr}")], &common);
    let _read1 = socialnet(&["read-api", "--listen", &format!("127.0.0.1:{r1}")], &common);
    let _read2 = socialnet(&["read-api", "--listen", &format!("127.0.0.1:{r2}")], &common);
    let admin = http_kit::mint_token(
        SECRET.as_bytes(),
        "test",
        Duration::from_secs(3600),
        &["admin".into()],
        None,
        None,
    )
    .unwrap();

    let kubectl = Kubectl::new(&api.url, NS, &tag);
    let op_port = free_port();
    let mut op = Command::new(bin("socialnet-operator"));
    op.args(["run", "--listen", &format!("127.0.0.1:{op_port}")])
        .env("KUBECONFIG", kubectl.kubeconfig())
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "operator-0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let _operator = ChildGuard::spawn(&mut op);

    // The cluster as a platform engineer declares it, with its Secret: `kubectl apply`.
    let secret =
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: auth\nstringData:\n  jwt: {SECRET}\n");
    kubectl.ok(&["apply", "--validate=false", "-f", &kubectl.file("secret.yaml", &secret)]).await;
    let manifest = |read_replicas: u32| {
        format!(
            "apiVersion: socialnet.io/v1alpha1\nkind: SocialCluster\nmetadata:\n  name: social\nspec:\n  \
             image: socialnet:test\n  eventStore:\n    primary: {{name: stores, key: pg}}\n  queue:\n    \
             primary: {{name: stores, key: nats}}\n  auth:\n    jwtSecret: {{name: auth, key: jwt}}\n  \
             readApi:\n    replicas: {read_replicas}\n  projections:\n    targets:\n    \
             - {{name: {p}, redis: {{name: stores, key: r1}}}}\n    - {{name: {s}, redis: {{name: stores, key: r2}}}}\n"
        )
    };
    let out =
        kubectl.ok(&["apply", "--validate=false", "-f", &kubectl.file("social.yaml", &manifest(2))]).await;
    assert!(out.contains("socialcluster.socialnet.io/social created"), "{out}");
    // The read API "pods" and the projector, registered as a real cluster's EndpointSlice controller would.
    for (service, n, port) in
        [("social-read-api", "a", r1), ("social-read-api", "b", r2), ("social-projector", "a", pr)]
    {
        api.put("apis/discovery.k8s.io/v1", NS, "endpointslices", json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": format!("{service}-{n}"), "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": port}]
        }));
    }

    // Provisioned: every object owned by the SocialCluster, status set, both targets seen healthy.
    let status = || {
        let api = api.clone();
        async move {
            api.get("apis/socialnet.io/v1alpha1", NS, "socialclusters", "social")
                .and_then(|v| v.get("status").cloned())
                .unwrap_or(Value::Null)
        }
    };
    wait_for("deployments", Duration::from_secs(30), || async {
        api.list("apis/apps/v1", NS, "deployments").len() == 5
    })
    .await;
    let uid =
        api.get("apis/socialnet.io/v1alpha1", NS, "socialclusters", "social").unwrap()["metadata"]["uid"]
            .clone();
    for (prefix, plural) in
        [("apis/apps/v1", "deployments"), ("api/v1", "services"), ("api/v1", "configmaps")]
    {
        // The reconcile applies kinds one after another: the deployments may be there before the rest.
        wait_for(plural, Duration::from_secs(30), || async { !api.list(prefix, NS, plural).is_empty() })
            .await;
        let objects = api.list(prefix, NS, plural);
        for o in objects {
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(
                owner["uid"], uid,
                "{plural} {} is not owned by the SocialCluster",
                o["metadata"]["name"]
            );
            assert_eq!(owner["controller"], true);
        }
    }
    let read_replicas = || {
        let api = api.clone();
        async move {
            api.get("apis/apps/v1", NS, "deployments", "social-read-api").unwrap()["spec"]["replicas"].clone()
        }
    };
    assert_eq!(read_replicas().await, 2);
    wait_for("both targets healthy in status", Duration::from_secs(60), || async {
        let st = status().await;
        st["projections"]
            .as_array()
            .is_some_and(|ps| ps.len() == 2 && ps.iter().all(|p| p["healthy"] == true))
    })
    .await;
    assert_eq!(status().await["currentPrimary"], p.as_str());
    // Lag as the projector reports it (events and seconds), for every target.
    wait_for("the projector's lag in status", Duration::from_secs(20), || async {
        status().await["projections"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["lagSeconds"].is_number() && p["lagEvents"].is_number()))
    })
    .await;
    assert!(
        api.list("apis/coordination.k8s.io/v1", NS, "leases")
            .iter()
            .any(|l| l["spec"]["holderIdentity"] == "operator-0")
    );
    // `kubectl get` shows the printer columns; jsonpath reads status as a user would.
    let table = kubectl.ok(&["get", "socialclusters"]).await;
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "PHASE", "PRIMARY", "READY", "REBUILD", "AGE"], "{table}");
    assert!(table.lines().any(|l| l.starts_with("social ") && l.contains(p.as_str())), "{table}");
    let observed = kubectl.ok(&["get", "sc", "social", "-o", "jsonpath={.status.observedGeneration}"]).await;
    assert_eq!(observed.trim(), "1");

    // The engineer edits the manifest and applies it again: the change reaches the Deployment.
    kubectl.ok(&["apply", "--validate=false", "-f", &kubectl.file("social.yaml", &manifest(3))]).await;
    wait_for("read API scaled to 3", Duration::from_secs(20), || async { read_replicas().await == 3 }).await;

    // An owned Deployment deleted by hand is recreated.
    let old_uid =
        api.get("apis/apps/v1", NS, "deployments", "social-write-api").unwrap()["metadata"]["uid"].clone();
    kubectl.ok(&["delete", "deployment", "social-write-api", "--wait=false"]).await;
    wait_for("write API Deployment recreated", Duration::from_secs(20), || async {
        api.get("apis/apps/v1", NS, "deployments", "social-write-api")
            .is_some_and(|d| d["metadata"]["uid"] != old_uid)
    })
    .await;

    // An invalid SocialCluster beside it (the fake API runs no CEL) is reported in its status, not crashed on.
    let bad = "apiVersion: socialnet.io/v1alpha1\nkind: SocialCluster\nmetadata:\n  name: bad\nspec:\n  \
               image: socialnet:test\n  eventStore:\n    primary: {name: stores, key: pg}\n  queue:\n    \
               primary: {name: stores, key: nats}\n  auth:\n    jwtSecret: {name: auth, key: jwt}\n  \
               writeApi:\n    replicas: 500\n  projections:\n    targets:\n    - {name: main, redis: {name: stores, key: r1}}\n";
    kubectl.ok(&["apply", "--validate=false", "-f", &kubectl.file("bad.yaml", bad)]).await;
    wait_for("the invalid cluster reported", Duration::from_secs(20), || async {
        let conditions = kubectl
            .run(&["get", "sc", "bad", "-o", "jsonpath={.status.conditions[?(@.type==\"Degraded\")].reason}"])
            .await;
        conditions.1.trim() == "InvalidSpec"
    })
    .await;
    let message = kubectl.ok(&["get", "sc", "bad", "-o", "jsonpath={.status.message}"]).await;
    assert!(message.contains("spec.writeApi.replicas must be between 0 and 100"), "{message}");
    assert!(api.get("apis/apps/v1", NS, "deployments", "bad-write-api").is_none());

    // Kill the primary Redis; measure until every read API pod reads the standby.
    primary.stop();
    let killed = Instant::now();
    wait_for("both read API pods switched", Duration::from_secs(60), || async {
        let mut ok = 0;
        for port in [r1, r2] {
            if get(port, "/admin/projections", &admin).await.is_some_and(|v| v["active"] == s.as_str()) {
                ok += 1;
            }
        }
        ok == 2
    })
    .await;
    let switched = killed.elapsed();
    eprintln!("FAILOVER: primary Redis killed -> every read API pod switched in {} ms", switched.as_millis());
    wait_for("status records the failover", Duration::from_secs(10), || async {
        status().await["currentPrimary"] == s.as_str()
    })
    .await;
    let st = status().await;
    assert_eq!(st["lastFailover"]["from"], p.as_str());
    assert_eq!(st["lastFailover"]["reason"], "PrimaryFailed");
    assert!(st["targetPrimary"].is_null());
    let cm = api.get("api/v1", NS, "configmaps", "social-projections").unwrap();
    assert_eq!(cm["data"]["active"], s.as_str());
    let reasons: Vec<String> = api
        .list("apis/events.k8s.io/v1", NS, "events")
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons.iter().any(|r| r == "FailoverStarted") && reasons.iter().any(|r| r == "FailoverCompleted"),
        "{reasons:?}"
    );

    // The test plays the Job controller: the rebuild Job of `target` succeeds, and status follows.
    // It runs the Job's own command, as the pod would, with the projector's environment.
    let finish_rebuild = |target: String| {
        let (api, common) = (api.clone(), common.clone());
        async move {
            let job_of = |target: &str| {
                api.list("apis/batch/v1", NS, "jobs")
                    .into_iter()
                    .find(|j| j["metadata"]["labels"]["socialnet.io/rebuild-target"] == target)
            };
            wait_for("the rebuild job", Duration::from_secs(30), || async { job_of(&target).is_some() })
                .await;
            let mut job = job_of(&target).unwrap();
            let args: Vec<String> =
                serde_json::from_value(job["spec"]["template"]["spec"]["containers"][0]["args"].clone())
                    .unwrap();
            let mut cmd = tokio::process::Command::new(bin("socialnet"));
            cmd.args(&args).env("RUST_LOG", "warn").env("SOCIALNET_JWT_SECRET", SECRET).stdout(Stdio::null());
            for (k, v) in &common {
                cmd.env(k, v);
            }
            let run = tokio::time::timeout(Duration::from_secs(60), cmd.status()).await;
            assert!(run.is_ok_and(|s| s.is_ok_and(|s| s.success())), "the Job's command {args:?} failed");
            job["status"] = json!({"succeeded": 1});
            api.put("apis/batch/v1", NS, "jobs", job);
        }
    };
    let rebuild_phase = |target: String| async move {
        let st = status().await;
        (st["rebuild"]["target"] == target.as_str())
            .then(|| st["rebuild"]["phase"].as_str().unwrap_or("").to_owned())
    };

    // The failed primary comes back empty: the operator rebuilds it on its own.
    primary.start_again();
    wait_for("an automatic rebuild of the returned primary", Duration::from_secs(30), || async {
        rebuild_phase(p.clone()).await.is_some_and(|ph| ph == "Running" || ph == "Pending")
    })
    .await;
    finish_rebuild(p.clone()).await;
    wait_for("the automatic rebuild succeeded", Duration::from_secs(20), || async {
        rebuild_phase(p.clone()).await.as_deref() == Some("Succeeded")
    })
    .await;
    assert_eq!(status().await["lastFailover"]["rebuilt"], true, "one automatic rebuild per failover");

    // A rebuild request with kubectl: the operator creates the Job and follows it.
    let patch = format!("{{\"spec\":{{\"rebuild\":{{\"target\":\"{s}\",\"token\":\"one\"}}}}}}");
    kubectl.ok(&["patch", "socialcluster", "social", "--type=merge", "-p", &patch]).await;
    wait_for("Rebuilding in status", Duration::from_secs(20), || async {
        status().await["phase"] == "Rebuilding" && rebuild_phase(s.clone()).await.is_some()
    })
    .await;
    finish_rebuild(s.clone()).await;
    wait_for("rebuild succeeded", Duration::from_secs(20), || async {
        rebuild_phase(s.clone()).await.as_deref() == Some("Succeeded")
    })
    .await;
    let table = kubectl.ok(&["get", "socialclusters", "social"]).await;
    assert!(table.lines().nth(1).is_some_and(|row| row.contains("Succeeded")), "{table}");
}
