//! A stand-in OpenTelemetry collector for tests: an OTLP/HTTP endpoint on loopback that keeps every span
//! it is sent, with the `service.name` of the resource it came under.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

type Spans = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

#[derive(Debug, Clone)]
pub struct OtlpCollector {
    pub addr: SocketAddr,
    spans: Spans,
}

impl OtlpCollector {
    /// Start one on a free port (on the current runtime).
    pub async fn start() -> Self {
        let spans: Spans = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                let kept = kept.clone();
                async move {
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                        let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                            for span in ss["spans"].as_array().into_iter().flatten() {
                                kept.push((service.clone(), span.clone()));
                            }
                        }
                    }
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the collector");
        let addr = listener.local_addr().expect("the collector's address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, spans }
    }

    /// The endpoint to configure: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received once there are at least `n` (or all there are after 5 s).
    pub async fn wait_for(&self, n: usize) -> Vec<(String, serde_json::Value)> {
        crate::eventually(std::time::Duration::from_secs(5), || {
            let c = self.clone();
            async move { c.spans().len() >= n }
        })
        .await;
        self.spans()
    }

    /// Every span received so far, with its service name.
    pub fn spans(&self) -> Vec<(String, serde_json::Value)> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
