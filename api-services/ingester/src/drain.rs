//! Moving parked commands from the backup store to the primary: oldest first, in batches, each batch
//! decided against the primary and appended (idempotently by command id) before it leaves the backup.

use crate::processor::Processor;
use eventstore::{BackupStore, StoreError};

/// Which side stopped a drain.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("backup store: {0}")]
    Backup(StoreError),
    #[error("primary store: {0}")]
    Primary(StoreError),
}

/// Drain everything parked; returns how many commands moved. Stops at the first error, leaving the rest
/// parked for the next attempt. Safe to repeat: a command appended but not yet removed from the backup is
/// recognised as a duplicate next time.
pub async fn drain_backup(
    processor: &Processor,
    backup: &BackupStore,
    batch: usize,
) -> Result<u64, DrainError> {
    let mut moved = 0u64;
    loop {
        let parked = backup.oldest(batch).await.map_err(DrainError::Backup)?;
        let Some(&(last_seq, _)) = parked.last() else {
            return Ok(moved);
        };
        let envelopes: Vec<_> = parked.into_iter().map(|(_, e)| e).collect();
        processor.process(&envelopes).await.map_err(DrainError::Primary)?;
        backup.remove_through(last_seq).await.map_err(DrainError::Backup)?;
        moved += envelopes.len() as u64;
        metrics::counter!("socialnet_ingester_drained_total").increment(envelopes.len() as u64);
        tracing::info!(moved, "drained parked commands to the primary store");
    }
}
