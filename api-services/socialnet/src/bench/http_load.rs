//! A small closed-loop HTTP load generator: N clients, each on its own keep-alive connection, sending its
//! next request when the previous answer arrived, for a fixed time. Keeps every latency for exact
//! percentiles. As wrk does, each client owns its connection and speaks HTTP/1.1 on it directly (one
//! write per request, the answer parsed in place with httparse): a shared pool's lock, and then hyper's
//! per-connection task, cost the generator CPU that the measured server lacked on this 2-core machine.

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// One keep-alive HTTP/1.1 connection that writes each request as one buffer and parses the answer in
/// place, in the client's own task: no connection task, channel or waker hop per request, so the generator
/// takes less of the CPU that the server under test shares (as wrk does, and as raw publishes do in the
/// write benchmark).
struct Conn {
    stream: tokio::net::TcpStream,
    buf: BytesMut,
}

/// `req` on the wire (origin-form target, `Host`, `Content-Length`), and the authority to connect to.
fn encode(req: hyper::Request<Full<Bytes>>) -> Option<(String, Vec<u8>)> {
    let (parts, body) = req.into_parts();
    let body = body.collect().now_or_never()?.ok()?.to_bytes();
    let authority = parts.uri.authority()?.to_string();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{} {target} HTTP/1.1\r\nhost: {authority}\r\n", parts.method).as_bytes());
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || parts.method != hyper::Method::GET {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Some((authority, out))
}

impl Conn {
    async fn open(authority: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: BytesMut::with_capacity(16 * 1024) })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn take(&mut self, n: usize) -> std::io::Result<Bytes> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn line(&mut self) -> std::io::Result<Bytes> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i + 2).freeze();
                return Ok(line.slice(..i));
            }
            self.fill().await?;
        }
    }

    /// Send one request and read its answer: (status, body, whether the connection stays open).
    async fn roundtrip(&mut self, request: &[u8]) -> std::io::Result<(u16, Bytes, bool)> {
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.stream.write_all(request).await?;
        let (status, head_len, length, chunked, keep) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf).map_err(|_| bad("malformed response head"))? {
                httparse::Status::Complete(n) => {
                    let header = |name: &str| {
                        resp.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                    };
                    let length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
                    let keep = !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    break (resp.code.unwrap_or(0), n, length, chunked, keep);
                }
                httparse::Status::Partial => self.fill().await?,
            }
        };
        let _ = self.buf.split_to(head_len);
        let body = match (length, chunked) {
            // These never carry a body, whatever their headers say.
            _ if status == 204 || status == 304 || status < 200 => Bytes::new(),
            (Some(n), false) => self.take(n).await?,
            (_, true) => {
                let mut body = BytesMut::new();
                loop {
                    let size_line = self.line().await?;
                    let size = std::str::from_utf8(&size_line)
                        .ok()
                        .and_then(|s| {
                            usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok()
                        })
                        .ok_or_else(|| bad("malformed chunk size"))?;
                    if size == 0 {
                        while !self.line().await?.is_empty() {}
                        break body.freeze();
                    }
                    body.extend_from_slice(&self.take(size).await?);
                    self.take(2).await?;
                }
            }
            (None, false) => return Err(bad("a response without a length")),
        };
        Ok((status, body, keep))
    }
}

const KEPT_BODIES_PER_CLIENT: usize = 8;

pub async fn run(
    clients: usize,
    duration: Duration,
    expect: hyper::StatusCode,
    keep_bodies: bool,
    make: MakeRequest,
) -> LoadResult {
    run_until(clients, duration, u64::MAX, expect, keep_bodies, None, make).await
}

/// Open loop: `rate` requests per second in all, spread evenly over `clients` connections, for `duration`.
/// Each request has a scheduled send time and its latency counts from then, so a request that had to
/// wait for the one before it (the server fell behind) shows that wait (no coordinated omission).
pub async fn run_paced(
    clients: usize,
    rate: u64,
    duration: Duration,
    expect: hyper::StatusCode,
    make: MakeRequest,
) -> LoadResult {
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    run_until(clients, duration, u64::MAX, expect, false, Some(interval), make).await
}

/// Exactly `requests` requests over `clients` connections (client `c` sends requests `c`, `c + clients`,
/// …: its `n`-th is request `c + n * clients`), or fewer if `limit` passes first.
pub async fn run_count(
    clients: usize,
    requests: u64,
    limit: Duration,
    expect: hyper::StatusCode,
    make: MakeRequest,
) -> LoadResult {
    run_until(clients, limit, requests, expect, false, None, make).await
}

/// The loop of every mode: closed when `pace` is `None`, else each client sends every `pace`.
async fn run_until(
    clients: usize,
    duration: Duration,
    requests: u64,
    expect: hyper::StatusCode,
    keep_bodies: bool,
    pace: Option<Duration>,
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
            let mut conn: Option<Conn> = None;
            // Paced clients start staggered across one interval, so the offered load is even.
            let schedule = pace.map(|p| (p, started + p.mul_f64(c as f64 / clients as f64)));
            while Instant::now() < deadline
                && (c as u64).saturating_add(n.saturating_mul(clients as u64)) < requests
            {
                let t = match schedule {
                    Some((p, first)) => {
                        let at = first + p.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
                        if at >= deadline {
                            break;
                        }
                        if at > Instant::now() {
                            // On time: count from the actual send (the timer wakes up to 1 ms late, which
                            // is the generator's delay, not the server's).
                            tokio::time::sleep_until(at.into()).await;
                            Instant::now()
                        } else {
                            // Behind schedule: the server is; count from when the request was due.
                            at
                        }
                    }
                    None => Instant::now(),
                };
                let req = make(c, n);
                n += 1;
                let Some((authority, wire)) = encode(req) else {
                    r.failed += 1;
                    continue;
                };
                if conn.is_none() {
                    conn = Conn::open(&authority).await.ok();
                }
                let Some(open) = conn.as_mut() else {
                    r.failed += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match open.roundtrip(&wire).await {
                    Ok((status, body, keep)) => {
                        if !keep {
                            conn = None;
                        }
                        if status == expect.as_u16() {
                            r.latencies_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                            r.ok += 1;
                            // A few per client are enough to check answers; keeping all cost memory
                            // and the generator's CPU.
                            if keep_bodies && r.bodies.len() < KEPT_BODIES_PER_CLIENT {
                                r.bodies.push(body);
                            }
                        } else {
                            r.failed += 1;
                        }
                    }
                    Err(_) => {
                        conn = None;
                        r.failed += 1;
                    }
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
