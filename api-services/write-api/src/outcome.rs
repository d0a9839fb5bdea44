//! Looking up what became of a command: the primary store's record, else a dead letter, else the backup's
//! parking lot, else "queued" (it is still in a queue). Only its issuer (or the admin role) may see it.

use async_trait::async_trait;
use contract::api::{CommandState, CommandStatus, StoredIn};
use domain::{CommandId, UserId};
use eventstore::{BackupStore, CommandOutcome, EventStore, StoreError};
use queue::{DeadLetter, DeadLetterQueue};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(CommandOutcome),
    Failed(DeadLetter),
    Parked,
    Queued,
}

#[async_trait]
pub trait CommandLog: Send + Sync {
    async fn lookup(&self, id: CommandId) -> Result<Lookup, StoreError>;
    async fn ready(&self) -> Result<(), StoreError>;
}

pub struct StoreCommandLog {
    pub primary: Arc<dyn EventStore>,
    pub backup: Option<BackupStore>,
    /// Where dead letters are kept (each queue server's).
    pub dead_letters: Vec<Arc<dyn DeadLetterQueue>>,
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
        let key = id.to_string();
        for dlq in &self.dead_letters {
            match dlq.find(&key).await {
                Ok(Some(letter)) => return Ok(Lookup::Failed(letter)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "dead-letter lookup failed"),
            }
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
        Ok(Lookup::Queued)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.primary.ping().await
    }
}

impl Lookup {
    /// Whether `user` issued command `id`: the stores record the issuer; a command still in a queue
    /// carries its issuer's tag in its id.
    pub fn issued_by(&self, id: &CommandId, user: &UserId) -> bool {
        match self {
            Lookup::Known(o) => o.actor == user.as_str(),
            Lookup::Failed(letter) => letter.actor().as_ref() == Some(user) || id.issued_by(user),
            Lookup::Parked | Lookup::Queued => id.issued_by(user),
        }
    }

    pub fn into_status(self, id: CommandId) -> CommandStatus {
        let mut status = CommandStatus {
            command_id: id.to_string(),
            status: CommandState::Queued,
            code: None,
            reason: None,
            position: None,
            positions: vec![],
            stored_in: None,
            deliveries: None,
        };
        match self {
            Lookup::Known(o) => {
                status.status = match o.status {
                    eventstore::CommandStatus::Rejected => CommandState::Rejected,
                    eventstore::CommandStatus::Committed => CommandState::Committed,
                    eventstore::CommandStatus::Queued => CommandState::Queued,
                };
                (status.code, status.reason, status.position) = (o.rejection_code, o.reason, o.position);
                status.positions = o.positions;
            }
            Lookup::Failed(letter) => {
                status.status = CommandState::Failed;
                (status.reason, status.deliveries) = (Some(letter.reason), Some(letter.deliveries));
            }
            Lookup::Parked => status.stored_in = Some(StoredIn::Backup),
            Lookup::Queued => {}
        }
        status
    }
}
