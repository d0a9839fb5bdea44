//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: only the holder
//! reconciles. The holder renews every `retry` period and stops leading when it could not renew for
//! `renew_deadline`, which is shorter than the lease, so it has stopped before anyone else may take over.
//! Expiry is judged on this replica's own clock: a lease counts as expired when this replica has seen it
//! unchanged for a whole lease duration (the holder's `renewTime` is another machine's clock, never
//! compared with ours). On shutdown the holder releases the Lease so a standby takes over at once.

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timing of an election, derived from the lease duration as client-go's defaults relate (15 s lease,
/// 10 s renew deadline, 2 s retry).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

impl Timing {
    pub fn for_lease(lease: Duration) -> Self {
        Self { lease, renew_deadline: lease * 2 / 3, retry: (lease / 7).max(Duration::from_millis(200)) }
    }
}

/// What this replica last saw of the Lease and when (its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    holder: Option<String>,
    resource_version: Option<String>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    seen: Mutex<Option<Seen>>,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            seen: Mutex::new(None),
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(crate::conditions::to_jiff(Utc::now()));
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.timing.lease.as_secs()).unwrap_or(15)),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether another holder's lease has gone unrenewed for a whole lease duration, as seen from here.
    fn expired(&self, lease: &Lease) -> bool {
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty());
        if holder.is_none() {
            return true;
        }
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map_or(self.timing.lease, |s| Duration::from_secs(u64::try_from(s).unwrap_or(15)));
        let now =
            Seen { holder, resource_version: lease.metadata.resource_version.clone(), at: Instant::now() };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.as_ref() {
            Some(s) if s.holder == now.holder && s.resource_version == now.resource_version => {
                s.at.elapsed() > duration
            }
            _ => {
                *seen = Some(now);
                false
            }
        }
    }

    /// Try once to acquire or renew; true when we hold the lease afterwards.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !self.expired(&lease) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(transitions, if ours { spec.acquire_time } else { None }));
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait until we lead.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Renew until we lose the lease or cannot renew within the renew deadline; returns then (the
    /// caller must stop acting at once).
    pub async fn hold(&self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry).await;
            let attempt =
                tokio::time::timeout(self.timing.retry.max(Duration::from_secs(1)), self.try_acquire()).await;
            match attempt {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::error!("another replica holds the leader lease");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "could not renew the leader lease"),
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            if renewed.elapsed() > self.timing.renew_deadline {
                tracing::error!("could not renew the leader lease within the renew deadline");
                return;
            }
        }
    }

    /// Give the lease up (on shutdown) so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let ours =
            lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
        }
    }
}
