//! Peer sync's errors, each with its stable code (`peer.*`, or the engine's when a received
//! change fails its checks).

use adiuva_model::ErrorCode;

pub type Result<T, E = PeerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("peer {peer} refused: {reason}")]
    Refused { peer: String, reason: String },
    #[error("peer {peer} belongs to workspace {theirs}, not this one")]
    ForeignWorkspace { peer: String, theirs: String },
    #[error("peer {peer} sent bytes that are not a peer protocol frame: {detail}")]
    FrameMalformed { peer: String, detail: String },
    #[error("peer {peer} announced a frame of {length} bytes, more than the {limit} allowed")]
    FrameTooLarge { peer: String, length: u64, limit: u64 },
    #[error("peer {peer} broke the protocol: {detail}")]
    Protocol { peer: String, detail: String },
    #[error("peer {peer} cannot be reached or the connection was lost ({detail}); the next sync resumes")]
    Unreachable { peer: String, detail: String },
    #[error("peer {peer} sent nothing for {seconds} s; the next sync resumes")]
    Stalled { peer: String, seconds: u64 },
    #[error("the sync with peer {peer} did not settle within {rounds} rounds (this side's last round: {last_round})")]
    SyncLoop { peer: String, rounds: usize, last_round: String },
    #[error("not a peer ticket: {detail}")]
    TicketInvalid { detail: String },
    #[error("the peer endpoint could not start: {detail}")]
    Endpoint { detail: String },
    #[error("peer {peer}: {source}")]
    Engine {
        peer: String,
        #[source]
        source: adiuva_engine::Error,
    },
}

impl PeerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PeerError::Refused { .. } => ErrorCode::PeerRefused,
            PeerError::ForeignWorkspace { .. } => ErrorCode::PeerForeignWorkspace,
            PeerError::FrameMalformed { .. } => ErrorCode::PeerFrameMalformed,
            PeerError::FrameTooLarge { .. } => ErrorCode::PeerFrameTooLarge,
            PeerError::Protocol { .. } => ErrorCode::PeerProtocol,
            PeerError::Unreachable { .. } => ErrorCode::PeerUnreachable,
            PeerError::Stalled { .. } => ErrorCode::PeerStalled,
            PeerError::SyncLoop { .. } => ErrorCode::PeerSyncLoop,
            PeerError::TicketInvalid { .. } => ErrorCode::PeerTicketInvalid,
            PeerError::Endpoint { .. } => ErrorCode::PeerEndpoint,
            PeerError::Engine { source, .. } => source.code(),
        }
    }
}
