//! The upstream client for reads: a few long-lived HTTP/1.1 connections per upstream, each carrying many
//! requests at once (pipelining, RFC 9112 §9.3.2). Under load, the requests that arrive while a connection
//! is busy leave in one write and their answers come back in one read, so the syscalls and wake-ups that
//! dominate a forwarded request's cost are shared by a batch, on the gateway and on the upstream alike;
//! at low load a request goes out alone, at once. Only safe methods (GET, HEAD) come here: a pipelined
//! request may have to be sent again when its connection closes before answering, which is harmless only
//! for them. Everything else goes through hyper's pool, one request per connection at a time.
//!
//! Each connection is one task that owns the socket: it takes jobs from a channel, writes them, parses
//! answers in order and hands each to its waiting request. A connection that stalls (its oldest request
//! passes its deadline), breaks, or is told by the upstream to close fails what it holds; requests that
//! never got an answer are sent again on a fresh connection. Connections are retired after
//! `recycle_after` requests so that an upstream Service with several pods keeps being balanced.

pub use crate::config::PipelineSettings;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The connection ended before this request's answer began: it may be sent again.
    #[error("the connection closed before answering")]
    Closed,
    /// The connection retired or ended before this request was written: it is sent on another.
    #[error("the connection closed before the request was sent")]
    NotSent,
    /// The connection broke (reset, refused write): its requests end as [`PipeError::Closed`].
    #[error("the connection failed: {0}")]
    Io(std::io::Error),
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("the upstream's answer exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the upstream did not answer in time")]
    TimedOut,
}

/// One request on its way: its bytes on the wire, and where its answer goes.
struct Job {
    wire: Bytes,
    head: bool,
    deadline: Instant,
    reply: oneshot::Sender<Result<Response<Body>, PipeError>>,
}

/// The connections to one upstream address.
pub struct Pipelined {
    url: String,
    authority: String,
    /// The URL's path, put before every request's (empty for a bare `http://host:port`).
    base_path: String,
    settings: PipelineSettings,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

struct Slot {
    tx: RwLock<mpsc::UnboundedSender<Job>>,
    /// Jobs given to this slot and not yet answered: the least loaded slot takes the next one.
    load: AtomicUsize,
}

impl std::fmt::Debug for Pipelined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelined").field("authority", &self.authority).finish()
    }
}

/// A job counted against its slot until answered, or until its caller gives up (drops the future).
struct Load<'a>(&'a AtomicUsize);

impl<'a> Load<'a> {
    fn on(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Load<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A closed sender: the slot's first job opens its connection.
fn closed_sender() -> mpsc::UnboundedSender<Job> {
    mpsc::unbounded_channel().0
}

impl Pipelined {
    /// Connections to the upstream at `url` (`http://host[:port][/base]`); `None` for any other URL.
    pub fn for_url(url: &str, settings: PipelineSettings) -> Option<Self> {
        let uri: axum::http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let slots = (0..settings.connections.max(1))
            .map(|_| Slot { tx: RwLock::new(closed_sender()), load: AtomicUsize::new(0) })
            .collect();
        Some(Self { url: url.to_owned(), authority, base_path, settings, slots, next: AtomicUsize::new(0) })
    }

    /// Whether this serves `url` with `settings` (else a reloaded config needs a new one).
    pub fn serves(&self, url: &str, settings: &PipelineSettings) -> bool {
        self.url == url && self.settings == *settings
    }

    /// Send a GET or HEAD to `path_and_query` with `headers` (hop-by-hop ones already removed) and wait
    /// up to `timeout` for the whole answer. A request whose connection closed before answering is sent
    /// again, twice at most, on a fresh one.
    pub async fn send(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<Response<Body>, PipeError> {
        let wire = encode(method, &self.base_path, path_and_query, &self.authority, headers);
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            let job = Job { wire: wire.clone(), head: method == Method::HEAD, deadline, reply };
            let slot = self.pick();
            let _load = Load::on(&slot.load);
            self.dispatch(slot, job);
            match answer.await.unwrap_or(Err(PipeError::Closed)) {
                Err(PipeError::NotSent) if Instant::now() < deadline => {}
                Err(PipeError::Closed) if attempt < 2 && Instant::now() < deadline => attempt += 1,
                Err(PipeError::NotSent) => return Err(PipeError::TimedOut),
                other => return other,
            }
        }
    }

    fn pick(&self) -> &Slot {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = &self.slots[start];
        let mut best_load = best.load.load(Ordering::Relaxed);
        for i in 1..n {
            if best_load == 0 {
                break;
            }
            let s = &self.slots[(start + i) % n];
            let l = s.load.load(Ordering::Relaxed);
            if l < best_load {
                (best, best_load) = (s, l);
            }
        }
        best
    }

    /// Hand `job` to the slot's connection, opening a new one when the slot has none (or it retired).
    fn dispatch(&self, slot: &Slot, job: Job) {
        let job = match slot.tx.read().unwrap_or_else(|p| p.into_inner()).send(job) {
            Ok(()) => return,
            Err(mpsc::error::SendError(job)) => job,
        };
        let mut tx = slot.tx.write().unwrap_or_else(|p| p.into_inner());
        // Another request may have opened it meanwhile.
        let job = match tx.send(job) {
            Ok(()) => return,
            Err(mpsc::error::SendError(job)) => job,
        };
        let (new_tx, rx) = mpsc::unbounded_channel();
        let _ = new_tx.send(job);
        *tx = new_tx;
        tokio::spawn(connection(self.authority.clone(), self.settings, rx));
    }
}

/// The request on the wire: origin-form target, `host`, the given headers, no body.
fn encode(method: &Method, base: &str, path_and_query: &str, authority: &str, headers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::with_capacity(128 + headers.len() * 48);
    for part in [method.as_str(), " ", base, path_and_query, " HTTP/1.1\r\nhost: ", authority, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// A request written and not yet answered.
struct Waiting {
    head: bool,
    deadline: Instant,
    reply: oneshot::Sender<Result<Response<Body>, PipeError>>,
}

/// What woke the connection's loop.
enum Event {
    /// New bytes were read (or a write or a new job made progress).
    Progress,
    /// New jobs are waiting to be written: let others add theirs first.
    Gather,
    /// The upstream closed its end.
    Eof,
    Failed(std::io::Error),
    /// The oldest request passed its deadline.
    Stalled,
    /// Retired or abandoned, and nothing left in flight.
    Done,
}

/// One connection's task: connect, then write jobs and read answers until the connection ends.
async fn connection(authority: String, settings: PipelineSettings, mut rx: mpsc::UnboundedReceiver<Job>) {
    let stream = match TcpStream::connect(&authority).await {
        Ok(s) => s,
        Err(e) => {
            // Everything queued for it fails now; the next request opens another.
            rx.close();
            let kind = e.kind();
            while let Ok(job) = rx.try_recv() {
                let _ = job.reply.send(Err(PipeError::Connect(
                    authority.clone(),
                    std::io::Error::new(kind, e.to_string()),
                )));
            }
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    metrics::counter!("socialnet_gateway_pipelined_connections_total", "upstream" => authority.clone())
        .increment(1);
    let mut conn = Conn {
        stream,
        settings,
        rx,
        accepting: true,
        taken: 0,
        out: BytesMut::with_capacity(16 * 1024),
        gathered: false,
        input: BytesMut::with_capacity(16 * 1024),
        waiting: VecDeque::new(),
        timer: Box::pin(tokio::time::sleep_until(Instant::now() + Duration::from_secs(3600))),
        timer_for: None,
    };
    let ending = loop {
        let event = poll_fn(|cx| conn.poll(cx)).await;
        match event {
            Event::Progress => {}
            Event::Gather => {
                // Behind the other ready tasks: those about to send a read here join this write.
                tokio::task::yield_now().await;
                conn.gathered = true;
            }
            Event::Done => break None,
            Event::Eof => {
                // An answer whose body ends with the connection is complete now.
                let e = conn.answer(true).err();
                break Some(e.unwrap_or(PipeError::Closed));
            }
            Event::Failed(e) => break Some(PipeError::Io(e)),
            Event::Stalled => break Some(PipeError::TimedOut),
        }
        if let Err(e) = conn.answer(false) {
            break Some(e);
        }
    };
    if let Some(e) = &ending {
        tracing::debug!(upstream = %authority, error = %e, "a pipelined connection ended");
    }
    conn.fail_all(ending);
}

struct Conn {
    stream: TcpStream,
    settings: PipelineSettings,
    rx: mpsc::UnboundedReceiver<Job>,
    /// False once retired: no new jobs, finish those in flight.
    accepting: bool,
    taken: u64,
    out: BytesMut,
    /// Whether the connection has yielded once since jobs came in; it writes only then.
    gathered: bool,
    input: BytesMut,
    waiting: VecDeque<Waiting>,
    timer: Pin<Box<Sleep>>,
    timer_for: Option<Instant>,
}

impl Conn {
    /// Take jobs, write, read: returns once something happened, having registered for every source it
    /// waits on otherwise.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let mut progressed = false;
        while self.accepting && self.waiting.len() < self.settings.depth {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(job)) => {
                    if job.reply.is_closed() {
                        continue; // its caller gave up before it was sent
                    }
                    self.out.extend_from_slice(&job.wire);
                    self.waiting.push_back(Waiting {
                        head: job.head,
                        deadline: job.deadline,
                        reply: job.reply,
                    });
                    self.taken += 1;
                    if self.taken >= self.settings.recycle_after {
                        self.retire();
                    }
                }
                Poll::Ready(None) => self.accepting = false,
                Poll::Pending => break,
            }
        }
        if !self.out.is_empty() && !self.gathered {
            return Poll::Ready(Event::Gather);
        }
        while !self.out.is_empty() {
            match self.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => match self.stream.try_write(&self.out) {
                    Ok(n) => {
                        self.out.advance(n);
                        self.gathered = false;
                        progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Event::Failed(e)),
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => break,
            }
        }
        // Read even with nothing in flight: that is how an upstream's close of an idle connection is seen.
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.input.reserve(16 * 1024);
                    match self.stream.try_read_buf(&mut self.input) {
                        Ok(0) => return Poll::Ready(Event::Eof),
                        Ok(_) => return Poll::Ready(Event::Progress),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Event::Failed(e)),
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => break,
            }
        }
        if let Some(front) = self.waiting.front() {
            if self.timer_for != Some(front.deadline) {
                self.timer.as_mut().reset(front.deadline);
                self.timer_for = Some(front.deadline);
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stalled);
            }
        } else if !self.accepting && self.out.is_empty() {
            return Poll::Ready(Event::Done);
        }
        if progressed { Poll::Ready(Event::Progress) } else { Poll::Pending }
    }

    /// Stop taking jobs; those already queued for this connection are sent on another.
    fn retire(&mut self) {
        self.accepting = false;
        self.rx.close();
        while let Ok(job) = self.rx.try_recv() {
            let _ = job.reply.send(Err(PipeError::NotSent));
        }
    }

    /// Hand out every complete answer in the input, in order; `eof`: the upstream closed its end.
    fn answer(&mut self, eof: bool) -> Result<(), PipeError> {
        while let Some(front) = self.waiting.front() {
            let max = self.settings.max_answer_bytes;
            let Some((response, used, close)) = parse(&self.input, front.head, max, eof)? else {
                return Ok(());
            };
            self.input.advance(used);
            if let Some(w) = self.waiting.pop_front() {
                let _ = w.reply.send(Ok(response));
            }
            if close {
                // The upstream answers nothing after this one (RFC 9112 §9.6).
                return Err(PipeError::Closed);
            }
        }
        if !self.input.is_empty() {
            return Err(PipeError::Malformed("bytes with no request waiting for them"));
        }
        Ok(())
    }

    /// The connection ends: every request still in it or queued for it fails. The oldest one gets
    /// `ending` when that is about its answer (a stall, a broken or oversized answer); otherwise, and for
    /// all the others, the connection closed before answering them, so they may be sent again.
    fn fail_all(mut self, ending: Option<PipeError>) {
        self.retire();
        let mut ending = ending
            .filter(|e| matches!(e, PipeError::TimedOut | PipeError::Malformed(_) | PipeError::TooLarge(_)));
        while let Some(w) = self.waiting.pop_front() {
            let _ = w.reply.send(Err(ending.take().unwrap_or(PipeError::Closed)));
        }
    }
}

/// How an answer's body ends, when it says.
enum Framing {
    Length(usize),
    Chunked,
}

/// An answer parsed whole: the response, the bytes it used, and whether the connection closes after it.
type Parsed = (Response<Body>, usize, bool);

/// Parse one whole answer from the start of `input`; `None` while incomplete. Interim (1xx) answers are
/// skipped. An answer with no length ends with the connection: complete only at `eof`.
fn parse(input: &[u8], head: bool, max: usize, eof: bool) -> Result<Option<Parsed>, PipeError> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut res = httparse::Response::new(&mut headers);
        let used = match res.parse(&input[offset..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if input.len() - offset > max {
                    return Err(PipeError::TooLarge(max));
                }
                return Ok(None);
            }
            Err(_) => return Err(PipeError::Malformed("unparsable status line or headers")),
        };
        let code = res.code.ok_or(PipeError::Malformed("no status code"))?;
        let status = StatusCode::from_u16(code).map_err(|_| PipeError::Malformed("bad status code"))?;
        if status.is_informational() {
            if code == 101 {
                return Err(PipeError::Malformed("an upgrade answer to a read"));
            }
            offset += used;
            continue;
        }
        let http10 = res.version == Some(0);
        let mut map = HeaderMap::with_capacity(res.headers.len());
        let mut framing = None;
        let mut close = http10;
        for h in res.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| PipeError::Malformed("bad header name"))?;
            let value =
                HeaderValue::from_bytes(h.value).map_err(|_| PipeError::Malformed("bad header value"))?;
            if name == axum::http::header::TRANSFER_ENCODING {
                if !h.value.eq_ignore_ascii_case(b"chunked") {
                    return Err(PipeError::Malformed("a transfer coding other than chunked"));
                }
                framing = Some(Framing::Chunked);
            } else if name == axum::http::header::CONTENT_LENGTH {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or(PipeError::Malformed("bad content-length"))?;
                if matches!(framing, Some(Framing::Length(m)) if m != n) {
                    return Err(PipeError::Malformed("conflicting content-lengths"));
                }
                if !matches!(framing, Some(Framing::Chunked)) {
                    framing = Some(Framing::Length(n));
                }
            } else if name == axum::http::header::CONNECTION {
                let v = h.value;
                if v.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if http10 && v.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
            map.append(name, value);
        }
        let start = offset + used;
        let bodyless = head || code == 204 || code == 304;
        let (body, end) = match (bodyless, framing) {
            (true, _) => (Bytes::new(), start),
            (false, Some(Framing::Length(n))) => {
                if n > max {
                    return Err(PipeError::TooLarge(max));
                }
                if input.len() < start + n {
                    return Ok(None);
                }
                (Bytes::copy_from_slice(&input[start..start + n]), start + n)
            }
            (false, Some(Framing::Chunked)) => match dechunk(&input[start..], max)? {
                Some((body, n)) => (body, start + n),
                None => return Ok(None),
            },
            // Its body ends with the connection, and nothing can follow it.
            (false, None) => {
                close = true;
                if input.len() - start > max {
                    return Err(PipeError::TooLarge(max));
                }
                if !eof {
                    return Ok(None);
                }
                (Bytes::copy_from_slice(&input[start..]), input.len())
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        *response.version_mut() = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        *response.headers_mut() = map;
        return Ok(Some((response, end, close)));
    }
}

/// Decode a chunked body at the start of `input`: the body and the bytes used, `None` while incomplete.
fn dechunk(input: &[u8], max: usize) -> Result<Option<(Bytes, usize)>, PipeError> {
    let mut body = BytesMut::new();
    let mut at = 0;
    loop {
        let (data_at, size) = match httparse::parse_chunk_size(&input[at..]) {
            Ok(httparse::Status::Complete((n, size))) => (at + n, size),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(PipeError::Malformed("bad chunk size")),
        };
        let size = usize::try_from(size).map_err(|_| PipeError::TooLarge(max))?;
        if body.len() + size > max {
            return Err(PipeError::TooLarge(max));
        }
        if size == 0 {
            // Trailer fields (ignored), then the empty line.
            let mut line = data_at;
            loop {
                let Some(nl) = input[line..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if nl == 0 {
                    return Ok(Some((body.freeze(), line + 2)));
                }
                line += nl + 2;
            }
        }
        if input.len() < data_at + size + 2 {
            return Ok(None);
        }
        if &input[data_at + size..data_at + size + 2] != b"\r\n" {
            return Err(PipeError::Malformed("a chunk not ended by CRLF"));
        }
        body.extend_from_slice(&input[data_at..data_at + size]);
        at = data_at + size + 2;
    }
}

#[cfg(test)]
mod tests;
