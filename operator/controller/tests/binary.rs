//! FAKE-API, BINARY-LEVEL TEST: the real `socialnet-operator run` process against the emulated Kubernetes
//! API (tests/fake_api, which records every request), driven with the real `kubectl` as a platform
//! engineer would, with real `socialnet` read API (two "pods"), projector, write API and ingester
//! processes on real PostgreSQL, NATS and two Redis targets; pods registered through EndpointSlices as
//! a real cluster would. The test plays the Deployment controller (pods ready) and the Job controller (it
//! runs each rebuild Job's own command). It measures and prints: the operator's API requests per minute
//! in steady state, the time from killing the primary Redis to every read API pod switched, and the
//! rebuild progress status showed while a rebuild ran.
#![allow(clippy::unwrap_used)]

mod fake_api;
mod history;
mod kubectl;
mod pods;
mod procs;
mod rbac;

use fake_api::FakeApi;
use kubectl::Kubectl;
use procs::{bin, get_text, send, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use testkit::{ChildGuard, free_port};

const NS: &str = "apps";
const SECRET: &str = "binary-test-secret-0123456789abcdef";
const SC: &str = "apis/socialnet.io/v1alpha1";
/// Events in the history the rebuilds replay: enough for a debug-build rebuild to take a few seconds.
const HISTORY_POSTS: usize = 100_000;

fn socialnet(args: &[&str], env: &[(&str, String)]) -> ChildGuard {
    let mut c = Command::new(bin("socialnet"));
    c.args(args).env("RUST_LOG", "warn").env("SOCIALNET_JWT_SECRET", SECRET).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    ChildGuard::spawn(&mut c)
}

fn token(sub: &str, roles: &[String]) -> String {
    http_kit::mint_token(SECRET.as_bytes(), sub, Duration::from_secs(3600), roles, None, None).unwrap()
}

/// Everything the test runs.
struct Stack {
    api: FakeApi,
    kubectl: Kubectl,
    primary: testkit::RedisServer,
    common: Vec<(&'static str, String)>,
    ports: Ports,
    p: String,
    s: String,
    _procs: Vec<ChildGuard>,
}

struct Ports {
    write: u16,
    read: [u16; 2],
    projector: u16,
}

impl Stack {
    async fn start() -> Stack {
        let api = FakeApi::start().await;
        let primary = testkit::RedisServer::start();
        let standby_url = testkit::env_url("SOCIALNET_TEST_REDIS_STANDBY_URL");
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (p, s) = (format!("p{}", &tag[..8]), format!("s{}", &tag[..8]));
        let db = testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await;
        let seeded = Instant::now();
        let events = history::seed(&db, 200, HISTORY_POSTS).await;
        eprintln!("HISTORY: {events} events written in {} ms", seeded.elapsed().as_millis());
        let common = vec![
            ("SOCIALNET_DATABASE_URL", db),
            ("SOCIALNET_NATS_URL", testkit::env_url("SOCIALNET_TEST_NATS_URL")),
            ("SOCIALNET_QUEUE_PREFIX", testkit::queue_prefix()),
            ("SOCIALNET_TARGETS", format!("{p}={},{s}={standby_url}", primary.url())),
        ];
        let (w, i, pr, r1, r2) = (free_port(), free_port(), free_port(), free_port(), free_port());
        let listen = |port: u16| format!("127.0.0.1:{port}");
        let procs = vec![
            socialnet(&["write-api", "--listen", &listen(w)], &common),
            socialnet(&["ingester", "--listen", &listen(i)], &common),
            socialnet(&["projector", "run", "--listen", &listen(pr)], &common),
            socialnet(&["read-api", "--listen", &listen(r1)], &common),
            socialnet(&["read-api", "--listen", &listen(r2)], &common),
        ];
        // The pods behind their Services, as the EndpointSlice controller registers them.
        pods::register(&api, NS, "social", "social-read-api", &[r1, r2]);
        pods::register(&api, NS, "social", "social-projector", &[pr]);
        let kubectl = Kubectl::new(&api.url, NS, &tag);
        Stack {
            api,
            kubectl,
            primary,
            common,
            ports: Ports { write: w, read: [r1, r2], projector: pr },
            p,
            s,
            _procs: procs,
        }
    }

    fn operator(&self) -> ChildGuard {
        let mut op = Command::new(bin("socialnet-operator"));
        op.args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
            .env("KUBECONFIG", self.kubectl.kubeconfig())
            .env("POD_NAMESPACE", NS)
            .env("POD_NAME", "operator-0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        ChildGuard::spawn(&mut op)
    }

    fn manifest(&self, read_replicas: u32) -> String {
        format!(
            "apiVersion: socialnet.io/v1alpha1\nkind: SocialCluster\nmetadata:\n  name: social\nspec:\n  \
             image: socialnet:test\n  eventStore:\n    primary: {{name: stores, key: pg}}\n  queue:\n    \
             primary: {{name: stores, key: nats}}\n  auth:\n    jwtSecret: {{name: auth, key: jwt}}\n  \
             readApi:\n    replicas: {read_replicas}\n  projections:\n    targets:\n    \
             - {{name: {}, redis: {{name: stores, key: r1}}}}\n    - {{name: {}, redis: {{name: stores, key: r2}}}}\n",
            self.p, self.s
        )
    }

    fn status(&self) -> Value {
        self.api.get(SC, NS, "socialclusters", "social").map(|c| c["status"].clone()).unwrap_or(Value::Null)
    }

    /// Play the Deployment controller: every pod wanted is ready.
    fn make_ready(&self) {
        for mut d in self.api.list("apis/apps/v1", NS, "deployments") {
            let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
            if d["status"]["readyReplicas"] != want {
                d["status"] = json!({"replicas": want, "readyReplicas": want});
                self.api.put("apis/apps/v1", NS, "deployments", d);
            }
        }
    }

    async fn actives(&self) -> Vec<String> {
        let admin = token("test", &["admin".into()]);
        let mut out = Vec::new();
        for port in self.ports.read {
            let v: Option<Value> = get_text(port, "/admin/projections", Some(&admin))
                .await
                .and_then(|t| serde_json::from_str(&t).ok());
            out.push(v.and_then(|v| v["active"].as_str().map(str::to_owned)).unwrap_or_default());
        }
        out
    }

    /// The operator's own requests (not kubectl's) since `from`, watches and Lease renewals left out.
    fn operator_requests(&self, from: Duration) -> Vec<fake_api::Request> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.at >= from && !r.is_kubectl() && !r.is_watch() && !r.is_lease())
            .collect()
    }

    /// Run a rebuild Job's own command, as its pod would, with the projector's environment.
    async fn run_job(&self, job: &Value) {
        let args: Vec<String> =
            serde_json::from_value(job["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap();
        let mut cmd = tokio::process::Command::new(bin("socialnet"));
        cmd.args(&args)
            .env("RUST_LOG", "warn")
            .env("SOCIALNET_JWT_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &self.common {
            cmd.env(k, v);
        }
        let run = tokio::time::timeout(Duration::from_secs(120), cmd.status()).await;
        assert!(run.is_ok_and(|s| s.is_ok_and(|s| s.success())), "the Job's command {args:?} failed");
    }

    fn job_for(&self, target: &str) -> Option<Value> {
        self.api
            .list("apis/batch/v1", NS, "jobs")
            .into_iter()
            .find(|j| j["metadata"]["labels"]["socialnet.io/rebuild-target"] == target)
    }

    fn event_count(&self, reason: &str) -> usize {
        self.api.list("api/v1", NS, "events").iter().filter(|e| e["reason"] == reason).count()
    }
}

/// Steady traffic while it runs: a post every 100 ms through the write API, homes read on both read API pods.
fn traffic(stack: &Stack, stop: Arc<AtomicBool>) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let (write, reads) = (stack.ports.write, stack.ports.read);
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let handle = tokio::spawn(async move {
        let t = token("alice", &[]);
        let _ = send(
            write,
            "POST",
            "/v1/users",
            Some(&t),
            Some(r#"{"handle":"alice","display_name":"Alice"}"#.into()),
        )
        .await;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let body = format!(r#"{{"body":"steady traffic {n}"}}"#);
            if send(write, "POST", "/v1/posts", Some(&t), Some(body)).await.is_some_and(|(s, _)| s == 202) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            for port in reads {
                let _ = get_text(port, "/v1/users/alice/home", Some(&t)).await;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (handle, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_runs_a_cluster_quietly_fails_over_fast_and_shows_rebuild_progress() {
    let mut stack = Stack::start().await;
    let _operator = stack.operator();
    provision(&stack).await;
    quiet_in_steady_state(&stack).await;
    kubectl_story(&stack).await;
    failover(&mut stack).await;
    automatic_rebuild_with_progress(&mut stack).await;
    switchover_and_requested_rebuild(&stack).await;
    rbac_covers_every_call(&stack);
    status_command(&stack).await;
    deletion(&stack).await;
}

async fn provision(stack: &Stack) {
    let k = &stack.kubectl;
    let secret =
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: auth\nstringData:\n  jwt: {SECRET}\n");
    k.ok(&["apply", "--validate=false", "-f", &k.file("secret.yaml", &secret)]).await;
    let out = k.ok(&["apply", "--validate=false", "-f", &k.file("social.yaml", &stack.manifest(2))]).await;
    assert!(out.contains("socialcluster.socialnet.io/social created"), "{out}");
    wait_for("deployments", Duration::from_secs(30), || async {
        stack.api.list("apis/apps/v1", NS, "deployments").len() == 5
    })
    .await;
    let uid = stack.api.get(SC, NS, "socialclusters", "social").unwrap()["metadata"]["uid"].clone();
    for (prefix, plural) in
        [("apis/apps/v1", "deployments"), ("api/v1", "services"), ("api/v1", "configmaps")]
    {
        wait_for(plural, Duration::from_secs(30), || async {
            !stack.api.list(prefix, NS, plural).is_empty()
        })
        .await;
        for o in stack.api.list(prefix, NS, plural) {
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(
                (owner["uid"].clone(), owner["controller"].clone()),
                (uid.clone(), json!(true)),
                "{plural} {}",
                o["metadata"]["name"]
            );
        }
    }
    stack.make_ready();
    wait_for("Available with both targets healthy", Duration::from_secs(90), || async {
        let st = stack.status();
        st["phase"] == "Available"
            && st["projections"]
                .as_array()
                .is_some_and(|ps| ps.len() == 2 && ps.iter().all(|p| p["healthy"] == true))
    })
    .await;
    assert_eq!(stack.status()["currentPrimary"], stack.p.as_str());
    // The projector has caught up with the history on both targets.
    let caught_up = Instant::now();
    let admin = token("test", &["admin".into()]);
    wait_for("the projector caught up", Duration::from_secs(240), || async {
        let v: Option<Value> = get_text(stack.ports.projector, "/admin/projections", Some(&admin))
            .await
            .and_then(|t| serde_json::from_str(&t).ok());
        v.is_some_and(|v| {
            v["targets"]
                .as_array()
                .is_some_and(|ts| ts.iter().all(|t| t["lag_events"].as_i64().is_some_and(|l| l < 100)))
        })
    })
    .await;
    eprintln!(
        "CATCH-UP: the projector caught up {} ms after the cluster was Available",
        caught_up.elapsed().as_millis()
    );
    assert_eq!(stack.event_count("FailoverStarted"), 0, "a target that is only behind is not failed over");
}

/// With one Ready cluster, two healthy targets and steady traffic, the operator makes at most 10 API
/// requests per minute (watches and Lease renewals left out) and writes status not at all.
async fn quiet_in_steady_state(stack: &Stack) {
    let stop = Arc::new(AtomicBool::new(false));
    let (traffic, posts) = traffic(stack, stop.clone());
    // Settled: no request from the operator for 5 s.
    let settled = Instant::now();
    wait_for("the operator to settle", Duration::from_secs(60), || async {
        let since = stack.api.now().saturating_sub(Duration::from_secs(5));
        stack.api.now() > Duration::from_secs(5) && stack.operator_requests(since).is_empty()
    })
    .await;
    let settled = settled.elapsed();
    let from = stack.api.now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let requests = stack.operator_requests(from);
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let status_writes = requests.iter().filter(|r| r.is_status_write()).count();
    let leases = stack.api.requests().iter().filter(|r| r.at >= from && r.is_lease()).count();
    let listed: Vec<String> = requests.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    eprintln!(
        "STEADY STATE: {} API requests in 60 s ({status_writes} status writes; {leases} Lease requests left out) \
         while {} posts were accepted; settled after {} ms: {listed:?}",
        requests.len(),
        posts.load(Ordering::Relaxed),
        settled.as_millis()
    );
    assert!(posts.load(Ordering::Relaxed) > 100, "the traffic did not flow");
    assert!(requests.len() <= 10, "{} requests in a minute: {listed:?}", requests.len());
    assert_eq!(status_writes, 0, "status written in steady state");
}

async fn kubectl_story(stack: &Stack) {
    let k = &stack.kubectl;
    let table = k.ok(&["get", "socialclusters"]).await;
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "PHASE", "PRIMARY", "READY", "REBUILD", "PROGRESS", "AGE"], "{table}");
    assert!(table.lines().any(|l| l.starts_with("social ") && l.contains(stack.p.as_str())), "{table}");
    let observed = k.ok(&["get", "snc", "social", "-o", "jsonpath={.status.observedGeneration}"]).await;
    assert_eq!(observed.trim(), "1", "the short name reaches the SocialCluster");
    // The engineer edits the manifest and applies it again: the change reaches the Deployment.
    k.ok(&["apply", "--validate=false", "-f", &k.file("social.yaml", &stack.manifest(3))]).await;
    let replicas = || async {
        stack.api.get("apis/apps/v1", NS, "deployments", "social-read-api").unwrap()["spec"]["replicas"]
            .clone()
    };
    wait_for("read API scaled to 3", Duration::from_secs(20), || async { replicas().await == 3 }).await;
    stack.make_ready();
    // An owned Deployment deleted by hand is recreated.
    let old =
        stack.api.get("apis/apps/v1", NS, "deployments", "social-write-api").unwrap()["metadata"]["uid"]
            .clone();
    k.ok(&["delete", "deployment", "social-write-api", "--wait=false"]).await;
    wait_for("write API Deployment recreated", Duration::from_secs(20), || async {
        stack
            .api
            .get("apis/apps/v1", NS, "deployments", "social-write-api")
            .is_some_and(|d| d["metadata"]["uid"] != old)
    })
    .await;
    stack.make_ready();
    // An invalid SocialCluster beside it (the fake API runs no CEL) is reported in its status.
    let bad = "apiVersion: socialnet.io/v1alpha1\nkind: SocialCluster\nmetadata:\n  name: bad\nspec:\n  \
               image: socialnet:test\n  eventStore:\n    primary: {name: stores, key: pg}\n  queue:\n    \
               primary: {name: stores, key: nats}\n  auth:\n    jwtSecret: {name: auth, key: jwt}\n  \
               writeApi:\n    replicas: 500\n  projections:\n    targets:\n    - {name: main, redis: {name: stores, key: r1}}\n";
    k.ok(&["apply", "--validate=false", "-f", &k.file("bad.yaml", bad)]).await;
    wait_for("the invalid cluster reported", Duration::from_secs(20), || async {
        let r = k
            .run(&[
                "get",
                "snc",
                "bad",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Degraded\")].reason}",
            ])
            .await;
        r.1.trim() == "InvalidSpec"
    })
    .await;
    let message = k.ok(&["get", "snc", "bad", "-o", "jsonpath={.status.message}"]).await;
    assert!(message.contains("spec.writeApi.replicas must be between 0 and 100"), "{message}");
    assert!(stack.api.get("apis/apps/v1", NS, "deployments", "bad-write-api").is_none());
    wait_for("Available again", Duration::from_secs(30), || async { stack.status()["phase"] == "Available" })
        .await;
}

/// Kill the primary Redis; every read API pod must read the standby within 2 s.
async fn failover(stack: &mut Stack) {
    let s = stack.s.clone();
    stack.primary.stop();
    let killed = Instant::now();
    wait_for("both read API pods switched", Duration::from_secs(30), || async {
        stack.actives().await.iter().all(|a| *a == s)
    })
    .await;
    let switched = killed.elapsed();
    eprintln!("FAILOVER: primary Redis killed -> every read API pod switched in {} ms", switched.as_millis());
    wait_for("status records the failover", Duration::from_secs(10), || async {
        let st = stack.status();
        st["currentPrimary"] == s.as_str() && st["targetPrimary"].is_null() && st["phase"] != "FailingOver"
    })
    .await;
    let st = stack.status();
    assert_eq!(
        (st["lastFailover"]["from"].clone(), st["lastFailover"]["reason"].clone()),
        (json!(stack.p), json!("PrimaryFailed"))
    );
    assert!(st["lastFailover"]["durationMs"].as_i64().is_some(), "{st}");
    assert_eq!(
        stack.api.get("api/v1", NS, "configmaps", "social-projections").unwrap()["data"]["active"],
        s.as_str()
    );
    assert_eq!((stack.event_count("FailoverStarted"), stack.event_count("FailoverCompleted")), (1, 1));
    assert!(switched < Duration::from_secs(2), "failover took {} ms", switched.as_millis());
}

/// The failed primary comes back empty: the operator rebuilds it on its own, and status shows the
/// rebuild's progress (events done / total) move while its Job runs.
async fn automatic_rebuild_with_progress(stack: &mut Stack) {
    let p = stack.p.clone();
    stack.primary.start_again();
    wait_for("an automatic rebuild of the returned primary", Duration::from_secs(30), || async {
        stack.job_for(&p).is_some()
    })
    .await;
    let st = stack.status();
    assert_eq!(
        (st["rebuild"]["target"].clone(), st["rebuild"]["automatic"].clone()),
        (json!(p), json!(true))
    );
    let mut job = stack.job_for(&p).unwrap();
    job["status"] = json!({"active": 1});
    let job = stack.api.put("apis/batch/v1", NS, "jobs", job);
    // Sample status while the Job's command runs.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (api, seen, stop) = (stack.api.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let progress = api
                    .get(SC, NS, "socialclusters", "social")
                    .and_then(|c| c["status"]["rebuild"]["progress"].as_str().map(str::to_owned));
                {
                    let mut seen = seen.lock().unwrap();
                    if let Some(v) = progress.filter(|v| seen.last() != Some(v)) {
                        seen.push(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    stack.run_job(&job).await;
    eprintln!("REBUILD: the automatic rebuild's Job ran {} ms", started.elapsed().as_millis());
    let mut job = job;
    job["status"] = json!({"succeeded": 1});
    stack.api.put("apis/batch/v1", NS, "jobs", job);
    wait_for("the automatic rebuild succeeded", Duration::from_secs(20), || async {
        stack.status()["rebuild"]["phase"] == "Succeeded"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    eprintln!("REBUILD PROGRESS in status: {seen:?}");
    let during: BTreeSet<&String> =
        seen.iter().filter(|v| v.split('/').next() != v.split('/').nth(1)).collect();
    assert!(
        during.len() >= 3,
        "status showed {} distinct done/total values while the rebuild ran: {seen:?}",
        during.len()
    );
    let last = stack.status()["rebuild"].clone();
    let total = last["eventsTotal"].as_i64().unwrap();
    assert_eq!(last["progress"], format!("{total}/{total}"), "ends at total");
    assert!(total >= HISTORY_POSTS as i64, "{last}");
    assert_eq!(stack.status()["lastFailover"]["rebuilt"], true, "one automatic rebuild per failover");
}

/// A manual switchover back to the rebuilt primary, then a rebuild requested by its token.
async fn switchover_and_requested_rebuild(stack: &Stack) {
    let (k, p, s) = (&stack.kubectl, stack.p.clone(), stack.s.clone());
    wait_for("the rebuilt primary healthy", Duration::from_secs(30), || async {
        stack.status()["projections"].as_array().is_some_and(|ps| ps.iter().all(|t| t["healthy"] == true))
    })
    .await;
    let patch = format!("{{\"spec\":{{\"switchover\":{{\"target\":\"{p}\"}}}}}}");
    k.ok(&["patch", "snc", "social", "--type=merge", "-p", &patch]).await;
    let asked = Instant::now();
    wait_for("both pods back on the primary", Duration::from_secs(20), || async {
        stack.actives().await.iter().all(|a| *a == p)
    })
    .await;
    eprintln!("SWITCHOVER: requested -> every read API pod switched in {} ms", asked.elapsed().as_millis());
    wait_for("status records the switchover", Duration::from_secs(10), || async {
        let st = stack.status();
        st["currentPrimary"] == p.as_str() && st["lastFailover"]["reason"] == "Switchover"
    })
    .await;

    let patch = format!("{{\"spec\":{{\"rebuild\":{{\"target\":\"{s}\",\"token\":\"one\"}}}}}}");
    k.ok(&["patch", "socialcluster", "social", "--type=merge", "-p", &patch]).await;
    wait_for("the requested rebuild's Job", Duration::from_secs(20), || async {
        stack.status()["rebuild"]["token"] == "one" && stack.job_for(&s).is_some()
    })
    .await;
    let job = stack.job_for(&s).unwrap();
    assert_eq!(job["metadata"]["annotations"]["socialnet.io/rebuild-token"], "one");
    stack.run_job(&job).await;
    let mut job = job;
    job["status"] = json!({"succeeded": 1});
    stack.api.put("apis/batch/v1", NS, "jobs", job);
    wait_for("the requested rebuild succeeded", Duration::from_secs(20), || async {
        let rb = stack.status()["rebuild"].clone();
        rb["token"] == "one" && rb["phase"] == "Succeeded"
    })
    .await;
    let table = k.ok(&["get", "socialclusters", "social"]).await;
    assert!(table.lines().nth(1).is_some_and(|row| row.contains("Succeeded")), "{table}");
    assert_eq!(stack.event_count("RebuildStarted"), 2, "one automatic, one requested");
}

/// Every call the operator made is granted by the chart's RBAC rules.
fn rbac_covers_every_call(stack: &Stack) {
    let calls: BTreeSet<rbac::Call> =
        stack.api.requests().iter().filter(|r| !r.is_kubectl()).filter_map(rbac::call).collect();
    assert!(calls.len() >= 10, "{calls:?}");
    let missing = rbac::missing(&calls);
    assert!(missing.is_empty(), "calls the chart's RBAC does not grant: {missing:?}");
}

/// `socialnet-operator status` against the API, as an engineer runs it.
async fn status_command(stack: &Stack) {
    let out = tokio::process::Command::new(bin("socialnet-operator"))
        .args(["status", "social", "-n", NS])
        .env("KUBECONFIG", stack.kubectl.kubeconfig())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let needles = [
        "SocialCluster apps/social: Available".to_owned(),
        format!("Projections: primary {}", stack.p),
        format!("last failover: {} -> {} (Switchover)", stack.s, stack.p),
        "Last rebuild of".to_owned(),
        "progress: ".to_owned(),
        "FailoverCompleted".to_owned(),
        "RebuildSucceeded".to_owned(),
    ];
    for n in needles {
        assert!(text.contains(&n), "status output lacks {n:?}:\n{text}");
    }
}

/// Deleting the SocialCluster removes what it owns (garbage collection by owner reference), and the
/// operator recreates none of it.
async fn deletion(stack: &Stack) {
    stack.kubectl.ok(&["delete", "socialcluster", "social", "--wait=false"]).await;
    wait_for("the cluster's objects gone", Duration::from_secs(10), || async {
        stack
            .api
            .list("apis/apps/v1", NS, "deployments")
            .iter()
            .all(|d| d["metadata"]["labels"]["app.kubernetes.io/instance"] != "social")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = stack
        .api
        .list("apis/apps/v1", NS, "deployments")
        .iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/instance"] == "social")
        .count();
    assert_eq!(left, 0, "the operator recreated objects of a deleted cluster");
}
