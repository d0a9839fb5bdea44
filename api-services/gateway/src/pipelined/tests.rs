use super::*;
use axum::extract::{ConnectInfo, Path as UrlPath};
use axum::routing::get;
use http_body_util::BodyExt;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX: usize = 1 << 20;

fn parsed(input: &[u8], head: bool, eof: bool) -> Option<Parsed> {
    parse(input, head, MAX, eof).unwrap()
}

async fn text(r: Response<Body>) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn answers_are_parsed_whole_and_in_order() {
    let two = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno";
    let (first, used, close) = parsed(two, false, false).unwrap();
    assert_eq!(
        (first.status(), first.headers()["x-a"].as_bytes(), close),
        (StatusCode::OK, &b"1"[..], false)
    );
    assert_eq!(text(first).await, "hello");
    let (second, used2, _) = parsed(&two[used..], false, false).unwrap();
    assert_eq!((second.status(), used + used2), (StatusCode::NOT_FOUND, two.len()));
    assert_eq!(text(second).await, "no");
    // Every prefix of an answer is incomplete, not an error.
    for cut in 0..two.len() - used2 {
        assert!(parse(&two[..cut], false, MAX, false).unwrap().is_none_or(|p| p.1 <= cut), "{cut}");
    }
}

#[tokio::test]
async fn chunked_bodies_with_trailers_and_interim_answers() {
    let a = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nx-t: 1\r\n\r\nrest";
    let (r, used, _) = parsed(a, false, false).unwrap();
    assert_eq!(&a[used..], b"rest");
    assert!(!r.headers().contains_key("x-t"), "trailers are dropped");
    assert_eq!(text(r).await, "abcde");
    assert!(parsed(&a[..a.len() - 8], false, false).is_none(), "no end yet");
    let bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n";
    assert!(matches!(parse(bad, false, MAX, false), Err(PipeError::Malformed(_))));
}

#[tokio::test]
async fn bodyless_answers_and_closing_ones() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n";
    assert_eq!(parsed(head, true, false).unwrap().1, head.len(), "a HEAD answer has no body");
    let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
    assert_eq!(parsed(no_content, false, false).unwrap().1, no_content.len());
    let closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    assert!(parsed(closing, false, false).unwrap().2);
    let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
    assert!(parsed(old, false, false).unwrap().2, "HTTP/1.0 closes unless kept alive");
    let old_kept = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
    assert!(!parsed(old_kept, false, false).unwrap().2);
    let no_length = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
    assert!(parsed(no_length, false, false).is_none(), "waits for the close");
    let (r, used, close) = parsed(no_length, false, true).unwrap();
    assert_eq!((used, close), (no_length.len(), true));
    assert_eq!(text(r).await, "until the end");
}

#[test]
fn oversized_and_malformed_answers_are_errors() {
    let big = b"HTTP/1.1 200 OK\r\ncontent-length: 5000000\r\n\r\n";
    assert!(matches!(parse(big, false, MAX, false), Err(PipeError::TooLarge(_))));
    let garbage = b"HTTP/9 what\r\n\r\n";
    assert!(matches!(parse(garbage, false, MAX, false), Err(PipeError::Malformed(_))));
    let two_lengths = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab";
    assert!(matches!(parse(two_lengths, false, MAX, false), Err(PipeError::Malformed(_))));
    let gzip = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n";
    assert!(matches!(parse(gzip, false, MAX, false), Err(PipeError::Malformed(_))));
}

#[test]
fn requests_are_encoded_in_origin_form_with_host() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("r1"));
    let wire = encode(&Method::GET, "/base", "/v1/x?a=1", "up:8080", &h);
    assert_eq!(&wire[..], b"GET /base/v1/x?a=1 HTTP/1.1\r\nhost: up:8080\r\nx-request-id: r1\r\n\r\n");
}

#[test]
fn settings_out_of_range_are_refused() {
    let mut errors = Vec::new();
    PipelineSettings::default().check("read", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let bad =
        PipelineSettings { connections: 0, depth: 0, recycle_after: 0, max_answer_bytes: 1, enabled: true };
    bad.check("read", &mut errors);
    assert_eq!(errors.len(), 4, "{errors:?}");
}

/// A real axum server that answers `/echo/{n}` with `n`, after `n % 7` ms, and records each connection.
async fn echo_server() -> (SocketAddr, Arc<Mutex<HashSet<SocketAddr>>>) {
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let seen = peers.clone();
    let app = axum::Router::new().route(
        "/echo/{n}",
        get(move |UrlPath(n): UrlPath<u64>, ConnectInfo(peer): ConnectInfo<SocketAddr>| {
            seen.lock().unwrap().insert(peer);
            async move {
                tokio::time::sleep(Duration::from_millis(n % 7)).await;
                n.to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    (addr, peers)
}

fn settings(connections: usize, recycle_after: u64) -> PipelineSettings {
    PipelineSettings { connections, recycle_after, ..Default::default() }
}

#[tokio::test]
async fn many_concurrent_reads_share_few_connections_and_each_gets_its_own_answer() {
    let (addr, peers) = echo_server().await;
    let pipe = Arc::new(Pipelined::for_url(&format!("http://{addr}"), settings(2, 1_000_000)).unwrap());
    let tasks: Vec<_> = (0..400u64)
        .map(|n| {
            let pipe = pipe.clone();
            tokio::spawn(async move {
                let r = pipe
                    .send(&Method::GET, &format!("/echo/{n}"), &HeaderMap::new(), Duration::from_secs(10))
                    .await
                    .unwrap();
                (n, text(r).await)
            })
        })
        .collect();
    for t in tasks {
        let (n, body) = t.await.unwrap();
        assert_eq!(body, n.to_string());
    }
    assert_eq!(peers.lock().unwrap().len(), 2, "400 reads over the 2 connections");
}

#[tokio::test]
async fn connections_are_recycled_after_their_share_of_requests() {
    let (addr, peers) = echo_server().await;
    let pipe = Pipelined::for_url(&format!("http://{addr}"), settings(1, 3)).unwrap();
    for n in 0..10u64 {
        let r =
            pipe.send(&Method::GET, &format!("/echo/{n}"), &HeaderMap::new(), Duration::from_secs(5)).await;
        assert_eq!(text(r.unwrap()).await, n.to_string());
    }
    assert_eq!(peers.lock().unwrap().len(), 4, "3 + 3 + 3 + 1 requests");
}

#[tokio::test]
async fn recycling_under_concurrent_load_fails_no_read() {
    let (addr, peers) = echo_server().await;
    // Every connection retires after 5 requests while 300 reads are in flight over 2 of them.
    let pipe = Arc::new(Pipelined::for_url(&format!("http://{addr}"), settings(2, 5)).unwrap());
    let tasks: Vec<_> = (0..300u64)
        .map(|n| {
            let pipe = pipe.clone();
            tokio::spawn(async move {
                let (path, headers) = (format!("/echo/{n}"), HeaderMap::new());
                (n, pipe.send(&Method::GET, &path, &headers, Duration::from_secs(20)).await)
            })
        })
        .collect();
    for t in tasks {
        let (n, r) = t.await.unwrap();
        assert_eq!(text(r.unwrap()).await, n.to_string());
    }
    assert!(peers.lock().unwrap().len() >= 60, "300 reads at 5 per connection");
}

/// A raw server whose connections each answer `answers` requests and then close without a word.
async fn closing_server(answers: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0;
                while answered < answers {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if answered < answers {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                            answered += 1;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn reads_left_unanswered_by_a_closing_upstream_are_sent_again_on_a_new_connection() {
    let (addr, accepted) = closing_server(1).await;
    let pipe = Arc::new(Pipelined::for_url(&format!("http://{addr}"), settings(1, 1_000_000)).unwrap());
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let pipe = pipe.clone();
            tokio::spawn(async move {
                pipe.send(&Method::GET, "/", &HeaderMap::new(), Duration::from_secs(5)).await.map(|_| ())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert!(matches!(e, PipeError::Closed), "{e}"),
        }
    }
    // Each connection answers one: three reads need three connections, and at most two more tries each.
    assert_eq!(ok, 3, "every read was answered in the end");
    assert!(accepted.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_stalled_connection_times_out_its_oldest_read_and_refused_ones_fail_fast() {
    // Accepts and reads, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let pipe = Pipelined::for_url(&format!("http://{addr}"), settings(1, 1_000_000)).unwrap();
    let started = Instant::now();
    let r = pipe.send(&Method::GET, "/", &HeaderMap::new(), Duration::from_millis(200)).await;
    assert!(matches!(r, Err(PipeError::TimedOut)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let pipe = Pipelined::for_url(&format!("http://{refused}"), settings(1, 1_000_000)).unwrap();
    let r = pipe.send(&Method::GET, "/", &HeaderMap::new(), Duration::from_secs(5)).await;
    assert!(matches!(r, Err(PipeError::Connect(..))), "{r:?}");
}

#[test]
fn only_plain_http_urls_are_pipelined() {
    assert!(Pipelined::for_url("https://x:1", PipelineSettings::default()).is_none());
    let p = Pipelined::for_url("http://read-api/base/", PipelineSettings::default()).unwrap();
    assert_eq!((p.authority.as_str(), p.base_path.as_str()), ("read-api:80", "/base"));
}
