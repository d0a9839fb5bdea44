//! A small closed-loop HTTP load generator: N clients, each sending its next request when the previous
//! answer arrived, for a fixed time. Keeps every latency for exact percentiles.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector)
}

/// What one request should be, given the client index and its request counter.
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> hyper::Request<Full<Bytes>> + Send + Sync>;

#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    /// Bodies of successful answers, when asked to keep them.
    pub bodies: Vec<Bytes>,
}

pub async fn run(
    client: &HttpClient,
    clients: usize,
    duration: Duration,
    expect: hyper::StatusCode,
    keep_bodies: bool,
    make: MakeRequest,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, make) = (client.clone(), make.clone());
        tasks.spawn(async move {
            let mut r = LoadResult::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = client.request(make(c, n)).await;
                n += 1;
                match outcome {
                    Ok(resp) if resp.status() == expect => {
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        r.latencies_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                        r.ok += 1;
                        if keep_bodies {
                            r.bodies.push(body);
                        }
                    }
                    Ok(resp) => {
                        let _ = resp.into_body().collect().await;
                        r.failed += 1;
                    }
                    Err(_) => r.failed += 1,
                }
            }
            r
        });
    }
    let mut total = LoadResult::default();
    while let Some(Ok(r)) = tasks.join_next().await {
        total.ok += r.ok;
        total.failed += r.failed;
        total.latencies_us.extend(r.latencies_us);
        total.bodies.extend(r.bodies);
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}
