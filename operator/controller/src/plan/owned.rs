//! The owned objects: apply a child only when it is missing, when what the operator would apply changed
//! (the hash in its annotation differs), or when someone changed a field the operator sets (drift);
//! delete children the spec no longer asks for. A child applied moments ago that the watch cache does
//! not show yet is not applied again.

use super::{CACHE_GRACE, DELETED, Observed, Plan};
use crate::build;
use crate::children::{ChildKind, HASH_ANNOTATION, holds};
use kube::ResourceExt;
use serde_json::Value;
use socialnet_crd::SocialClusterStatus;

/// One existing child, as the watch cache has it.
struct Existing {
    kind: ChildKind,
    name: String,
    hash: Option<String>,
    json: Value,
}

fn existing<K: kube::Resource + serde::Serialize>(
    kind: ChildKind,
    objects: &[K],
) -> impl Iterator<Item = Existing> + '_ {
    objects.iter().map(move |o| Existing {
        kind,
        name: o.name_any(),
        hash: o.annotations().get(HASH_ANNOTATION).cloned(),
        json: serde_json::to_value(o).unwrap_or(Value::Null),
    })
}

fn all_existing(o: &Observed) -> Vec<Existing> {
    let mut out: Vec<Existing> = existing(ChildKind::ConfigMap, &o.config_maps).collect();
    out.extend(existing(ChildKind::Deployment, &o.deployments));
    out.extend(existing(ChildKind::Service, &o.services));
    out.extend(existing(ChildKind::HorizontalPodAutoscaler, &o.hpas));
    out.extend(existing(ChildKind::PodDisruptionBudget, &o.pdbs));
    out
}

pub(super) fn step(plan: &mut Plan, o: &Observed, st: &SocialClusterStatus) {
    let sc = &o.cluster;
    let active = st.target_primary.as_deref().or(st.current_primary.as_deref()).unwrap_or_default();
    let desired = build::desired(sc, active).children();
    let existing = all_existing(o);
    for child in &desired {
        let (kind, name) = (child.kind(), child.name());
        let hash = child.hash();
        let found = existing.iter().find(|e| e.kind == kind && e.name == name);
        let current = found.is_some_and(|e| e.hash == hash && holds(&e.json, &child.to_json()));
        let just_applied =
            hash.as_ref().is_some_and(|h| o.recently_applied.get(&(kind, name.clone())) == Some(h));
        if current {
            continue;
        }
        if just_applied {
            plan.requeue_within(CACHE_GRACE);
            continue;
        }
        plan.apply.push(child.clone());
    }
    let wanted = |e: &Existing| desired.iter().any(|d| d.kind() == e.kind && d.name() == e.name);
    for e in existing.iter().filter(|e| !wanted(e)) {
        // Deleted moments ago, still in the lagging cache: deleting it again would be a second action.
        if o.recently_applied.get(&(e.kind, e.name.clone())).map(String::as_str) == Some(DELETED) {
            plan.requeue_within(CACHE_GRACE);
        } else {
            plan.delete.push((e.kind, e.name.clone()));
        }
    }
}
