use thiserror::Error;

/// Errors of the store layer, classified by what the caller should do about them.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A stream moved since its state was read: reload and decide again.
    #[error("expected-version conflict: {0}")]
    Conflict(String),
    /// The store cannot be reached: retry later or fail over to the backup.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The store refused this data (a constraint, a trigger, a bad value): retrying will not help until
    /// someone fixes the cause.
    #[error("event store refused the write: {0}")]
    Refused(String),
    /// Stored data that this build cannot decode.
    #[error("corrupt or unknown stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => {
                // 23505 unique_violation; 40001/40P01 serialization and deadlock are also "try again".
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                let unique_version = db.message().contains("stream_version")
                    || db.constraint().is_some_and(|c| c.contains("stream_version"));
                let serialization = code == "40001" || code == "40P01";
                if (db.is_unique_violation() && unique_version) || serialization {
                    StoreError::Conflict(db.message().to_owned())
                } else if code.starts_with("57") || code.starts_with("08") || code.starts_with("53") {
                    // admin shutdown, connection exceptions, insufficient resources
                    StoreError::Unavailable(db.message().to_owned())
                } else {
                    StoreError::Refused(db.message().to_owned())
                }
            }
            sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::TypeNotFound { .. } => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}
