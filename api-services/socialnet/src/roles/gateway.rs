//! `socialnet gateway`.

use crate::cli::GatewayArgs;
use anyhow::Context;
use gateway::limit::Limiter;
use gateway::{Gateway, Runtime};
use std::process::ExitCode;
use std::time::Duration;
use utoipa::OpenApi;

/// The public API document the gateway (and dev mode) serves: the write and the read routes.
pub fn openapi_doc() -> bytes::Bytes {
    let mut doc = write_api::ApiDoc::openapi();
    doc.merge(read_api::ApiDoc::openapi());
    doc.info.title = "socialnet API".into();
    // Relative: the gateway (or dev mode) that served the document serves the API.
    doc.servers = Some(vec![utoipa::openapi::server::Server::new("/")]);
    doc.info.description = Some(
        "Writes answer 202 once the command is durably queued; reads come from the active projection.".into(),
    );
    bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::load(&args.config).await.map_err(anyhow::Error::msg)?;
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
    crate::serve::serve(args.listen, gateway::app(gw, ready), "gateway").await?;
    Ok(ExitCode::SUCCESS)
}
