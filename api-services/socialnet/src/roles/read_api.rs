//! `socialnet read-api`.

use crate::cli::ReadApiArgs;
use anyhow::Context;
use eventstore::{EventStore, PgEventStore};
use http_kit::Readiness;
use read_api::{TargetSet, TargetSetConfig};
use std::process::ExitCode;
use std::sync::Arc;

pub async fn run(args: ReadApiArgs) -> anyhow::Result<ExitCode> {
    let verifier = args.auth.verifier()?;
    let store: Arc<dyn EventStore> =
        Arc::new(PgEventStore::connect_lazy(&args.database_url).context("event store")?);
    let targets = TargetSet::new(
        args.targets.redis()?,
        TargetSetConfig {
            max_lag_positions: args.max_lag,
            home_cache_ttl: std::time::Duration::from_millis(args.home_cache_ttl_ms),
            home_cache_pages: args.home_cache_pages,
            ..TargetSetConfig::default()
        },
    );
    if let Some(active) = args.active.as_deref().filter(|a| !a.is_empty())
        && !targets.set_active(active)
    {
        tracing::warn!(active, "the requested active target is not among --targets; keeping the first");
    }
    targets.refresh().await;
    targets.spawn_refresher();
    let t = targets.clone();
    let ready: Readiness = Arc::new(move || {
        let t = t.clone();
        Box::pin(async move {
            let healthy = t.describe().iter().any(|d| d.healthy);
            if healthy { Ok(()) } else { Err("no projection target is usable".into()) }
        })
    });
    let state = read_api::AppState { targets, store, verifier };
    let app = args.trace.layer(read_api::app(state, ready), "socialnet-read-api");
    crate::serve::serve(args.listen, app, "read API").await?;
    Ok(ExitCode::SUCCESS)
}
