//! The dev-mode event store on SQLite: same contract as PostgreSQL, embedded in one file. SQLite runs one
//! write transaction at a time, so position order is commit order and global reads are trivially gap-safe.

use crate::model::{AppendStatus, CommandCommit, CommandOutcome, GlobalCursor, RecordedEvent, decode_event};
use crate::{EventStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use domain::{CommandId, EVENT_SCHEMA_VERSION, StreamId};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteEventStore {
    pool: SqlitePool,
}

impl SqliteEventStore {
    /// Open (creating if needed) the store file and run its migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        Self::with_options(opts).await
    }

    /// A private in-memory store, for tests.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(StoreError::from)?;
        Self::with_options(opts).await
    }

    async fn with_options(opts: SqliteConnectOptions) -> Result<Self, StoreError> {
        // One connection: SQLite serialises writers anyway, and an in-memory database lives per connection.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Refused(e.to_string()))?;
        Ok(Self { pool })
    }
}

fn event_from_row(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let event_type: String = row.try_get("event_type")?;
    let schema_version: i64 = row.try_get("schema_version")?;
    let payload: String = row.try_get("payload")?;
    let payload: serde_json::Value = serde_json::from_str(&payload).map_err(|_| corrupt("payload"))?;
    let metadata: String = row.try_get("metadata")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    let stream: String = row.try_get("stream_id")?;
    let version: i64 = row.try_get("stream_version")?;
    let event_id: String = row.try_get("event_id")?;
    let command_id: String = row.try_get("command_id")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        tx_id: row.try_get("tx_id")?,
        event_id: Uuid::parse_str(&event_id).map_err(|_| corrupt("event_id"))?,
        command_id: CommandId::parse(&command_id).map_err(|_| corrupt("command_id"))?,
        stream_id: StreamId::parse(&stream).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        stream_version: u64::try_from(version).map_err(|_| corrupt("stream_version"))?,
        schema_version: u16::try_from(schema_version).unwrap_or(0),
        event: decode_event(&event_type, schema_version, &payload)?,
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?,
        recorded_at: recorded_at.parse().map_err(|_| corrupt("recorded_at"))?,
    })
}

/// The event columns, as a literal so queries stay static strings.
macro_rules! event_columns {
    () => {
        "position, tx_id, event_id, command_id, stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at"
    };
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, commits: &[CommandCommit]) -> Result<Vec<AppendStatus>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now().to_rfc3339();
        let mut out = Vec::with_capacity(commits.len());
        for c in commits {
            let (status, code, reason) = c.status();
            let inserted = sqlx::query(
                "INSERT INTO commands (command_id, actor, command_type, status, rejection_code, reason, recorded_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (command_id) DO NOTHING",
            )
            .bind(c.envelope.command_id.to_string())
            .bind(c.envelope.actor.as_str())
            .bind(c.envelope.command.name())
            .bind(status)
            .bind(code)
            .bind(reason)
            .bind(&now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                out.push(AppendStatus::Duplicate);
                continue;
            }
            let metadata = c.metadata_json();
            for (stream, version, event, event_id) in c.rows() {
                sqlx::query(
                    "INSERT INTO events (event_id, command_id, stream_id, stream_version, event_type, \
                     schema_version, payload, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(event_id.to_string())
                .bind(c.envelope.command_id.to_string())
                .bind(stream.as_str())
                .bind(i64::try_from(version).map_err(|_| StoreError::Refused("version overflow".into()))?)
                .bind(event.event_type())
                .bind(i64::from(EVENT_SCHEMA_VERSION))
                .bind(event.payload_json())
                .bind(&metadata)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            }
            out.push(AppendStatus::Appended);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn recorded(&self, ids: &[CommandId]) -> Result<Vec<CommandId>, StoreError> {
        let mut found = Vec::new();
        for id in ids {
            let hit: Option<String> =
                sqlx::query_scalar("SELECT command_id FROM commands WHERE command_id = ?")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
            if hit.is_some() {
                found.push(*id);
            }
        }
        Ok(found)
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<HashMap<StreamId, Vec<RecordedEvent>>, StoreError> {
        let mut out = HashMap::new();
        for s in streams {
            let rows = sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE stream_id = ? ORDER BY stream_version"
            ))
            .bind(s.as_str())
            .fetch_all(&self.pool)
            .await?;
            let events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
            if !events.is_empty() {
                out.insert(s.clone(), events);
            }
        }
        Ok(out)
    }

    async fn read_all(&self, after: GlobalCursor, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(after.position)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn count_after(&self, after: GlobalCursor) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position > ?")
            .bind(after.position)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn command_outcome(&self, id: CommandId) -> Result<Option<CommandOutcome>, StoreError> {
        let row =
            sqlx::query("SELECT actor, status, rejection_code, reason FROM commands WHERE command_id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let positions: Vec<i64> =
            sqlx::query_scalar("SELECT position FROM events WHERE command_id = ? ORDER BY position")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
        Ok(Some(CommandOutcome::recorded(
            row.try_get("actor")?,
            &status,
            row.try_get("rejection_code")?,
            row.try_get("reason")?,
            positions,
        )))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
