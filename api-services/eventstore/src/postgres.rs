//! The PostgreSQL event store. Appends are one transaction of two set-based statements per batch (UNNEST),
//! so a batch of hundreds of commands costs a few round trips. Global reads are gap-safe: every row
//! records its inserting transaction id, and a reader only returns rows whose transaction is older than
//! the oldest one still running (`pg_snapshot_xmin`), in `(tx_id, position)` order.

use crate::model::{AppendStatus, CommandCommit, CommandOutcome, GlobalCursor, RecordedEvent, decode_event};
use crate::{EventStore, StoreError};
use async_trait::async_trait;
use domain::{CommandId, EVENT_SCHEMA_VERSION, StreamId};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// The channel `append` notifies after committing events.
pub const NOTIFY_CHANNEL: &str = "socialnet_events";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgEventStore {
    pool: PgPool,
}

impl PgEventStore {
    /// Connect lazily (the server may come up later) with short timeouts, so an outage is reported in
    /// seconds instead of stalling the ingester.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad database url: {e}")))?
            // Plan every statement for its actual arguments. A generic plan cached while the tables were
            // small scans them sequentially forever after (measured: "which of these 1 000 commands are
            // recorded?" took 1.5 s instead of 4 ms once `commands` held a million rows).
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Connect and run the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url)?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from(inner),
            other => StoreError::Refused(other.to_string()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Bump `signal` whenever events are committed (LISTEN on [`NOTIFY_CHANNEL`]); reconnects by itself.
    pub fn spawn_commit_listener(
        &self,
        signal: tokio::sync::watch::Sender<u64>,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if listener.listen(NOTIFY_CHANNEL).await.is_ok() {
                            signal.send_modify(|v| *v = v.wrapping_add(1));
                            while listener.recv().await.is_ok() {
                                signal.send_modify(|v| *v = v.wrapping_add(1));
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "commit listener cannot connect; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// The event columns, as a literal so queries stay static strings.
macro_rules! event_columns {
    () => {
        "position, tx_id, event_id, command_id, stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at"
    };
}

fn event_from_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let event_type: String = row.try_get("event_type")?;
    let schema_version: i16 = row.try_get("schema_version")?;
    let payload: serde_json::Value = row.try_get("payload")?;
    let stream: String = row.try_get("stream_id")?;
    let version: i64 = row.try_get("stream_version")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        tx_id: row.try_get("tx_id")?,
        event_id: row.try_get("event_id")?,
        command_id: CommandId(row.try_get("command_id")?),
        stream_id: StreamId::parse(&stream).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        stream_version: u64::try_from(version).map_err(|_| StoreError::Corrupt("stream_version".into()))?,
        schema_version: u16::try_from(schema_version).unwrap_or(0),
        event: decode_event(&event_type, i64::from(schema_version), &payload)?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// One statement, so one round trip and one implicit transaction: record the commands, append the events
/// of the newly recorded ones, and notify projectors (delivered at commit) when any event was appended.
/// `$on_conflict` and `$only_new` make the checked form skip commands recorded before; `$result` is what
/// the statement returns.
macro_rules! append_sql {
    ($on_conflict:literal, $only_new:literal, $result:literal) => {
        concat!(
            "WITH cmd AS ( \
                 INSERT INTO commands (command_id, actor, command_type, status, rejection_code, reason) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) ",
            $on_conflict,
            " RETURNING command_id \
             ), ev AS ( \
                 INSERT INTO events (event_id, command_id, stream_id, stream_version, event_type, schema_version, \
                                     payload, metadata) \
                 SELECT e.event_id, e.command_id, e.stream_id, e.stream_version, e.event_type, e.schema_version, \
                        e.payload::json, e.metadata::json \
                 FROM UNNEST($7::uuid[], $8::uuid[], $9::text[], $10::bigint[], $11::text[], $12::int2[], \
                             $13::text[], $14::text[]) WITH ORDINALITY \
                      AS e(event_id, command_id, stream_id, stream_version, event_type, schema_version, payload, \
                           metadata, ord) ",
            $only_new,
            " ORDER BY e.ord \
                 RETURNING 1 \
             ), woke AS ( \
                 SELECT pg_notify('socialnet_events', '') WHERE EXISTS (SELECT 1 FROM ev) \
             ) \
             SELECT ",
            $result,
            " FROM (SELECT count(*) FROM woke) AS w"
        )
    };
}
/// Skips commands recorded before, and their events; returns the ids of the commands it recorded.
const APPEND: &str = append_sql!(
    "ON CONFLICT (command_id) DO NOTHING",
    "WHERE e.command_id IN (SELECT command_id FROM cmd)",
    "(SELECT array_agg(command_id) FROM cmd)"
);
/// For a batch whose commands must all be new: plain inserts, so a recorded command fails the statement
/// with a unique violation (reported as a conflict) and nothing lands. Neither speculative insertion nor
/// filtering the events: both cost time on every command (measured: 13 % of PostgreSQL's CPU per command).
/// Returns nothing to tell apart: every command was recorded.
const APPEND_ALL_NEW: &str = append_sql!("", "", "NULL::uuid[]");

impl PgEventStore {
    /// Both appends: one statement. With `all_new`, the statement fails (a conflict) unless every command
    /// of the batch is new.
    async fn append_batch(
        &self,
        commits: &[CommandCommit],
        all_new: bool,
    ) -> Result<Vec<AppendStatus>, StoreError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(commits.len());
        let (mut actors, mut types, mut statuses, mut codes, mut reasons) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in commits {
            let (status, code, reason) = c.status();
            ids.push(c.envelope.command_id.0);
            actors.push(c.envelope.actor.as_str().to_owned());
            types.push(c.envelope.command.name().to_owned());
            statuses.push(status.to_owned());
            codes.push(code);
            reasons.push(reason);
        }

        let (
            mut e_ids,
            mut e_cmds,
            mut e_streams,
            mut e_versions,
            mut e_types,
            mut e_schema,
            mut e_payloads,
            mut e_meta,
        ) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in commits {
            let metadata = c.metadata_json();
            for (stream, version, event, event_id) in c.rows() {
                e_ids.push(event_id);
                e_cmds.push(c.envelope.command_id.0);
                e_streams.push(String::from(stream.as_str()));
                e_versions.push(
                    i64::try_from(version).map_err(|_| StoreError::Refused("version overflow".into()))?,
                );
                e_types.push(event.event_type().to_owned());
                e_schema.push(EVENT_SCHEMA_VERSION as i16);
                e_payloads.push(event.payload_json());
                e_meta.push(metadata.clone());
            }
        }

        let sql = if all_new { APPEND_ALL_NEW } else { APPEND };
        let query = sqlx::query_scalar(sql)
            .bind(&ids)
            .bind(&actors)
            .bind(&types)
            .bind(&statuses)
            .bind(&codes)
            .bind(&reasons)
            .bind(&e_ids)
            .bind(&e_cmds)
            .bind(&e_streams)
            .bind(&e_versions)
            .bind(&e_types)
            .bind(&e_schema)
            .bind(&e_payloads)
            .bind(&e_meta);
        let inserted: Option<Vec<Uuid>> = match query.fetch_one(&self.pool).await {
            Ok(ids) => ids,
            Err(sqlx::Error::Database(db)) if all_new && recorded_before(db.as_ref()) => {
                return Err(StoreError::Conflict(format!(
                    "a command of this batch was recorded before: {}",
                    db.message()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if all_new {
            // The statement succeeded, so every command was new.
            return Ok(vec![AppendStatus::Appended; commits.len()]);
        }
        let fresh: HashSet<Uuid> = inserted.unwrap_or_default().into_iter().collect();
        Ok(commits
            .iter()
            .map(|c| {
                if fresh.contains(&c.envelope.command_id.0) {
                    AppendStatus::Appended
                } else {
                    AppendStatus::Duplicate
                }
            })
            .collect())
    }
}

/// A unique violation on the command id (either table), as opposed to a stream-version one.
fn recorded_before(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.is_unique_violation()
        && db.constraint().is_some_and(|c| c == "commands_pkey" || c == "events_command_event_unique")
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, commits: &[CommandCommit]) -> Result<Vec<AppendStatus>, StoreError> {
        self.append_batch(commits, false).await
    }

    /// Refused inside the append statement itself: no separate "already recorded?" query per batch.
    async fn append_new(&self, commits: &[CommandCommit]) -> Result<Vec<AppendStatus>, StoreError> {
        self.append_batch(commits, true).await
    }

    async fn recorded(&self, ids: &[CommandId]) -> Result<Vec<CommandId>, StoreError> {
        let raw: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
        let found: Vec<Uuid> =
            sqlx::query_scalar("SELECT command_id FROM commands WHERE command_id = ANY($1)")
                .bind(&raw)
                .fetch_all(&self.pool)
                .await?;
        Ok(found.into_iter().map(CommandId).collect())
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<HashMap<StreamId, Vec<RecordedEvent>>, StoreError> {
        let names: Vec<String> = streams.iter().map(ToString::to_string).collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version"
        ))
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<StreamId, Vec<RecordedEvent>> = HashMap::new();
        for row in &rows {
            let e = event_from_row(row)?;
            out.entry(e.stream_id.clone()).or_default().push(e);
        }
        Ok(out)
    }

    async fn read_all(&self, after: GlobalCursor, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events \
             WHERE (tx_id, position) > ($1, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
             ORDER BY tx_id, position LIMIT $3"
        ))
        .bind(after.tx_id)
        .bind(after.position)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn count_after(&self, after: GlobalCursor) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE (tx_id, position) > ($1, $2)")
            .bind(after.tx_id)
            .bind(after.position)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn command_outcome(&self, id: CommandId) -> Result<Option<CommandOutcome>, StoreError> {
        let row =
            sqlx::query("SELECT actor, status, rejection_code, reason FROM commands WHERE command_id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let positions: Vec<i64> =
            sqlx::query_scalar("SELECT position FROM events WHERE command_id = $1 ORDER BY position")
                .bind(id.0)
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
