//! Looking up what became of a command: the primary store's record, else the backup's parking lot, else
//! "queued" for an id that could still be in the queue.

use async_trait::async_trait;
use domain::CommandId;
use eventstore::{BackupStore, CommandOutcome, CommandStatus, EventStore, StoreError};
use std::sync::Arc;

/// Command ids we mint are UUIDv7; one older than this that no store knows was never accepted.
const QUEUE_HORIZON_MS: u64 = 15 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(CommandOutcome),
    Parked,
    Queued,
    Unknown,
}

#[async_trait]
pub trait CommandLog: Send + Sync {
    async fn lookup(&self, id: CommandId) -> Result<Lookup, StoreError>;
    async fn ready(&self) -> Result<(), StoreError>;
}

pub struct StoreCommandLog {
    pub primary: Arc<dyn EventStore>,
    pub backup: Option<BackupStore>,
}

#[async_trait]
impl CommandLog for StoreCommandLog {
    async fn lookup(&self, id: CommandId) -> Result<Lookup, StoreError> {
        let primary = self.primary.command_outcome(id).await;
        match primary {
            Ok(Some(outcome)) => return Ok(Lookup::Known(outcome)),
            Ok(None) => {}
            Err(e) if self.backup.is_none() => return Err(e),
            Err(_) => {}
        }
        if let Some(backup) = &self.backup {
            match backup.is_parked(id).await {
                Ok(true) => return Ok(Lookup::Parked),
                Ok(false) => {}
                // Both stores down: we cannot say anything true.
                Err(e) if primary.is_err() => return Err(e),
                Err(_) => {}
            }
        }
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        Ok(match id.minted_at_millis() {
            Some(minted) if now_ms.saturating_sub(minted) > QUEUE_HORIZON_MS => Lookup::Unknown,
            _ => Lookup::Queued,
        })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.primary.ping().await
    }
}

impl Lookup {
    pub fn status(&self) -> CommandStatus {
        match self {
            Lookup::Known(o) => o.status,
            _ => CommandStatus::Queued,
        }
    }
}
