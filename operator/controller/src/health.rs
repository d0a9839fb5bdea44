//! Talking to the cluster's own pods: find the read API pods through their Service's EndpointSlices, ask
//! each for its view of the projection targets (`GET /admin/projections`), and switch every one of them
//! (`PUT /admin/projections/active`). Requests carry an admin token signed with the cluster's secret.

use crate::failover::Sample;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use std::time::Duration;

pub type Http = HttpClient<HttpConnector, Full<Bytes>>;

pub fn http() -> Http {
    HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// `ip:port` of every ready endpoint of a Service.
pub async fn endpoints(client: &kube::Client, ns: &str, service: &str) -> Result<Vec<String>, kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices =
        api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}"))).await?;
    let mut out = Vec::new();
    for s in slices {
        let port =
            s.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port).unwrap_or(crate::build::PORT);
        for e in s.endpoints.unwrap_or_default() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in e.addresses {
                let host = if a.contains(':') { format!("[{a}]") } else { a };
                out.push(format!("{host}:{port}"));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn call(
    http: &Http,
    method: &str,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let mut b =
        hyper::Request::builder().method(method).uri(url).header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let req = b.body(body).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(2), http.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("{url}: {status} {}", String::from_utf8_lossy(&bytes)));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))
}

/// Each reachable read API pod's list of targets (pods that do not answer are left out).
pub async fn views(http: &Http, endpoints: &[String], token: &str) -> Vec<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for e in endpoints {
        if let Ok(v) = call(http, "GET", &format!("http://{e}/admin/projections"), token, None).await {
            out.push(v["targets"].as_array().cloned().unwrap_or_default());
        }
    }
    out
}

/// The projector's view of each target: (lag in events, lag in seconds), from the first projector pod that
/// answers (there is one writer). Empty when none answers; the read APIs' view is used alone then.
pub async fn projector_lag(
    http: &Http,
    endpoints: &[String],
    token: &str,
) -> std::collections::HashMap<String, (Option<i64>, Option<f64>)> {
    for e in endpoints {
        if let Ok(v) = call(http, "GET", &format!("http://{e}/admin/projections"), token, None).await {
            return v["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let name = t["name"].as_str()?.to_owned();
                    Some((name, (t["lag_events"].as_i64(), t["lag_seconds"].as_f64())))
                })
                .collect();
        }
    }
    std::collections::HashMap::new()
}

/// Reduce the pods' views to one sample per target: healthy when a majority of the pods that answered can
/// use it; lag and generation from the most favourable view.
pub fn samples(views: &[Vec<serde_json::Value>], targets: &[String]) -> Vec<Sample> {
    targets
        .iter()
        .map(|name| {
            let seen: Vec<&serde_json::Value> =
                views.iter().filter_map(|v| v.iter().find(|t| t["name"] == name.as_str())).collect();
            let healthy_votes = seen.iter().filter(|t| t["healthy"] == true).count();
            Sample {
                name: name.clone(),
                healthy: !seen.is_empty() && healthy_votes * 2 > seen.len(),
                reachable: seen.iter().filter(|t| t["reachable"] == true).count() * 2 > seen.len(),
                lag_events: seen.iter().filter_map(|t| t["lag_positions"].as_i64()).min(),
                generation: seen.iter().filter_map(|t| t["generation"].as_i64()).max(),
            }
        })
        .collect()
}

/// Switch every read API pod to `target`; fails if any pod does not confirm.
pub async fn switch_all(
    http: &Http,
    endpoints: &[String],
    token: &str,
    target: &str,
) -> Result<usize, String> {
    let mut errors = Vec::new();
    for e in endpoints {
        let url = format!("http://{e}/admin/projections/active");
        match call(http, "PUT", &url, token, Some(serde_json::json!({"target": target}))).await {
            Ok(v) if v["active"] == target => {}
            Ok(v) => errors.push(format!("{url}: still {}", v["active"])),
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() { Ok(endpoints.len()) } else { Err(errors.join("; ")) }
}
