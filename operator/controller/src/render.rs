//! `socialnet-operator render -f cluster.yaml`: every object the operator would create for a
//! `SocialCluster`, as YAML documents (like `helm template`), for review and for validation by other tools.

use crate::build;
use crate::children::Child;
use socialnet_crd::SocialCluster;

/// Why a manifest cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not a SocialCluster manifest: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("the SocialCluster is invalid: {0}")]
    Invalid(String),
}

/// Parse a `SocialCluster` manifest (namespace `namespace` when it names none, `uid` for owner references).
pub fn parse(text: &str, namespace: &str, uid: Option<&str>) -> Result<SocialCluster, RenderError> {
    let mut sc: SocialCluster = serde_yaml::from_str(text)?;
    if sc.metadata.namespace.is_none() {
        sc.metadata.namespace = Some(namespace.to_owned());
    }
    if let Some(uid) = uid {
        sc.metadata.uid = Some(uid.to_owned());
    }
    crate::validate::validate(&sc).map_err(RenderError::Invalid)?;
    Ok(sc)
}

/// The objects, in the order they are applied; the rebuild Job a `spec.rebuild` would start comes last.
pub fn objects(sc: &SocialCluster) -> Vec<Child> {
    let active = sc.spec.initial_primary().unwrap_or_default();
    let mut out = build::desired(sc, active).children();
    if let Some(r) = &sc.spec.rebuild {
        out.push(Child::Job(crate::jobs::rebuild_job(sc, &r.target, &r.token)).hashed());
    }
    if sc.metadata.uid.is_none() {
        // Without the cluster's uid an owner reference would be invalid: leave them out.
        out = out.into_iter().map(|c| without_owner(c).hashed()).collect();
    }
    out
}

fn without_owner(mut c: Child) -> Child {
    crate::children::each!(&mut c, o => {
        kube::Resource::meta_mut(o).owner_references = None;
    });
    c
}

/// The objects as a multi-document YAML stream.
pub fn to_yaml(objects: &[Child]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crate::sorted(o.to_json())).unwrap_or_default());
    }
    out
}
