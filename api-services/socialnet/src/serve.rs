//! Serving a router until Ctrl-C or SIGTERM, letting in-flight requests finish.

use anyhow::Context;
use axum::Router;
use std::net::SocketAddr;

pub async fn serve(listen: SocketAddr, app: Router, what: &str) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "{what} listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("serving")?;
    Ok(())
}

/// Like [`serve`], with the peer address available to handlers (the gateway limits per client IP).
pub async fn serve_with_peer(listen: SocketAddr, app: Router, what: &str) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "{what} listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
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
