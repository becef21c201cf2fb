//! The replay library's errors, each with a stable code (`model/src/error.rs`).

use std::path::PathBuf;

use adiuva_model::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Engine(#[from] adiuva_engine::Error),
    /// Reading a relay backup failed (the relay's refusal, a wrong phrase, a unit that fails a
    /// check, a page replayed or cut short).
    #[error(transparent)]
    Relay(#[from] adiuva_sync::SyncError),
    #[error("could not make the private copy of the relay backup: {source}")]
    Copy {
        #[source]
        source: std::io::Error,
    },
    #[error("no change {hash} in this workspace")]
    ChangeNotFound { hash: String },
    #[error("{matches} changes start with {prefix}; give more of the hash")]
    ChangeAmbiguous { prefix: String, matches: usize },
    #[error("no event of this workspace is about a record {id}")]
    RecordNotFound { id: String },
    #[error("{matches} records match {prefix:?}; give more of the id")]
    RecordAmbiguous { prefix: String, matches: usize },
    #[error(
        "{text:?} is neither a change hash (8 or more hex digits) nor a time (RFC 3339, e.g. 2026-12-02T10:00:00Z)"
    )]
    PointInvalid { text: String },
    #[error("{path} is inside the audited workspace: rebuilt data goes elsewhere")]
    OutputInsideWorkspace { path: PathBuf },
    #[error("could not write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReplayError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReplayError::Engine(error) => error.code(),
            ReplayError::Relay(error) => error.code(),
            ReplayError::Copy { .. } => ErrorCode::ReplayCopyFailed,
            ReplayError::ChangeNotFound { .. } => ErrorCode::ReplayChangeNotFound,
            ReplayError::ChangeAmbiguous { .. } => ErrorCode::ReplayChangeAmbiguous,
            ReplayError::RecordNotFound { .. } => ErrorCode::RecordNotFound,
            ReplayError::RecordAmbiguous { .. } => ErrorCode::RecordAmbiguous,
            ReplayError::PointInvalid { .. } => ErrorCode::InputInvalid,
            ReplayError::OutputInsideWorkspace { .. } => ErrorCode::ReplayOutputInsideWorkspace,
            ReplayError::Output { .. } => ErrorCode::ReplayOutputFailed,
        }
    }
}
