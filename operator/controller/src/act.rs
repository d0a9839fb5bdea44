//! Act: carry out a plan. Status first, by server-side apply with the resourceVersion the plan was made
//! from (a 409 means the world moved: nothing else is done and reconcile runs again), so every decision
//! is recorded before anything acts on it and a stale decision is never acted on. Then the read API pods
//! are switched, children applied (server-side apply, one field manager) and orphans deleted, and the
//! Events recorded.

use crate::children::{Child, ChildKind, each};
use crate::error::Error;
use crate::plan::{EventReason, Note, Plan, Switch};
use crate::reconcile::Ctx;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use socialnet_crd::{SocialCluster, SocialClusterStatus};

/// What act did that plan needs to know.
#[derive(Debug)]
pub struct Outcome {
    /// The cluster after the status write (its new resourceVersion).
    pub cluster: SocialCluster,
    /// Each switched pod and the target it now serves, or why it did not switch.
    pub switched: Vec<(String, Result<String, String>)>,
}

pub async fn act(ctx: &Ctx, cluster: &SocialCluster, plan: &Plan) -> Result<Outcome, Error> {
    let cluster = match &plan.status {
        Some(status) => write_status(ctx, cluster, status).await?,
        None => cluster.clone(),
    };
    let switched = match &plan.switch {
        Some(s) => switch(ctx, &cluster, s).await,
        None => Vec::new(),
    };
    let ns = cluster.namespace().unwrap_or_default();
    for child in &plan.apply {
        apply_child(ctx, &ns, child).await?;
        ctx.remember(&cluster, child);
    }
    for (kind, name) in &plan.delete {
        delete_child(ctx, &ns, *kind, name).await?;
        ctx.remember_deleted(&cluster, *kind, name);
    }
    for note in &plan.events {
        ctx.events.publish(&cluster, note).await;
    }
    Ok(Outcome { cluster, switched })
}

/// The status subresource as the operator applies it: only `status`, owned as a whole.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    status: &'a SocialClusterStatus,
}

async fn write_status(
    ctx: &Ctx,
    cluster: &SocialCluster,
    status: &SocialClusterStatus,
) -> Result<SocialCluster, Error> {
    let name = cluster.name_any();
    let api: Api<SocialCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let body = StatusApply {
        api_version: "socialnet.io/v1alpha1",
        kind: "SocialCluster",
        // The resourceVersion makes the write conditional on nothing having changed since the read.
        metadata: ObjectMeta {
            name: Some(name.clone()),
            resource_version: cluster.resource_version(),
            ..ObjectMeta::default()
        },
        status,
    };
    let params = PatchParams::apply(crate::FIELD_MANAGER).force();
    match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Ok(updated) => {
            metrics::counter!("socialnet_operator_status_writes_total").increment(1);
            Ok(updated)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Err(Error::Conflict(format!("{}/{name}", cluster.namespace().unwrap_or_default())))
        }
        Err(e) => Err(e.into()),
    }
}

async fn switch(ctx: &Ctx, cluster: &SocialCluster, s: &Switch) -> Vec<(String, Result<String, String>)> {
    let token = match ctx.monitors.token(cluster).await {
        Ok(t) => t,
        Err(why) => return s.endpoints.iter().map(|e| (e.clone(), Err(why.to_string()))).collect(),
    };
    let results = crate::pods::switch_all(&ctx.http, &s.endpoints, &token, &s.target).await;
    let mut failed = Vec::new();
    for (endpoint, r) in &results {
        match r {
            Ok(active) => ctx.monitors.note_active(cluster, endpoint, active),
            Err(why) => failed.push(why.clone()),
        }
    }
    if !failed.is_empty() {
        let message = format!("switching read API pods to {}: {}", s.target, failed.join("; "));
        ctx.events
            .publish(cluster, &Note { warning: true, reason: EventReason::FailoverIncomplete, message })
            .await;
    }
    results
}

async fn apply<K>(ctx: &Ctx, ns: &str, obj: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(&obj.name_any(), &PatchParams::apply(crate::FIELD_MANAGER).force(), &Patch::Apply(obj)).await?;
    Ok(())
}

async fn apply_child(ctx: &Ctx, ns: &str, child: &Child) -> Result<(), Error> {
    let result = each!(child, o => apply(ctx, ns, o).await);
    metrics::counter!("socialnet_operator_applies_total", "kind" => child.kind().to_string()).increment(1);
    result.map_err(|source| Error::Apply { kind: child.kind(), name: child.name(), source })
}

async fn delete<K>(ctx: &Ctx, ns: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn delete_child(ctx: &Ctx, ns: &str, kind: ChildKind, name: &str) -> Result<(), Error> {
    tracing::info!(%kind, name, "deleting an object the spec no longer asks for");
    let r = match kind {
        ChildKind::ConfigMap => delete::<ConfigMap>(ctx, ns, name).await,
        ChildKind::Deployment => delete::<Deployment>(ctx, ns, name).await,
        ChildKind::Service => delete::<Service>(ctx, ns, name).await,
        ChildKind::HorizontalPodAutoscaler => delete::<HorizontalPodAutoscaler>(ctx, ns, name).await,
        ChildKind::PodDisruptionBudget => delete::<PodDisruptionBudget>(ctx, ns, name).await,
        ChildKind::Job => delete::<Job>(ctx, ns, name).await,
    };
    r.map_err(Error::from)
}
