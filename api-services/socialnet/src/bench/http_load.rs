//! A small closed-loop HTTP load generator: N clients, each on its own keep-alive connection, sending its
//! next request when the previous answer arrived, for a fixed time. Keeps every latency for exact
//! percentiles. One connection per client (as wrk does) instead of a shared pool: the pool's lock cost the
//! generator CPU that the measured server then lacked on this 2-core machine.

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

async fn connect(authority: &str) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn send(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    mut req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ()> {
    let authority = req.uri().authority().map(ToString::to_string).ok_or(())?;
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = connect(&authority).await;
    }
    let s = sender.as_mut().ok_or(())?;
    s.ready().await.map_err(|_| ())?;
    if let Ok(host) = hyper::header::HeaderValue::from_str(&authority) {
        req.headers_mut().entry(hyper::header::HOST).or_insert(host);
    }
    // Origin-form on the wire, as a browser or wrk sends it.
    if let Some(pq) = req.uri().path_and_query().and_then(|pq| pq.as_str().parse().ok()) {
        *req.uri_mut() = pq;
    }
    s.send_request(req).await.map_err(|_| ())
}

pub async fn run(
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
        let make = make.clone();
        tasks.spawn(async move {
            let mut r = LoadResult::default();
            let mut n = 0u64;
            let mut sender = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = send(&mut sender, make(c, n)).await;
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
