//! The operator's errors, one variant per way a reconcile can fail.

use crate::children::ChildKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object changed between our read and our write (the write carried the read's resourceVersion).
    #[error("socialcluster {0} changed since it was read; reconciling again")]
    Conflict(String),
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: ChildKind, name: String, source: kube::Error },
}

impl Error {
    /// A 409 from the API server: someone wrote first. Retried at once, never logged as a failure.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Conflict(_) => true,
            Error::Kube(kube::Error::Api(e)) | Error::Apply { source: kube::Error::Api(e), .. } => {
                e.code == 409
            }
            _ => false,
        }
    }
}
