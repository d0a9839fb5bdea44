//! The API gateway: the one public entry point in front of the write and read APIs. A request is matched
//! to a route of the declarative config, answered at once when it is a CORS preflight, authenticated (JWT,
//! HS256 or RS256 from a JWKS), rate limited per user and per client IP (locally or in Redis, shared by
//! replicas), checked against the upstream's circuit breaker, and forwarded with a request id and a W3C
//! `traceparent`; safe requests are retried within a budget. The config file is watched and swapped in
//! whole when it changes and is valid. Each step is in its own module; `proxy` strings them together.

pub mod access;
pub mod breaker;
pub mod config;
mod cors;
mod latency;
pub mod limit;
mod pipelined;
mod proxy;
mod reload;
#[cfg(test)]
mod test_recorder;

pub use config::GatewayConfig;
pub use pipelined::{PipeError, Pipelined};
pub use reload::{Runtime, watch_config};

use axum::Router;
use axum::routing::get;
use breaker::Breaker;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use limit::Limiter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

/// Everything the gateway keeps between requests. Breakers and the limiter outlive config reloads.
pub struct Gateway {
    runtime: RwLock<Arc<Runtime>>,
    limiter: Limiter,
    /// Per upstream name: its breaker, and its pipelined read connections (replaced when its URL or
    /// pipeline settings change). One lock and one lookup per forwarded request.
    upstreams: Mutex<HashMap<String, UpstreamState>>,
    client: UpstreamClient,
    retry_tokens: Mutex<f64>,
    openapi: Bytes,
    access: access::AccessLog,
    latency: latency::LatencyHistograms,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("limiter", &self.limiter).finish()
    }
}

impl Gateway {
    /// `openapi`: the public API document served at `/openapi.json`. The access log goes to stderr.
    pub fn new(runtime: Runtime, limiter: Limiter, openapi: Bytes) -> Arc<Self> {
        Self::with_access_log(runtime, limiter, openapi, access::AccessLog::stderr())
    }

    /// As [`Gateway::new`], with the access log written to `access` (a benchmark sends it to `/dev/null`:
    /// formatting and writing it still count, the disk behind a log file does not).
    pub fn with_access_log(
        runtime: Runtime,
        limiter: Limiter,
        openapi: Bytes,
        access: access::AccessLog,
    ) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        Arc::new(Self {
            runtime: RwLock::new(Arc::new(runtime)),
            limiter,
            upstreams: Mutex::new(HashMap::new()),
            client,
            retry_tokens: Mutex::new(10.0),
            openapi,
            access,
            latency: Default::default(),
        })
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swap in a new configuration (requests in flight finish on the old one).
    pub fn replace(&self, runtime: Runtime) {
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
    }

    /// Upstream `name`'s breaker, and its pipelined connections when `pipelined` is asked for and its
    /// config does not turn them off.
    fn upstream(
        &self,
        name: &str,
        upstream: &config::Upstream,
        pipelined: bool,
    ) -> (Arc<Breaker>, Option<Arc<Pipelined>>) {
        let mut map = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let state = map.entry(name.to_owned()).or_default();
        if !(pipelined && upstream.pipeline.enabled) {
            return (state.breaker.clone(), None);
        }
        if !state.pipe.as_ref().is_some_and(|p| p.serves(&upstream.url, &upstream.pipeline)) {
            state.pipe = Pipelined::for_url(&upstream.url, upstream.pipeline).map(Arc::new);
        }
        (state.breaker.clone(), state.pipe.clone())
    }

    /// Every request earns a fraction of a retry; a retry spends one. Bounds retries to that fraction of
    /// traffic, so retries cannot multiply the load on a struggling upstream.
    fn earn_retry(&self, budget: f64) {
        let mut t = self.retry_tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t + budget).min(100.0);
    }

    fn spend_retry(&self) -> bool {
        let mut t = self.retry_tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the gateway keeps per upstream across reloads.
#[derive(Default)]
struct UpstreamState {
    breaker: Arc<Breaker>,
    pipe: Option<Arc<Pipelined>>,
}

/// The gateway's router: its own `/healthz`, `/readyz` (answered by `ready`), `/metrics` and
/// `/openapi.json`; everything else goes through the proxy pipeline.
pub fn app(gateway: Arc<Gateway>, ready: http_kit::Readiness) -> Router {
    let doc = gateway.openapi.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .merge(http_kit::ops_routes(ready))
        .fallback(proxy::handle)
        .with_state(gateway)
}
