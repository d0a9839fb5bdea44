//! `socialnet gateway`.

use crate::cli::GatewayArgs;
use anyhow::Context;
use gateway::limit::Limiter;
use gateway::{Gateway, Runtime};
use std::process::ExitCode;
use std::time::Duration;
use utoipa::OpenApi;

/// The public API document the gateway serves (the write API's routes; see docs/architecture.md).
pub fn openapi_doc() -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(&write_api::ApiDoc::openapi()).unwrap_or_default())
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::load(&args.config).map_err(anyhow::Error::msg)?;
    let limiter = match &args.redis_url {
        Some(url) => Limiter::redis(url).await.context("connecting to the rate-limit Redis")?,
        None => Limiter::local(),
    };
    let gw = Gateway::new(runtime, limiter, openapi_doc());
    tokio::spawn(gateway::watch_config(
        gw.clone(),
        args.config.clone(),
        Duration::from_millis(args.reload_ms),
    ));
    // Ready once serving: each upstream has its own readiness, and a failing one is the breaker's business.
    let ready: http_kit::Readiness = std::sync::Arc::new(|| Box::pin(async { Ok(()) }));
    crate::serve::serve_with_peer(args.listen, gateway::app(gw, ready), "gateway").await?;
    Ok(ExitCode::SUCCESS)
}
