//! What kubectl needs from the FAKE API besides objects: legacy discovery (`/api`, `/apis`, one resource
//! list per group version) and server-side printing (`Table` responses, with the SocialCluster's printer
//! columns read from the CRD the operator generates). No aggregated discovery and no OpenAPI: kubectl
//! falls back to the legacy documents, and the tests run it with `--validate=false`.

use super::FakeApi;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The discovery routes kubectl reads before anything else.
pub fn routes() -> axum::Router<FakeApi> {
    axum::Router::new()
        .route("/api", axum::routing::get(|| async { axum::Json(api_versions()) }))
        .route("/apis", axum::routing::get(|| async { axum::Json(api_groups()) }))
        .route("/api/v1", axum::routing::get(|| async { resource_list("api/v1".into()) }))
        .route(
            "/apis/{group}/{version}",
            axum::routing::get(|Path((g, v)): Path<(String, String)>| async move {
                resource_list(format!("apis/{g}/{v}"))
            }),
        )
}

fn resource_list(prefix: String) -> Response {
    match resources(&prefix) {
        Some(list) => axum::Json(list).into_response(),
        None => super::status(404, "NotFound", &format!("no group version {prefix}")),
    }
}

/// (group version path, kind, plural, short names) of every resource the operator or the tests touch.
const RESOURCES: &[(&str, &str, &str, &[&str])] = &[
    ("api/v1", "ConfigMap", "configmaps", &["cm"]),
    ("api/v1", "Secret", "secrets", &[]),
    ("api/v1", "Service", "services", &["svc"]),
    ("api/v1", "Event", "events", &["ev"]),
    ("apis/apps/v1", "Deployment", "deployments", &["deploy"]),
    ("apis/autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", &["hpa"]),
    ("apis/policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", &["pdb"]),
    ("apis/batch/v1", "Job", "jobs", &[]),
    ("apis/discovery.k8s.io/v1", "EndpointSlice", "endpointslices", &[]),
    ("apis/coordination.k8s.io/v1", "Lease", "leases", &[]),
    ("apis/events.k8s.io/v1", "Event", "events", &["ev"]),
    ("apis/socialnet.io/v1alpha1", "SocialCluster", "socialclusters", &["snc"]),
    ("apis/storage.k8s.io/v1", "StorageClass", "storageclasses", &["sc"]),
];

const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

pub fn api_groups() -> Value {
    let mut groups: Vec<(String, String)> = Vec::new();
    for (gv, ..) in RESOURCES {
        if let Some(rest) = gv.strip_prefix("apis/") {
            let (g, v) = rest.split_once('/').unwrap_or((rest, ""));
            if !groups.iter().any(|(x, _)| x == g) {
                groups.push((g.to_owned(), v.to_owned()));
            }
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The resource list of one group version (`api/v1`, `apis/apps/v1`), or `None` if the fake has none.
pub fn resources(prefix: &str) -> Option<Value> {
    let list: Vec<Value> = RESOURCES
        .iter()
        .filter(|(gv, ..)| *gv == prefix)
        .flat_map(|(_, kind, plural, short)| {
            let main = json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": true,
                              "kind": kind, "verbs": VERBS, "shortNames": short});
            let status = json!({"name": format!("{plural}/status"), "singularName": "", "namespaced": true,
                                "kind": kind, "verbs": ["get", "patch", "update"]});
            [main, status]
        })
        .collect();
    if list.is_empty() {
        return None;
    }
    let gv = prefix.strip_prefix("apis/").or_else(|| prefix.strip_prefix("api/")).unwrap_or(prefix);
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
}

/// Whether a request asks for server-side printing.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// A `meta.k8s.io/v1` Table of `objects`: the CRD's printer columns for SocialClusters, else name and age.
pub fn table(plural: &str, objects: &[Value], resource_version: &str) -> Value {
    let mut columns: Vec<(String, String, String)> =
        vec![("Name".into(), "string".into(), ".metadata.name".into())];
    if plural == "socialclusters" {
        let crd = serde_json::to_value(<socialnet_crd::SocialCluster as kube::CustomResourceExt>::crd())
            .unwrap_or(Value::Null);
        for c in crd["spec"]["versions"][0]["additionalPrinterColumns"].as_array().into_iter().flatten() {
            columns.push((
                c["name"].as_str().unwrap_or("").into(),
                c["type"].as_str().unwrap_or("string").into(),
                c["jsonPath"].as_str().unwrap_or("").into(),
            ));
        }
    } else {
        columns.push(("Age".into(), "date".into(), ".metadata.creationTimestamp".into()));
    }
    let defs: Vec<Value> = columns
        .iter()
        .map(|(name, ty, _)| {
            let (ty, format) = if name == "Name" { ("string", "name") } else { (ty.as_str(), "") };
            json!({"name": name, "type": if ty == "date" { "string" } else { ty }, "format": format,
                   "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|(_, ty, path)| cell(o, path, ty)).collect();
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                   "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": defs, "rows": rows})
}

/// One cell: the value at a simple `.a.b.c` path; dates shown as an age, as the real API server does.
fn cell(obj: &Value, path: &str, ty: &str) -> Value {
    let v = path.trim_start_matches('.').split('.').fold(obj, |v, seg| &v[seg]);
    match (ty, v) {
        ("date", Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
                Value::String(match secs {
                    s if s < 120 => format!("{s}s"),
                    s if s < 7200 => format!("{}m", s / 60),
                    s if s < 172_800 => format!("{}h", s / 3600),
                    s => format!("{}d", s / 86_400),
                })
            }
            Err(_) => Value::String(s.clone()),
        },
        (_, Value::Null) => Value::Null,
        (_, v) => v.clone(),
    }
}
