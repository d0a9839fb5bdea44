//! The request pipeline: preflight → route → authenticate → rate limit → body limit → breaker → forward
//! (with retries where safe) → decorate the answer (CORS, request id, `RateLimit-*`), with metrics and an
//! access log line per request.

use crate::breaker::Admit;
use crate::config::{Rate, Route, Upstream};
use crate::limit::Verdict;
use crate::{Gateway, PipeError, cors};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use http_kit::ApiError;
use http_kit::otlp::{Hop, Span};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Who a request is, for logs and upstreams: its request id and its hop in the trace.
struct Ids {
    request_id: String,
    hop: Hop,
}

pub async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let rt = gw.runtime();
    let config = &rt.config;
    let request_id = header_str(req.headers(), "x-request-id")
        .filter(|v| v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let origin = header_str(req.headers(), "origin").map(str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ids = Ids { request_id, hop: Hop::continuing(header_str(req.headers(), "traceparent")) };
    let wall_start = std::time::SystemTime::now();

    let (mut response, route_label, upstream_label, user) = if method == Method::OPTIONS
        && origin.is_some()
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        (cors::preflight(&config.cors, origin.as_deref().unwrap_or_default()), "preflight", "-", None)
    } else {
        match config.route(method.as_str(), &path) {
            None => (
                ApiError::not_found(format!("no route for {method} {path}")).into_response(),
                "unmatched",
                "-",
                None,
            ),
            Some(route) => {
                // Borrowed from this request's snapshot of the config: a reload swaps the Arc, not it.
                let (r, user) = match config.upstreams.get(&route.upstream) {
                    Some(up) => pipeline(&gw, &rt, route, up, req, &ids).await,
                    None => (ApiError::internal("route names a missing upstream").into_response(), None),
                };
                (r, route.prefix.as_str(), route.upstream.as_str(), user)
            }
        }
    };
    if method != Method::OPTIONS || response.status() != StatusCode::NO_CONTENT {
        cors::decorate(&config.cors, origin.as_deref(), response.headers_mut());
    }
    if let Ok(v) = HeaderValue::from_str(&ids.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    gw.latency.record(route_label, upstream_label, status, elapsed.as_secs_f64());
    if let Some(exporter) = &rt.exporter {
        exporter.record(Span {
            start: wall_start,
            end: wall_start + elapsed,
            method: method.to_string(),
            route: route_label.to_owned(),
            upstream: Some(upstream_label.to_owned()),
            status,
            hop: ids.hop.clone(),
        });
    }
    let entry = crate::access::Entry {
        request_id: &ids.request_id,
        trace_id: &ids.hop.trace_id,
        method: method.as_str(),
        path: &path,
        route: route_label,
        upstream: upstream_label,
        status,
        user: user.as_deref().unwrap_or("-"),
        ms: elapsed.as_secs_f64() * 1e3,
    };
    gw.access.record(&entry, config.access_log.successes);
    response
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The client IP: from the trusted proxy header when one is configured (first address), else the peer.
fn client_ip(gw_header: Option<&str>, req: &Request) -> Option<IpAddr> {
    if let Some(name) = gw_header {
        return header_str(req.headers(), name)
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

async fn pipeline(
    gw: &Gateway,
    rt: &crate::Runtime,
    route: &Route,
    upstream: &Upstream,
    req: Request,
    ids: &Ids,
) -> (Response, Option<String>) {
    let config = &rt.config;
    // Authenticate first: an unauthenticated request costs no limiter or upstream work.
    let user = if route.auth {
        match http_kit::bearer_token(req.headers()).and_then(|t| rt.verifier.verify(t)) {
            Ok(claims) => Some(claims.sub),
            Err(e) => return (e.into_response(), None),
        }
    } else {
        None
    };

    // Rate limits of the route's class: per user and per client IP; the tighter one is reported.
    let mut reported: Option<Verdict> = None;
    if let Some(class) = &route.class
        && let Some(limits) = config.limits.get(class)
    {
        let ip = client_ip(config.trusted_proxy_header.as_deref(), &req);
        let checks: [(Option<&Rate>, Option<String>, &'static str); 2] = [
            (limits.per_user.as_ref(), user.as_ref().map(|u| format!("{class}:u:{u}")), "user"),
            (limits.per_ip.as_ref(), ip.map(|ip| format!("{class}:ip:{ip}")), "ip"),
        ];
        for (rate, key, scope) in checks {
            let (Some(rate), Some(key)) = (rate, key) else { continue };
            let v = gw.limiter.check(&key, rate).await;
            if !v.allowed {
                metrics::counter!("socialnet_gateway_rate_limited_total", "class" => class.clone(), "scope" => scope).increment(1);
                let secs = v.retry_after_ms.div_ceil(1000).max(1);
                let mut r = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    format!("the {scope} limit of {class} requests is reached; retry in {secs} s"),
                )
                .into_response();
                ratelimit_headers(r.headers_mut(), &v);
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return (r, user);
            }
            if reported.is_none_or(|old| v.remaining < old.remaining) {
                reported = Some(v);
            }
        }
    }

    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, config.body_limit_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (
                ApiError::payload_too_large(format!("the body exceeds {} bytes", config.body_limit_bytes))
                    .into_response(),
                user,
            );
        }
    };

    let mut response = forward(gw, route, upstream, &parts, body, ids, config.retry_budget).await;
    if let Some(v) = reported {
        ratelimit_headers(response.headers_mut(), &v);
    }
    (response, user)
}

fn ratelimit_headers(h: &mut HeaderMap, v: &Verdict) {
    h.insert("ratelimit-limit", HeaderValue::from(v.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(v.reset_ms.div_ceil(1000)));
}

/// Reads, and writes that carry an Idempotency-Key (the write API turns the key into the command id, so a
/// repeat is the same command), may be sent twice. Nothing else is ever retried.
fn retry_safe(parts: &axum::http::request::Parts) -> bool {
    matches!(parts.method, Method::GET | Method::HEAD) || parts.headers.contains_key("idempotency-key")
}

async fn forward(
    gw: &Gateway,
    route: &Route,
    upstream: &Upstream,
    parts: &axum::http::request::Parts,
    body: Bytes,
    ids: &Ids,
    budget: f64,
) -> Response {
    // Reads without a body share the pipelined connections; everything else has a connection to itself.
    let safe_read = matches!(parts.method, Method::GET | Method::HEAD) && body.is_empty();
    let (breaker, pipe) = gw.upstream(&route.upstream, upstream, safe_read);
    let settings = upstream.breaker;
    gw.earn_retry(budget);
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != header::HOST {
            headers.append(k, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ids.request_id) {
        headers.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&ids.hop.traceparent()) {
        headers.insert("traceparent", v);
    }
    let attempts = if retry_safe(parts) { 1 + upstream.retries } else { 1 };
    let timeout = Duration::from_millis(upstream.timeout_ms);
    let mut last: Option<Response> = None;
    for attempt in 0..attempts {
        if attempt > 0 && !gw.spend_retry() {
            break;
        }
        if let Admit::No { retry_after } = breaker.admit(&settings, Instant::now()) {
            breaker.report(&route.upstream);
            let e = ApiError::unavailable(
                format!("upstream {} is failing; its circuit is open", route.upstream),
                retry_after.as_secs().max(1),
            );
            return e.into_response();
        }
        let result = match &pipe {
            // The pipelined send keeps its own deadline for a stalled connection; this timeout also
            // covers a connect that hangs.
            Some(pipe) => tokio::time::timeout(timeout, pipe.send(&parts.method, pq, &headers, timeout))
                .await
                .unwrap_or(Err(PipeError::TimedOut))
                .map_err(|e| match e {
                    PipeError::TimedOut => SendError::TimedOut,
                    e => SendError::Pipelined(e),
                }),
            None => {
                let uri = format!("{}{pq}", upstream.url.trim_end_matches('/'));
                let mut builder = hyper::Request::builder().method(parts.method.clone()).uri(&uri);
                if let Some(h) = builder.headers_mut() {
                    h.clone_from(&headers);
                }
                let Ok(out) = builder.body(Full::new(body.clone())) else {
                    return ApiError::bad_request("the request cannot be forwarded").into_response();
                };
                tokio::time::timeout(timeout, send(&gw.client, out)).await.unwrap_or(Err(SendError::TimedOut))
            }
        };
        let (response, ok) = match result {
            Ok(mut resp) => {
                let ok = !resp.status().is_server_error();
                for name in HOP_BY_HOP {
                    resp.headers_mut().remove(name);
                }
                (resp, ok)
            }
            Err(SendError::TimedOut) => (
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Gateway timeout",
                    format!("upstream {} took longer than {} ms", route.upstream, upstream.timeout_ms),
                )
                .into_response(),
                false,
            ),
            Err(e) => {
                tracing::warn!(upstream = route.upstream, error = %e, "upstream request failed");
                (
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "Bad gateway",
                        format!("upstream {} did not answer", route.upstream),
                    )
                    .into_response(),
                    false,
                )
            }
        };
        breaker.record(&settings, ok, Instant::now());
        breaker.report(&route.upstream);
        if ok {
            return response;
        }
        if attempt + 1 < attempts {
            metrics::counter!("socialnet_gateway_retries_total", "upstream" => route.upstream.clone())
                .increment(1);
        }
        last = Some(response);
    }
    last.unwrap_or_else(|| {
        ApiError::new(StatusCode::BAD_GATEWAY, "Bad gateway", "no attempt was made").into_response()
    })
}

/// Answers up to this size (by their `Content-Length`) are read whole before they are passed on.
const BUFFER_UP_TO: u64 = 256 * 1024;

/// Send `req` upstream. An answer of known, small length is read whole within the caller's timeout, and
/// goes out as one buffer: a streamed body costs a hand-off between hyper's connection task and this one
/// per chunk, and a separate write of the head (measured: a home timeline cost the gateway 44 µs of CPU
/// streamed). Larger or unsized answers stream.
async fn send(
    client: &crate::UpstreamClient,
    req: hyper::Request<Full<Bytes>>,
) -> Result<Response, SendError> {
    let resp = client.request(req).await.map_err(SendError::Request)?;
    let small = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= BUFFER_UP_TO);
    let (parts, body) = resp.into_parts();
    if small {
        let bytes = body.collect().await.map_err(SendError::Body)?.to_bytes();
        Ok(Response::from_parts(parts, Body::from(bytes)))
    } else {
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Request(hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(hyper::Error),
    #[error("{0}")]
    Pipelined(PipeError),
    #[error("no answer in time")]
    TimedOut,
}
