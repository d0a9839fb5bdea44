//! The operations a planned event applies to a target: a tiny subset of Redis's data model, so the same
//! list runs on Redis (as commands in one MULTI/EXEC) and in memory.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    HSet {
        key: String,
        fields: Vec<(String, String)>,
    },
    HDel {
        key: String,
        fields: Vec<String>,
    },
    HIncr {
        key: String,
        field: String,
        by: i64,
    },
    Del {
        key: String,
    },
    ZAdd {
        key: String,
        score: i64,
        member: String,
    },
    ZRem {
        key: String,
        members: Vec<String>,
    },
    /// Keep only the `keep` highest-scored members.
    ZKeepTop {
        key: String,
        keep: usize,
    },
    SAdd {
        key: String,
        member: String,
    },
}

impl Op {
    /// The (relative) key the operation changes.
    pub fn key(&self) -> &str {
        match self {
            Op::HSet { key, .. }
            | Op::HDel { key, .. }
            | Op::HIncr { key, .. }
            | Op::Del { key }
            | Op::ZAdd { key, .. }
            | Op::ZRem { key, .. }
            | Op::ZKeepTop { key, .. }
            | Op::SAdd { key, .. } => key,
        }
    }
}
