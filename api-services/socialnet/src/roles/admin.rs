//! `socialnet migrate` and `socialnet admin …`: the dead-letter queue and the backup store.

use crate::cli::{AdminArgs, AdminCommand, BackupAction, DlqAction, MigrateArgs};
use anyhow::{Context, bail};
use eventstore::{EventStore, PgEventStore};
use ingester::{Processor, drain_backup};
use queue::{DeadLetterQueue, JetStreamQueue};
use std::process::ExitCode;
use std::sync::Arc;

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    PgEventStore::connect(&args.store.database_url).await.context("migrating the primary store")?;
    println!("primary event store migrated");
    if let Some(url) = &args.store.backup_database_url {
        PgEventStore::connect(url).await.context("migrating the backup store")?;
        println!("backup event store migrated");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AdminCommand::Dlq { queue, secondary, action } => {
            let url = if secondary {
                queue.nats_secondary_url.clone().context("--secondary needs --nats-secondary-url")?
            } else {
                queue.nats_url.clone()
            };
            let label = if secondary { "secondary" } else { "primary" };
            let q = JetStreamQueue::connect(label, &url, queue.names(), queue.timeout()).await?;
            // The client connects in the background; give it a moment before the first request.
            for _ in 0..50 {
                if q.is_connected() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if !q.is_connected() {
                bail!("cannot reach NATS at {url}");
            }
            dlq(q.as_ref(), action).await
        }
        AdminCommand::Backup { store, action } => {
            let backup = store
                .backup()?
                .context("--backup-database-url (SOCIALNET_BACKUP_DATABASE_URL) is required")?;
            match action {
                BackupAction::Status => {
                    println!("{}", serde_json::json!({"parked": backup.count().await?}));
                }
                BackupAction::Drain => {
                    let primary =
                        PgEventStore::connect(&store.database_url).await.context("primary store")?;
                    let processor = Processor::new(Arc::new(primary) as Arc<dyn EventStore>);
                    let moved = drain_backup(&processor, &backup, 256).await?;
                    println!("{}", serde_json::json!({"drained": moved, "parked": backup.count().await?}));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn dlq(q: &dyn DeadLetterQueue, action: DlqAction) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { limit } => {
            for d in q.list(limit).await? {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        DlqAction::Requeue { sequence: Some(seq), .. } => {
            if !q.requeue(seq).await? {
                eprintln!("no dead letter with sequence {seq}");
                return Ok(ExitCode::FAILURE);
            }
            println!("{}", serde_json::json!({"requeued": [seq]}));
        }
        DlqAction::Requeue { sequence: None, all: true } => {
            let mut done = Vec::new();
            loop {
                let batch = q.list(256).await?;
                if batch.is_empty() {
                    break;
                }
                for d in batch {
                    if q.requeue(d.sequence).await? {
                        done.push(d.sequence);
                    }
                }
            }
            println!("{}", serde_json::json!({"requeued": done}));
        }
        DlqAction::Requeue { sequence: None, all: false } => bail!("name a sequence or pass --all"),
        DlqAction::Purge => println!("{}", serde_json::json!({"purged": q.purge().await?})),
    }
    Ok(ExitCode::SUCCESS)
}
