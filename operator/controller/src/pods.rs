//! Talking to the cluster's own pods over HTTP, with the shapes of `contract::admin`: a read API pod's
//! view of the projection targets, the projector's, and switching a read API pod to another target.
//! Requests carry an admin token signed with the cluster's secret.

use bytes::Bytes;
use contract::admin::{ProjectorProjections, ReadApiProjections, SwitchActive};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::time::Duration;

pub type Http = HttpClient<HttpConnector, Full<Bytes>>;

pub fn http() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(500)));
    HttpClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// How long a poll waits for one pod.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a switch waits for one pod.
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(2);

async fn call<T: DeserializeOwned>(
    http: &Http,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<T, String> {
    let mut b =
        hyper::Request::builder().method(method).uri(url).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = http.request(req).await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) =
        tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("{url}: timed out"))??;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(format!("{url}: {status} {}", text.chars().take(200).collect::<String>()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))
}

/// A read API pod's view (`GET /admin/projections`).
pub async fn read_view(http: &Http, endpoint: &str, token: &str) -> Result<ReadApiProjections, String> {
    call(http, "GET", &format!("http://{endpoint}/admin/projections"), token, None, POLL_TIMEOUT).await
}

/// The projector's view (`GET /admin/projections`).
pub async fn projector_view(
    http: &Http,
    endpoint: &str,
    token: &str,
) -> Result<ProjectorProjections, String> {
    call(http, "GET", &format!("http://{endpoint}/admin/projections"), token, None, POLL_TIMEOUT).await
}

/// Point one read API pod at `target`; its answer says which target it now serves.
pub async fn switch(http: &Http, endpoint: &str, token: &str, target: &str) -> Result<String, String> {
    let body = serde_json::to_vec(&SwitchActive { target: target.to_owned() }).map_err(|e| e.to_string())?;
    let url = format!("http://{endpoint}/admin/projections/active");
    let view: ReadApiProjections = call(http, "PUT", &url, token, Some(body), SWITCH_TIMEOUT).await?;
    Ok(view.active)
}

/// Switch every endpoint at once; each endpoint with the target it now serves, or why it did not answer.
pub async fn switch_all(
    http: &Http,
    endpoints: &[String],
    token: &str,
    target: &str,
) -> Vec<(String, Result<String, String>)> {
    let calls = endpoints.iter().map(|e| async move { (e.clone(), switch(http, e, token, target).await) });
    futures::future::join_all(calls).await
}
