//! The store's records: what goes in (a decided command) and what comes out (recorded events, outcomes).

use chrono::{DateTime, Utc};
use domain::{CommandEnvelope, CommandId, Decision, Event, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A command together with its decision, ready to append.
#[derive(Debug, Clone)]
pub struct CommandCommit {
    pub envelope: CommandEnvelope,
    pub decision: Decision,
}

impl CommandCommit {
    /// The rows this commit appends: (stream, version, event, event id). Event ids derive from the command
    /// id and the event's index, so the same command always yields the same event ids.
    pub fn rows(&self) -> Vec<(StreamId, u64, &Event, Uuid)> {
        let Decision::Commit(writes) = &self.decision else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        let mut index = 0u32;
        for w in writes {
            for (i, e) in w.events.iter().enumerate() {
                let event_id = Uuid::new_v5(&self.envelope.command_id.0, &index.to_be_bytes());
                rows.push((w.stream.clone(), w.expected_version + i as u64 + 1, e, event_id));
                index += 1;
            }
        }
        rows
    }

    /// The metadata stored with each event of this command, as JSON text (written directly, without a
    /// `serde_json::Value`: once per append).
    pub fn metadata_json(&self) -> String {
        let fields = Metadata {
            actor: &self.envelope.actor,
            command_type: self.envelope.command.name(),
            issued_at: &self.envelope.issued_at,
            trace_id: self.envelope.trace_id.as_deref(),
        };
        // Plain strings and a timestamp cannot fail to serialize; the fallback only keeps the column valid.
        serde_json::to_string(&fields).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn status(&self) -> (&'static str, Option<String>, Option<String>) {
        match &self.decision {
            Decision::Commit(_) => ("committed", None, None),
            Decision::Reject(r) => (
                "rejected",
                Some(
                    serde_json::to_value(r.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                ),
                Some(r.reason.clone()),
            ),
        }
    }
}

/// The metadata stored with each event of a command.
#[derive(Serialize)]
struct Metadata<'a> {
    actor: &'a domain::UserId,
    command_type: &'a str,
    issued_at: &'a DateTime<Utc>,
    trace_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendStatus {
    Appended,
    Duplicate,
}

/// Where a global reader stands: after the event at `(tx_id, position)` in `(tx_id, position)` order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GlobalCursor {
    pub tx_id: i64,
    pub position: i64,
}

impl GlobalCursor {
    pub const START: GlobalCursor = GlobalCursor { tx_id: 0, position: 0 };
}

/// One stored event, decoded (and upcast) to the current schema.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub tx_id: i64,
    pub event_id: Uuid,
    pub command_id: CommandId,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub schema_version: u16,
    pub event: Event,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor { tx_id: self.tx_id, position: self.position }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Queued,
    Committed,
    Rejected,
}

/// What `GET /v1/commands/{id}` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub status: CommandStatus,
    /// Who issued it (the only user, besides the admin role, who may read this outcome).
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_code: Option<String>,
    /// Global position of the command's last event; absent for a no-op commit or a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// Positions of all its events, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub positions: Vec<i64>,
}

impl CommandOutcome {
    /// The outcome of a command the store has recorded, from its stored columns and event positions.
    pub(crate) fn recorded(
        actor: String,
        status: &str,
        rejection_code: Option<String>,
        reason: Option<String>,
        positions: Vec<i64>,
    ) -> Self {
        Self {
            status: if status == "rejected" { CommandStatus::Rejected } else { CommandStatus::Committed },
            actor,
            reason,
            rejection_code,
            position: positions.last().copied(),
            positions,
        }
    }
}

pub(crate) fn decode_event(
    event_type: &str,
    schema_version: i64,
    payload: &serde_json::Value,
) -> Result<Event, crate::StoreError> {
    let version =
        u16::try_from(schema_version).map_err(|_| crate::StoreError::Corrupt("schema_version".into()))?;
    Event::decode(event_type, version, payload).map_err(|e| crate::StoreError::Corrupt(e.to_string()))
}
