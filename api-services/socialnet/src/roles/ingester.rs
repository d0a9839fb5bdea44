//! `socialnet ingester`: consume the primary and secondary queues into the event store, with the backup
//! store for outages, and serve /healthz, /readyz, /metrics.

use crate::cli::IngesterArgs;
use eventstore::{EventStore, PgEventStore};
use http_kit::Readiness;
use ingester::{Ingester, IngesterConfig, Processor};
use queue::{CommandSource, JetStreamSource};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Run migrations, retrying while the store is down. Returns early (false) if `give_up_after` passes.
pub async fn migrate_with_retry(store: &PgEventStore, give_up_after: Option<Duration>) -> bool {
    let started = std::time::Instant::now();
    loop {
        match store.migrate().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "migrations not applied yet; retrying");
                if give_up_after.is_some_and(|d| started.elapsed() > d) {
                    return false;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

pub async fn run(args: IngesterArgs) -> anyhow::Result<ExitCode> {
    let primary = args.store.primary()?;
    let backup = args.store.backup()?;
    if let Some(b) = &args.store.backup_database_url {
        let backup_store = PgEventStore::connect_lazy(b)?;
        migrate_with_retry(&backup_store, Some(Duration::from_secs(5))).await;
    }
    // Without a backup there is nothing useful to do until the primary has its schema.
    let limit = backup.is_some().then(|| Duration::from_secs(5));
    if !migrate_with_retry(&primary, limit).await {
        tracing::warn!("primary store unreachable at start-up: parking commands in the backup store");
        let p = primary.clone();
        tokio::spawn(async move { migrate_with_retry(&p, None).await });
    }

    let config = IngesterConfig {
        batch_size: args.batch_size,
        max_deliver: args.max_deliver,
        backoff_base: Duration::from_millis(args.backoff_ms),
        ..IngesterConfig::default()
    };
    let store: Arc<dyn EventStore> = Arc::new(primary);
    let processor = Processor::new(store.clone()).with_append_parallelism(args.append_parallelism);
    let ingester = Ingester::new(config, Arc::new(processor), backup.clone()).await;
    let index = args.replica_index()?;
    let mut sources: Vec<Arc<dyn CommandSource>> = Vec::new();
    for queue in args.queue.connect_all().await? {
        for source in JetStreamSource::owned(&queue, index, args.replicas) {
            sources.push(Arc::new(source));
        }
    }
    tracing::info!(index, replicas = args.replicas, sources = sources.len(), "consuming");
    let worker = tokio::spawn(ingester.run_all(sources));

    let ready: Readiness = Arc::new(move || {
        let (s, b) = (store.clone(), backup.clone());
        Box::pin(async move {
            match s.ping().await {
                Ok(()) => Ok(()),
                Err(e) => match &b {
                    Some(b) if b.ping().await.is_ok() => Ok(()),
                    _ => Err(format!("no event store answers: {e}")),
                },
            }
        })
    });
    let ops = axum::Router::new().merge(http_kit::ops_routes(ready));
    tokio::select! {
        r = crate::serve::serve(args.listen, ops, "ingester ops") => r?,
        _ = worker => anyhow::bail!("the ingester stopped unexpectedly"),
    }
    Ok(ExitCode::SUCCESS)
}
