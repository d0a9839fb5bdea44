//! `socialnet write-api`: the write API against JetStream (primary, optional secondary) and the event
//! store (for command outcomes).

use crate::cli::WriteApiArgs;
use eventstore::EventStore;
use http_kit::Readiness;
use queue::{DeadLetterQueue, JetStreamKeys};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(args: WriteApiArgs) -> anyhow::Result<ExitCode> {
    let verifier = args.auth.verifier()?;
    let queues = args.queue.connect_all().await?;
    let (publisher, _) = args.publish.publisher(queues.clone(), args.queue.timeout());
    let primary: Arc<dyn EventStore> = Arc::new(args.store.primary()?);
    let dead_letters = queues.iter().map(|q| q.clone() as Arc<dyn DeadLetterQueue>).collect();
    let commands =
        Arc::new(write_api::StoreCommandLog { primary, backup: args.store.backup()?, dead_letters });
    let retention = Duration::from_secs(args.idempotency_hours * 3600);
    let keys = Arc::new(JetStreamKeys::new(queues, retention));

    let (p, c) = (publisher.clone(), commands.clone());
    let ready: Readiness = Arc::new(move || {
        let (p, c) = (p.clone(), c.clone());
        Box::pin(async move {
            if !p.ready().await {
                return Err("no queue server is connected".into());
            }
            use write_api::CommandLog;
            c.ready().await.map_err(|e| e.to_string())
        })
    });
    let state = write_api::AppState { publisher, commands, keys, verifier };
    let app = args.trace.layer(write_api::app(state, ready), "socialnet-write-api");
    crate::serve::serve(args.listen, app, "write API").await?;
    Ok(ExitCode::SUCCESS)
}
