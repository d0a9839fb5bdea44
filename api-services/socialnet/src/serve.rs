//! Serving a router until Ctrl-C or SIGTERM, letting in-flight requests finish (`http_kit::serve`: the
//! peer address is available to handlers, and pipelined answers are written together).

use anyhow::Context;
use axum::Router;
use std::net::SocketAddr;

pub async fn serve(listen: SocketAddr, app: Router, what: &str) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "{what} listening");
    http_kit::serve(listener, app, shutdown_signal()).await;
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
