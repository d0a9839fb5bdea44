//! The event store: the write side's source of truth. The ingester appends decided commands here
//! (idempotently, by command id, with expected-version checks per stream); the projector reads all events
//! in a gap-safe global order; the write API reads command outcomes. PostgreSQL in production (plus a
//! backup PostgreSQL that parks commands while the primary is down), SQLite in dev mode; both behind
//! [`EventStore`].

mod backup;
mod error;
mod model;
mod postgres;
mod sqlite;

pub use backup::BackupStore;
pub use error::StoreError;
pub use model::{AppendStatus, CommandCommit, CommandOutcome, CommandStatus, GlobalCursor, RecordedEvent};
pub use postgres::{NOTIFY_CHANNEL, PgEventStore};
pub use sqlite::SqliteEventStore;

use async_trait::async_trait;
use domain::{CommandId, StreamId};
use std::collections::HashMap;

/// What every event store offers. Implementations must make `append` atomic per call and idempotent per
/// command id, and `read_all` must never return an event past one that can still commit below it.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Append a batch of decided commands in one transaction. A command already recorded is skipped
    /// (`Duplicate`); an expected-version mismatch fails the whole batch with [`StoreError::Conflict`].
    async fn append(&self, commits: &[CommandCommit]) -> Result<Vec<AppendStatus>, StoreError>;

    /// [`EventStore::append`] for a batch decided without asking [`EventStore::recorded`] first: if any of
    /// its commands is recorded already, nothing is appended and the batch fails with `Conflict` (its
    /// decisions may rest on that command being new), so the caller decides it again after asking. This
    /// default asks first; a store that can refuse inside the append itself saves the round trip.
    async fn append_new(&self, commits: &[CommandCommit]) -> Result<Vec<AppendStatus>, StoreError> {
        let ids: Vec<CommandId> = commits.iter().map(|c| c.envelope.command_id).collect();
        if !self.recorded(&ids).await?.is_empty() {
            return Err(StoreError::Conflict("a command of this batch was recorded before".into()));
        }
        self.append(commits).await
    }

    /// Which of these commands are already recorded.
    async fn recorded(&self, ids: &[CommandId]) -> Result<Vec<CommandId>, StoreError>;

    /// Every event of these streams, each stream in version order.
    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<HashMap<StreamId, Vec<RecordedEvent>>, StoreError>;

    /// Up to `limit` events after `after`, in the store's global order, never past an event still in flight.
    async fn read_all(&self, after: GlobalCursor, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// How many events lie after `after` in the global order (visible or not yet): the lag of a reader.
    async fn count_after(&self, after: GlobalCursor) -> Result<u64, StoreError>;

    /// The recorded outcome of one command, if it has been decided.
    async fn command_outcome(&self, id: CommandId) -> Result<Option<CommandOutcome>, StoreError>;

    /// Cheap liveness check for `/readyz` and failover decisions.
    async fn ping(&self) -> Result<(), StoreError>;
}
