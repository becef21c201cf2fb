//! The sync client's errors, each with its stable code (`sync.*`, the relay's own `relay.*`
//! codes passed through, or the engine's).

use adiuva_model::ErrorCode;

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("the relay at {server} cannot be reached ({detail}); what waits goes out at the next sync")]
    Offline { server: String, detail: String },
    #[error("this device has no relay account; run `adiuva account login --server URL --email E` (or `register`)")]
    NotSignedIn,
    #[error("the relay refused ({status}): {message}")]
    Relay { status: u16, code: ErrorCode, message: String, retry_after: Option<u64> },
    #[error("the relay's answer to {what} is not what the relay sends: {detail}")]
    Malformed { what: String, detail: String },
    #[error("blob {id} from the relay is not that blob: its bytes do not hash to its id")]
    BlobCorrupt { id: String },
    #[error("the relay's changes after {cursor} are not valid: {detail}")]
    PageInvalid { cursor: u64, detail: String },
    #[error("the relay's changes stop at {reached}, before the head {head} it announces")]
    PageTruncated { reached: u64, head: u64 },
    #[error(transparent)]
    Engine(#[from] adiuva_engine::Error),
}

impl SyncError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SyncError::Offline { .. } => ErrorCode::SyncOffline,
            SyncError::NotSignedIn => ErrorCode::SyncNotSignedIn,
            SyncError::Relay { code, .. } => *code,
            SyncError::Malformed { .. } => ErrorCode::SyncResponseMalformed,
            SyncError::BlobCorrupt { .. } => ErrorCode::SyncBlobCorrupt,
            SyncError::PageInvalid { .. } => ErrorCode::SyncPageInvalid,
            SyncError::PageTruncated { .. } => ErrorCode::SyncPageTruncated,
            SyncError::Engine(error) => error.code(),
        }
    }

    /// Whether trying again later may succeed: the relay unreachable, overloaded, rate-limiting
    /// or failing on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Offline { .. } => true,
            SyncError::Relay { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
