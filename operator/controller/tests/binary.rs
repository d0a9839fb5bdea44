//! FAKE-API, BINARY-LEVEL TEST: the real `socialnet-operator run` process against the emulated Kubernetes
//! API (tests/fake_api), with real `socialnet` read API (two "pods"), projector, write API and ingester
//! processes on real PostgreSQL, NATS and two Redis targets. The read API pods are registered through
//! EndpointSlices as a real cluster would. The primary Redis is killed: the operator must promote the
//! standby and switch every read API pod. The time from the kill to every pod switched is printed.
#![allow(clippy::unwrap_used)]

mod fake_api;

use bytes::Bytes;
use fake_api::FakeApi;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{ChildGuard, free_port};

const NS: &str = "apps";
const SECRET: &str = "binary-test-secret-0123456789abcdef";

fn bin(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("SOCIALNET_BIN_{}", name.to_uppercase().replace('-', "_"))) {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug").join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        p.display()
    );
    p
}

fn socialnet(args: &[&str], env: &[(&str, String)]) -> ChildGuard {
    let mut c = Command::new(bin("socialnet"));
    c.args(args).env("RUST_LOG", "warn").env("SOCIALNET_JWT_SECRET", SECRET).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    ChildGuard::spawn(&mut c)
}

async fn get(port: u16, path: &str, token: &str) -> Option<Value> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await.ok()?.ok()?;
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(testkit::eventually(limit, f).await, "timed out waiting for {what}");
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

    // The cluster as a platform engineer would declare it, and its Secret.
    use base64_encode as b64;
    api.put("api/v1", NS, "secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "auth"}, "data": {"jwt": b64(SECRET)}}));
    let sc = json!({
        "apiVersion": "socialnet.io/v1alpha1", "kind": "SocialCluster", "metadata": {"name": "social"},
        "spec": {
            "image": "socialnet:test",
            "eventStore": {"primary": {"name": "stores", "key": "pg"}},
            "queue": {"primary": {"name": "stores", "key": "nats"}},
            "auth": {"jwtSecret": {"name": "auth", "key": "jwt"}},
            "projections": {"targets": [
                {"name": p, "redis": {"name": "stores", "key": "r1"}},
                {"name": s, "redis": {"name": "stores", "key": "r2"}}
            ]}
        }
    });
    api.put("apis/socialnet.io/v1alpha1", NS, "socialclusters", sc);
    // The read API "pods", registered as a real cluster's EndpointSlice controller would.
    for (n, port) in [("a", r1), ("b", r2)] {
        api.put("apis/discovery.k8s.io/v1", NS, "endpointslices", json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": format!("social-read-api-{n}"), "labels": {"kubernetes.io/service-name": "social-read-api"}},
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": port}]
        }));
    }

    let kubeconfig = std::env::temp_dir().join(format!("kubeconfig-{tag}"));
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NS}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
        api.url
    )).unwrap();
    let op_port = free_port();
    let mut op = Command::new(bin("socialnet-operator"));
    op.args(["run", "--listen", &format!("127.0.0.1:{op_port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "operator-0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let _operator = ChildGuard::spawn(&mut op);

    // Provisioned, with both targets seen healthy.
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
    wait_for("both targets healthy in status", Duration::from_secs(60), || async {
        let st = status().await;
        st["projections"]
            .as_array()
            .is_some_and(|ps| ps.len() == 2 && ps.iter().all(|p| p["healthy"] == true))
    })
    .await;
    assert_eq!(status().await["currentPrimary"], p.as_str());
    assert!(
        api.list("apis/coordination.k8s.io/v1", NS, "leases")
            .iter()
            .any(|l| l["spec"]["holderIdentity"] == "operator-0")
    );

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

    // A rebuild request: the operator creates the Job; the test plays the Job controller.
    let mut obj = api.get("apis/socialnet.io/v1alpha1", NS, "socialclusters", "social").unwrap();
    obj["spec"]["rebuild"] = json!({"target": s, "token": "one"});
    api.put("apis/socialnet.io/v1alpha1", NS, "socialclusters", obj);
    wait_for("rebuild job", Duration::from_secs(20), || async {
        !api.list("apis/batch/v1", NS, "jobs").is_empty()
    })
    .await;
    wait_for("Rebuilding in status", Duration::from_secs(20), || async {
        status().await["phase"] == "Rebuilding"
    })
    .await;
    let mut job = api.list("apis/batch/v1", NS, "jobs").remove(0);
    job["status"] = json!({"succeeded": 1});
    api.put("apis/batch/v1", NS, "jobs", job);
    wait_for("rebuild succeeded", Duration::from_secs(20), || async {
        status().await["rebuild"]["phase"] == "Succeeded"
    })
    .await;
    let _ = std::fs::remove_file(&kubeconfig);
}

fn base64_encode(s: &str) -> String {
    testkit::base64(s.as_bytes(), false)
}
