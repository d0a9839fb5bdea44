//! Serving a router: what `axum::serve` does (HTTP/1.1 and h2c, the peer address for `ConnectInfo`,
//! graceful shutdown), plus one thing it cannot be told: answers to pipelined requests are written
//! together. The gateway sends each upstream many reads at once on a few connections; flushing every
//! answer on its own would cost the upstream a write per answer again, which is what pipelining saves.

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long connections may take to finish their requests once shutdown begins.
const DRAIN: Duration = Duration::from_secs(30);

/// Serve `app` on `listener` until `shutdown` completes, then let open connections finish (up to 30 s).
/// Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().pipeline_flush(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = conn.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {} s of shutdown; closing them", DRAIN.as_secs());
    }
}

/// Serve `app` on `listener` in the background until the process ends (tests, benchmarks, dev mode).
pub fn spawn(listener: TcpListener, app: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(serve(listener, app, std::future::pending()))
}
