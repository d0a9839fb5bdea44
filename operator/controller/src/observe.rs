//! Observe: the cluster as the API server has it now (one GET: a decision must never rest on a watch
//! cache that has not yet seen the operator's own last write), its children from the watch caches, the
//! health monitor's latest view, and what was applied moments ago.

use crate::error::Error;
use crate::plan::Observed;
use crate::reconcile::Ctx;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use socialnet_crd::SocialCluster;
use std::sync::Arc;

/// The cluster and what it owns; `None` when it is gone (or being deleted).
pub async fn observe(ctx: &Ctx, key: &ObjectRef<SocialCluster>) -> Result<Option<Observed>, Error> {
    let ns = key.namespace.clone().unwrap_or_default();
    let api: Api<SocialCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let cluster = match api.get_opt(&key.name).await? {
        Some(c) if c.metadata.deletion_timestamp.is_none() => c,
        _ => {
            ctx.monitors.stop(key);
            return Ok(None);
        }
    };
    let s = &ctx.stores;
    let mine = |m: &ObjectMeta| owned_by(m, &ns, &key.name);
    let mut observed = Observed {
        deployments: select(&s.deployments, mine),
        services: select(&s.services, mine),
        hpas: select(&s.hpas, mine),
        pdbs: select(&s.pdbs, mine),
        config_maps: select(&s.config_maps, mine),
        jobs: select(&s.jobs, mine),
        health: ctx.monitors.view(&cluster),
        recently_applied: Default::default(),
        cluster,
    };
    // What the cache shows as applied (or as gone, once deleted) needs no grace any more: if it disappears
    // now, someone else deleted it.
    ctx.caught_up(key, |kind, name, hash| {
        let shown = observed.hash_of(kind, name);
        if hash == crate::plan::DELETED { shown.is_none() } else { shown.as_deref() == Some(hash) }
    });
    observed.recently_applied = ctx.recently_applied(key);
    Ok(Some(observed))
}

fn select<K: kube::Resource + Clone>(store: &Store<K>, keep: impl Fn(&ObjectMeta) -> bool) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut out: Vec<K> =
        store.state().iter().filter(|o| keep(o.meta())).map(|o| K::clone(Arc::as_ref(o))).collect();
    out.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    out
}

/// Whether an object carries the labels the operator puts on what it makes for cluster `name`.
pub fn owned_by(m: &ObjectMeta, namespace: &str, name: &str) -> bool {
    let label = |k: &str| m.labels.as_ref().and_then(|l| l.get(k)).map(String::as_str);
    m.namespace.as_deref() == Some(namespace)
        && label("app.kubernetes.io/instance") == Some(name)
        && label("app.kubernetes.io/managed-by") == Some(crate::FIELD_MANAGER)
}
