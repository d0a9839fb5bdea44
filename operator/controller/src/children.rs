//! The objects a `SocialCluster` owns, as one type: what the plan asks to apply or delete, and how to
//! tell whether an existing object already is what the plan wants (a hash of the desired object kept in
//! an annotation, and a check that every field the operator sets still has its value).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use serde_json::Value;

/// The annotation holding the hash of the object as the operator last applied it.
pub const HASH_ANNOTATION: &str = "socialnet.io/applied-hash";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    ConfigMap,
    Deployment,
    Service,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    Job,
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One owned object. (Kept unboxed: a plan holds a dozen of them for a moment.)
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Child {
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    Service(Service),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    PodDisruptionBudget(PodDisruptionBudget),
    Job(Job),
}

/// Calls `$body` with the inner object bound to `$o`, whatever the variant.
macro_rules! each {
    ($child:expr, $o:ident => $body:expr) => {
        match $child {
            Child::ConfigMap($o) => $body,
            Child::Deployment($o) => $body,
            Child::Service($o) => $body,
            Child::HorizontalPodAutoscaler($o) => $body,
            Child::PodDisruptionBudget($o) => $body,
            Child::Job($o) => $body,
        }
    };
}
pub(crate) use each;

impl Child {
    pub fn kind(&self) -> ChildKind {
        match self {
            Child::ConfigMap(_) => ChildKind::ConfigMap,
            Child::Deployment(_) => ChildKind::Deployment,
            Child::Service(_) => ChildKind::Service,
            Child::HorizontalPodAutoscaler(_) => ChildKind::HorizontalPodAutoscaler,
            Child::PodDisruptionBudget(_) => ChildKind::PodDisruptionBudget,
            Child::Job(_) => ChildKind::Job,
        }
    }

    pub fn name(&self) -> String {
        each!(self, o => o.name_any())
    }

    /// The object as JSON (k8s-openapi writes its `apiVersion` and `kind`), as applied and as rendered.
    pub fn to_json(&self) -> Value {
        each!(self, o => serde_json::to_value(o).unwrap_or(Value::Null))
    }

    /// The same object carrying the hash of its content in [`HASH_ANNOTATION`].
    pub fn hashed(mut self) -> Self {
        each!(&mut self, o => {
            o.annotations_mut().remove(HASH_ANNOTATION);
        });
        let hash = content_hash(&self.to_json());
        each!(&mut self, o => {
            o.annotations_mut().insert(HASH_ANNOTATION.to_owned(), hash);
        });
        self
    }

    pub fn hash(&self) -> Option<String> {
        each!(self, o => o.annotations().get(HASH_ANNOTATION).cloned())
    }
}

/// FNV-1a (64 bits) of the object's JSON: stable across runs and versions of the operator's toolchain.
pub fn content_hash(v: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Whether every field set in `desired` has the same value in `observed` (which may hold more: defaults,
/// status, metadata the API server adds). Lists must have the same length, item by item.
pub fn holds(observed: &Value, desired: &Value) -> bool {
    match (observed, desired) {
        (Value::Object(o), Value::Object(d)) => {
            d.iter().all(|(k, dv)| dv.is_null() || o.get(k).is_some_and(|ov| holds(ov, dv)))
        }
        (Value::Array(o), Value::Array(d)) => o.len() == d.len() && o.iter().zip(d).all(|(a, b)| holds(a, b)),
        (o, d) => o == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_holds_what_was_applied_even_with_fields_the_server_added() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}, "metadata": {"name": "a"}});
        let observed = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "x": 1},
                              "metadata": {"name": "a", "uid": "u"}, "status": {}});
        assert!(holds(&observed, &desired));
        let scaled = json!({"spec": {"replicas": 5, "ports": [{"port": 80}]}, "metadata": {"name": "a"}});
        assert!(!holds(&scaled, &desired), "a field the operator sets was changed");
        let more_ports = json!({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}, "metadata": {"name": "a"}});
        assert!(!holds(&more_ports, &desired));
    }

    #[test]
    fn the_hash_follows_the_content() {
        let a = Child::ConfigMap(ConfigMap {
            data: Some([("k".into(), "1".into())].into()),
            ..Default::default()
        });
        let b = Child::ConfigMap(ConfigMap {
            data: Some([("k".into(), "2".into())].into()),
            ..Default::default()
        });
        assert_eq!(a.clone().hashed().hash(), a.clone().hashed().hash());
        assert_ne!(a.hashed().hash(), b.hashed().hash());
    }
}
