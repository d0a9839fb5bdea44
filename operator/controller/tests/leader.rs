//! FAKE-API, BINARY-LEVEL TEST of leader election: real `socialnet-operator run` processes against the
//! emulated Kubernetes API (tests/fake_api). Only the Lease holder reconciles (the other's reconcile
//! counter stays at zero); when the holder is killed, the standby takes the Lease over once it has seen
//! it unrenewed for a whole lease (on its own clock) and reconciles from then on; a holder stopped with
//! SIGTERM releases the Lease and a standby takes over at once. What a real cluster adds (API server
//! latency, pods rescheduled) is listed in e2e/README.md.
#![allow(clippy::unwrap_used)]

mod fake_api;
mod kubectl;
mod procs;

use fake_api::FakeApi;
use kubectl::Kubectl;
use procs::{bin, get_text, wait_for};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{ChildGuard, free_port};

const NS: &str = "ops";
const LEASE_SECONDS: u64 = 3;

fn operator(kubectl: &Kubectl, identity: &str, port: u16) -> ChildGuard {
    let mut op = Command::new(bin("socialnet-operator"));
    op.args(["run", "--listen", &format!("127.0.0.1:{port}"), "--lease-seconds", &LEASE_SECONDS.to_string()])
        .env("KUBECONFIG", kubectl.kubeconfig())
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", identity)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    ChildGuard::spawn(&mut op)
}

/// The operator's `socialnet_operator_reconciles_total`, 0 when it has not reconciled yet; `None` when
/// its metrics endpoint does not answer.
async fn reconciles(port: u16) -> Option<f64> {
    let text = get_text(port, "/metrics", None).await?;
    Some(
        text.lines()
            .find(|l| l.starts_with("socialnet_operator_reconciles_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let api = FakeApi::start().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let kubectl = Kubectl::new(&api.url, NS, &tag);
    let holder = || {
        let api = api.clone();
        async move {
            api.get("apis/coordination.k8s.io/v1", NS, "leases", "socialnet-operator-leader")
                .map(|l| (l["spec"]["holderIdentity"].clone(), l["spec"]["leaseTransitions"].clone()))
        }
    };
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = operator(&kubectl, "op-a", port_a);
    wait_for("op-a to lead", Duration::from_secs(20), || async {
        holder().await.is_some_and(|(h, _)| h == "op-a")
    })
    .await;
    let _b = operator(&kubectl, "op-b", port_b);
    wait_for("op-b to serve its metrics", Duration::from_secs(20), || async {
        reconciles(port_b).await.is_some()
    })
    .await;

    api.put(
        "apis/socialnet.io/v1alpha1",
        NS,
        "socialclusters",
        json!({
            "apiVersion": "socialnet.io/v1alpha1", "kind": "SocialCluster", "metadata": {"name": "social"},
            "spec": {
                "image": "socialnet:test",
                "eventStore": {"primary": {"name": "stores", "key": "pg"}},
                "queue": {"primary": {"name": "stores", "key": "nats"}},
                "auth": {"jwtSecret": {"name": "auth", "key": "jwt"}},
                "projections": {"targets": [{"name": "main", "redis": {"name": "stores", "key": "r1"}}]}
            }
        }),
    );
    wait_for("the leader to provision", Duration::from_secs(20), || async {
        api.list("apis/apps/v1", NS, "deployments").len() == 5
    })
    .await;
    // Over more than a whole lease period, the standby keeps the Lease untouched and reconciles nothing.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    assert!(reconciles(port_a).await.unwrap() > 0.0);
    assert_eq!(reconciles(port_b).await, Some(0.0), "the standby reconciled while op-a led");
    assert_eq!(holder().await.unwrap().0, "op-a");

    // The leader dies; the standby takes over once the Lease expires, and repairs what changed meanwhile.
    a.kill();
    let killed = Instant::now();
    api.delete("apis/apps/v1", NS, "deployments", "social-write-api");
    wait_for("op-b to lead", Duration::from_secs(6 * LEASE_SECONDS), || async {
        holder().await.is_some_and(|(h, _)| h == "op-b")
    })
    .await;
    let took_over = killed.elapsed();
    assert_eq!(holder().await.unwrap().1, 1, "one leader transition recorded");
    wait_for("op-b to recreate the deleted Deployment", Duration::from_secs(20), || async {
        api.get("apis/apps/v1", NS, "deployments", "social-write-api").is_some()
    })
    .await;
    // The counter moves when a reconcile finishes, a moment after its apply recreated the Deployment.
    wait_for("op-b to count its reconciles", Duration::from_secs(10), || async {
        reconciles(port_b).await.is_some_and(|n| n > 0.0)
    })
    .await;
    eprintln!(
        "LEADER: leader killed -> standby holds the Lease in {} ms (lease {LEASE_SECONDS} s)",
        took_over.as_millis()
    );
    // Expiry counts from the holder's last renewal (at most a renewal period, lease/7, before the kill).
    let earliest = Duration::from_secs(LEASE_SECONDS) - Duration::from_secs(LEASE_SECONDS) / 7;
    assert!(took_over >= earliest, "took over a lease that had not expired ({} ms)", took_over.as_millis());

    // A leader stopped as Kubernetes stops a pod gives the Lease up: a new replica leads well within a lease.
    let port_c = free_port();
    let _c = operator(&kubectl, "op-c", port_c);
    wait_for("op-c to serve its metrics", Duration::from_secs(20), || async {
        reconciles(port_c).await.is_some()
    })
    .await;
    let mut b = _b;
    assert!(b.terminate(Duration::from_secs(10)), "op-b did not stop on SIGTERM");
    let stopped = Instant::now();
    wait_for("op-c to lead", Duration::from_secs(4 * LEASE_SECONDS), || async {
        holder().await.is_some_and(|(h, _)| h == "op-c")
    })
    .await;
    let handed = stopped.elapsed();
    eprintln!("LEADER: leader stopped with SIGTERM -> the next holds the Lease in {} ms", handed.as_millis());
    assert!(handed < Duration::from_secs(LEASE_SECONDS), "the Lease was not released on shutdown");
}

/// Expiry is judged on this replica's clock: a Lease whose holder's clock is an hour behind but which
/// is being renewed is not taken; once renewals stop, it is taken only after a whole lease of silence.
#[tokio::test]
async fn a_lease_is_judged_by_its_renewals_not_by_the_holders_clock() {
    use socialnet_operator::leader::{Elector, Timing};
    let api = FakeApi::start().await;
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = |renewals: u32| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "socialnet-operator-leader"},
               "spec": {"holderIdentity": "other", "leaseDurationSeconds": 1, "renewTime": hour_ago, "leaseTransitions": renewals}})
    };
    api.put("apis/coordination.k8s.io/v1", NS, "leases", lease(0));
    let elector = Elector::new(
        api.client(),
        NS,
        "socialnet-operator-leader",
        "me",
        Timing::for_lease(Duration::from_secs(1)),
    );
    let mut silent = Instant::now();
    for i in 1..=10 {
        // The holder renews (its clock says an hour ago, every time).
        api.put("apis/coordination.k8s.io/v1", NS, "leases", lease(i));
        silent = Instant::now();
        assert!(!elector.try_acquire().await.unwrap(), "took a lease that is being renewed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while !elector.try_acquire().await.unwrap() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        silent.elapsed() >= Duration::from_secs(1),
        "taken after {} ms of silence",
        silent.elapsed().as_millis()
    );
    let held = api.get("apis/coordination.k8s.io/v1", NS, "leases", "socialnet-operator-leader").unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "me");
    // Released, a lease is free at once for anyone.
    elector.release().await;
    let other = Elector::new(
        api.client(),
        NS,
        "socialnet-operator-leader",
        "next",
        Timing::for_lease(Duration::from_secs(1)),
    );
    assert!(other.try_acquire().await.unwrap(), "a released lease is taken at once");
}
