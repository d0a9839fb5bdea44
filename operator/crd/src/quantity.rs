//! Container resources with a bounded schema: the CPU, memory and ephemeral-storage quantities a
//! component may request and be limited to. Kubernetes' own `ResourceRequirements` schema has unbounded
//! maps and lists, which a CRD should not carry.

use k8s_openapi::api::core::v1::ResourceRequirements;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The pattern Kubernetes uses for a quantity written as a string.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A quantity such as `500m`, `2`, `256Mi`: a string or an integer, as in any Kubernetes manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        }))
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A quantity: an integer, or a string such as `500m`, `2` or `256Mi`.",
            "x-kubernetes-int-or-string": true,
            "maxLength": 32,
            "pattern": QUANTITY_PATTERN,
            "minimum": 0,
            "maximum": 1_000_000_000_000_000_i64
        })
    }
}

/// Amounts of each resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceList {
    /// CPU, in cores (`1`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, in bytes (`256Mi`, `2Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Local ephemeral storage, in bytes.
    #[serde(default, rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Quantity>,
}

impl ResourceList {
    fn to_k8s(&self) -> Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>> {
        let q = |v: &Option<Quantity>| {
            v.as_ref().map(|q| k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.0.clone()))
        };
        let map: BTreeMap<_, _> = [
            ("cpu", q(&self.cpu)),
            ("memory", q(&self.memory)),
            ("ephemeral-storage", q(&self.ephemeral_storage)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
        (!map.is_empty()).then_some(map)
    }
}

/// CPU and memory requests and limits of a component's container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// What the scheduler reserves for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
}

impl Resources {
    /// As the container's `resources`.
    pub fn to_k8s(&self) -> ResourceRequirements {
        ResourceRequirements {
            requests: self.requests.as_ref().and_then(ResourceList::to_k8s),
            limits: self.limits.as_ref().and_then(ResourceList::to_k8s),
            ..ResourceRequirements::default()
        }
    }
}
