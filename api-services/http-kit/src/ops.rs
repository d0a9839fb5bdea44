//! Operational routes every long-running role serves, and request metrics.

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A readiness probe: answers whether the role's dependencies respond, with a reason per failing one.
pub type Readiness = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide Prometheus recorder (once; later calls reuse it).
pub fn install_metrics_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new().install_recorder().unwrap_or_else(|_| {
                // Another recorder is already installed (e.g. by a test harness): render an empty one.
                PrometheusBuilder::new().build_recorder().handle()
            })
        })
        .clone()
}

/// `/healthz` (alive), `/readyz` (dependencies answer) and `/metrics` (Prometheus text).
pub fn ops_routes<S: Clone + Send + Sync + 'static>(ready: Readiness) -> Router<S> {
    let handle = install_metrics_recorder();
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => {
                            (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response()
                        }
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(serde_json::json!({"status": "not ready", "reason": why})),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Middleware: count requests and record latency per route template and status.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Cow::Borrowed("unmatched"), |p| Cow::Owned(p.as_str().to_owned()));
    let method = static_method(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    // One histogram per request: its `_count` is the request counter, so no separate counter is kept.
    let status = response.status().as_u16();
    metrics::histogram!("socialnet_http_request_seconds", "route" => route, "method" => method, "status" => status_label(status))
        .record(started.elapsed().as_secs_f64());
    response
}

/// Methods as static labels: no allocation per request for the common ones.
fn static_method(m: &axum::http::Method) -> Cow<'static, str> {
    use axum::http::Method;
    Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return Cow::Owned(m.as_str().to_owned()),
    })
}

fn status_label(code: u16) -> Cow<'static, str> {
    match code {
        200 => Cow::Borrowed("200"),
        201 => Cow::Borrowed("201"),
        202 => Cow::Borrowed("202"),
        204 => Cow::Borrowed("204"),
        304 => Cow::Borrowed("304"),
        other => Cow::Owned(other.to_string()),
    }
}
