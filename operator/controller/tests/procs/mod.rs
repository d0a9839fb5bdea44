//! Helpers for the binary-level tests: where the built binaries are, waiting for a condition, and plain
//! HTTP GETs against a process's port.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::PathBuf;
use std::time::Duration;

/// A workspace binary (`SOCIALNET_BIN_<NAME>` overrides where it is).
pub fn bin(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("SOCIALNET_BIN_{}", name.to_uppercase().replace('-', "_"))) {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug").join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        p.display()
    );
    p
}

pub async fn wait_for<F, Fut>(what: &str, limit: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(testkit::eventually(limit, f).await, "timed out waiting for {what}");
}

/// GET a path on a loopback port with an optional bearer token; the body as text, or `None` when the
/// process does not answer within 2 s.
pub async fn get_text(port: u16, path: &str, token: Option<&str>) -> Option<String> {
    send(port, "GET", path, token, None).await.map(|(_, body)| body)
}

/// One request on a loopback port; the status and the body, or `None` when nothing answers within 2 s.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<String>,
) -> Option<(u16, String)> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut req = hyper::Request::builder().method(method).uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if json.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(json.unwrap_or_default()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&bytes).into_owned()))
}
