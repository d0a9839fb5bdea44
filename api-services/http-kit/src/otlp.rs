//! Trace context and span export, shared by the gateway and the services. Each request a process serves is
//! one SERVER span: it continues the caller's W3C trace (or starts one); the gateway sends its upstream a
//! `traceparent` naming its own span as the parent, so a request's spans in the gateway and in the service
//! form one trace. When an OTLP endpoint is configured, spans are sent there (OTLP/HTTP with JSON encoding,
//! batched by a background task; a full queue drops spans and counts them rather than slow requests down).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::Full;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// This process's hop in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub trace_id: String,
    /// The caller's span, when it sent a valid `traceparent`.
    pub parent_span_id: Option<String>,
    pub span_id: String,
    flags: String,
}

fn hex_id(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_owned()
}

fn is_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

impl Hop {
    /// Continue the caller's trace from its `traceparent`, or start a new one if it sent none or a
    /// malformed one.
    pub fn continuing(incoming: Option<&str>) -> Self {
        let span_id = hex_id(16);
        if let Some(tp) = incoming {
            let f: Vec<&str> = tp.split('-').collect();
            if f.len() == 4 && is_id(f[1], 32) && is_id(f[2], 16) && f[3].len() == 2 {
                return Self {
                    trace_id: f[1].to_ascii_lowercase(),
                    parent_span_id: Some(f[2].to_ascii_lowercase()),
                    span_id,
                    flags: f[3].to_owned(),
                };
            }
        }
        Self { trace_id: hex_id(32), parent_span_id: None, span_id, flags: "01".into() }
    }

    /// The `traceparent` sent upstream: same trace, this hop's span as parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// One finished request, as a span.
#[derive(Debug, Clone)]
pub struct Span {
    pub hop: Hop,
    pub start: SystemTime,
    pub end: SystemTime,
    pub method: String,
    pub route: String,
    /// The upstream a gateway forwarded to (`None` in a service).
    pub upstream: Option<String>,
    pub status: u16,
}

const QUEUE: usize = 8192;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Sends spans to an OTLP/HTTP collector. Dropping it flushes what is queued and ends the task.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
}

impl Exporter {
    /// Start the export task (needs a Tokio runtime). `endpoint` is the collector's base URL, e.g.
    /// `http://otel-collector:4318`; spans go to `{endpoint}/v1/traces`.
    pub fn spawn(endpoint: &str, service: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        tokio::spawn(run(rx, url, service.to_owned()));
        Self { tx }
    }

    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            metrics::counter!("socialnet_spans_dropped_total").increment(1);
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Span>, url: String, service: String) {
    let client = match crate::https_client::<Full<Bytes>>() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "span export disabled");
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let closed = match tokio::time::timeout(FLUSH_EVERY, rx.recv()).await {
            Ok(Some(span)) => {
                batch.push(span);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(s) => batch.push(s),
                        Err(_) => break,
                    }
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if !batch.is_empty() && (batch.len() >= BATCH || closed || rx.is_empty()) {
            let body = encode(&service, &batch);
            let sent = batch.len() as u64;
            batch.clear();
            let request = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)));
            let ok = match request {
                Ok(r) => matches!(
                    tokio::time::timeout(Duration::from_secs(5), client.request(r)).await,
                    Ok(Ok(resp)) if resp.status().is_success()
                ),
                Err(_) => false,
            };
            let outcome = if ok { "exported" } else { "failed" };
            metrics::counter!("socialnet_spans_total", "outcome" => outcome).increment(sent);
            if !ok {
                tracing::warn!(url, spans = sent, "span export failed; those spans are dropped");
            }
        }
        if closed {
            return;
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0).to_string()
}

fn attr(key: &str, value: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"key": key, "value": value})
}

fn attributes(s: &Span) -> Vec<serde_json::Value> {
    let mut out = vec![
        attr("http.request.method", serde_json::json!({"stringValue": s.method})),
        attr("http.route", serde_json::json!({"stringValue": s.route})),
        attr("http.response.status_code", serde_json::json!({"intValue": s.status.to_string()})),
    ];
    if let Some(upstream) = &s.upstream {
        out.push(attr("socialnet.upstream", serde_json::json!({"stringValue": upstream})));
    }
    out
}

/// Middleware for a service's router (`axum::middleware::from_fn_with_state(exporter, trace_requests)`):
/// one SERVER span per request, named by method and matched route, child of the caller's `traceparent`.
pub async fn trace_requests(State(exporter): State<Exporter>, req: Request, next: Next) -> Response {
    let hop = Hop::continuing(req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let (start, started) = (SystemTime::now(), Instant::now());
    let response = next.run(req).await;
    exporter.record(Span {
        hop,
        start,
        end: start + started.elapsed(),
        method,
        route,
        upstream: None,
        status: response.status().as_u16(),
    });
    response
}

/// OTLP/HTTP JSON (`ExportTraceServiceRequest`): ids in hex, times as decimal strings.
pub fn encode(service: &str, spans: &[Span]) -> Vec<u8> {
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut span = serde_json::json!({
                "traceId": s.hop.trace_id,
                "spanId": s.hop.span_id,
                "name": format!("{} {}", s.method, s.route),
                "kind": 2, // SERVER
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": attributes(s),
                // ERROR for 5xx (the gateway's or the upstream's fault), UNSET otherwise.
                "status": {"code": if s.status >= 500 { 2 } else { 0 }},
            });
            if let Some(parent) = &s.hop.parent_span_id {
                span["parentSpanId"] = serde_json::Value::from(parent.clone());
            }
            span
        })
        .collect();
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", serde_json::json!({"stringValue": service}))]},
        "scopeSpans": [{"scope": {"name": "socialnet"}, "spans": spans}],
    }]})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_continues_a_valid_trace_and_starts_one_otherwise() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let hop = Hop::continuing(Some(tp));
        assert_eq!(hop.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hop.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(hop.span_id, "00f067aa0ba902b7");
        assert_eq!(hop.traceparent(), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hop.span_id));
        for bad in ["garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf9-00f0-01"] {
            let fresh = Hop::continuing(Some(bad));
            assert!(fresh.parent_span_id.is_none() && fresh.trace_id.len() == 32, "{bad}");
        }
    }
}
