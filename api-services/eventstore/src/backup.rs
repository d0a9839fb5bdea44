//! The backup event store: a second PostgreSQL (same schema) that parks commands while the primary is
//! down. It holds commands rather than decided events because the business rules need the primary's
//! stream state, which is unreachable then; the drain decides them against the primary in arrival order.

use crate::StoreError;
use crate::postgres::PgEventStore;
use domain::{CommandEnvelope, CommandId};
use sqlx::Row;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct BackupStore {
    inner: PgEventStore,
}

impl BackupStore {
    pub fn new(inner: PgEventStore) -> Self {
        Self { inner }
    }

    /// Park commands, keeping their order; a command parked before is left where it is.
    pub async fn park(&self, envelopes: &[CommandEnvelope]) -> Result<(), StoreError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = envelopes.iter().map(|e| e.command_id.0).collect();
        let bodies: Vec<String> =
            envelopes.iter().map(|e| String::from_utf8_lossy(&e.encode()).into_owned()).collect();
        sqlx::query(
            "INSERT INTO parked_commands (command_id, envelope) \
             SELECT c.id, c.body::jsonb FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS c(id, body, ord) \
             ORDER BY c.ord ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&bodies)
        .execute(self.inner.pool())
        .await?;
        Ok(())
    }

    /// The oldest parked commands, in arrival order, with their sequence numbers.
    pub async fn oldest(&self, limit: usize) -> Result<Vec<(i64, CommandEnvelope)>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, envelope::text AS body FROM parked_commands ORDER BY seq LIMIT $1")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(self.inner.pool())
                .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq")?;
                let body: String = r.try_get("body")?;
                let env = CommandEnvelope::decode(body.as_bytes()).map_err(StoreError::Corrupt)?;
                Ok((seq, env))
            })
            .collect()
    }

    /// Forget parked commands once the primary has recorded them.
    pub async fn remove_through(&self, seq: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM parked_commands WHERE seq <= $1")
            .bind(seq)
            .execute(self.inner.pool())
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn count(&self) -> Result<i64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM parked_commands").fetch_one(self.inner.pool()).await?;
        Ok(n)
    }

    pub async fn is_parked(&self, id: CommandId) -> Result<bool, StoreError> {
        let hit: Option<i64> = sqlx::query_scalar("SELECT seq FROM parked_commands WHERE command_id = $1")
            .bind(id.0)
            .fetch_optional(self.inner.pool())
            .await?;
        Ok(hit.is_some())
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(self.inner.pool()).await.map(|_| ())
    }
}
