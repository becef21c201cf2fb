//! The engine's error type. Every variant names what is wrong and where (path, document, chunk,
//! record), and maps to one stable [`ErrorCode`].

use std::path::PathBuf;

use adiuva_model::envelope::EnvelopeError;
use adiuva_model::{Collection, ErrorCode};

use crate::chunk::ChunkError;
use crate::crypto::{RandomUnavailable, SealError};
use crate::store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no workspace at {path}; create one with `adiuva init`")]
    WorkspaceNotFound { path: PathBuf },
    #[error("a workspace already exists at {path}")]
    WorkspaceExists { path: PathBuf },
    #[error("the restore into {path} did not finish; run `adiuva restore` into it again")]
    RestoreUnfinished { path: PathBuf },
    #[error("the workspace at {path} is open in another process")]
    WorkspaceLocked { path: PathBuf },
    #[error("workspace header is unreadable: {detail}")]
    WorkspaceFormat { detail: String },
    #[error("the passphrase does not unlock this workspace")]
    WrongPassphrase,
    #[error("this workspace is protected by a passphrase; set ADIUVA_PASSPHRASE or enter it")]
    PassphraseRequired,
    #[error("use a passphrase of at least {min} characters")]
    PassphraseTooShort { min: usize },
    #[error("the workspace header asks for key derivation parameters outside the accepted range ({detail})")]
    KeyDerivationCost { detail: String },
    #[error("no OS keyring is available: {detail}")]
    KeyringUnavailable { detail: String },
    #[error("the OS keyring has no key for this workspace: {detail}")]
    KeyringEntryMissing { detail: String },
    #[error("chunk {blob} of document {document}: {source}")]
    Chunk {
        document: String,
        blob: String,
        #[source]
        source: ChunkError,
    },
    #[error("document {document} is missing chunk {seq} (its manifest lists chunks up to {expected_end})")]
    ChunkMissing { document: String, seq: u64, expected_end: u64 },
    #[error("document {document} is missing its snapshot (generation {generation})")]
    SnapshotMissing { document: String, generation: u64 },
    #[error("document {document} has a chunk its manifest does not account for: {blob}")]
    ChunkUnexpected { document: String, blob: String },
    #[error(
        "document {document} has {found} chunks but had {expected} when the workspace was last closed: a store file was truncated or replaced by an older copy"
    )]
    StoreRolledBack { document: String, found: u64, expected: u64 },
    #[error(
        "the witness file {path} is missing, so this workspace cannot be checked for a rolled-back store; put it back from a backup, or run `adiuva reset-witness` to trust the store as it is"
    )]
    WitnessMissing { path: PathBuf },
    #[error("{name:?} is not a valid document name")]
    DocumentNameInvalid { name: String },
    #[error("document {document} does not load: {detail}")]
    DocumentCorrupt { document: String, detail: String },
    #[error("event {change} in document {document}: {source}")]
    Envelope {
        document: String,
        change: String,
        #[source]
        source: EnvelopeError,
    },
    #[error("no {collection} record {id}")]
    RecordNotFound { collection: Collection, id: String },
    #[error("{matches} {collection} records match {prefix:?}; give more of the id")]
    RecordAmbiguous { collection: Collection, prefix: String, matches: usize },
    #[error("invalid {collection} record: {detail}")]
    RecordInvalid { collection: Collection, detail: String },
    #[error("invalid input: {detail}")]
    InvalidInput { detail: String },
    #[error("document {document}: {source}")]
    DocumentStore {
        document: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("document {document}: the peer's sync message is not valid: {detail}")]
    PeerMessageMalformed { document: String, detail: String },
    #[error("document {document}: the changes received are not a valid signed unit: {detail}")]
    BundleMalformed { document: String, detail: String },
    #[error("change {change} of document {document} carries no attestation by its author")]
    ChangeUnsigned { document: String, change: String },
    #[error("change {change} of document {document}: the attestation of device {signer} does not verify")]
    ChangeBadSignature { document: String, change: String, signer: String },
    #[error("change {change} of document {document}: {detail}")]
    ChangeSignerMismatch { document: String, change: String, detail: String },
    #[error("change {change} of document {document} depends on change {dependency}, which is not stored")]
    ChangeDependencyMissing { document: String, change: String, dependency: String },
    #[error(
        "change {change} of document {document} was written by device {device} under key epoch {epoch} after it had written under epoch {newer}: replayed from an older epoch"
    )]
    ChangeEpochReplayed { document: String, change: String, device: String, epoch: u32, newer: u32 },
    #[error("device {device} is not a device of this workspace{}", at(document, change))]
    DeviceUnknown { device: String, document: Option<String>, change: Option<String> },
    #[error("device {device} was removed from this workspace{}", at(document, change))]
    DeviceRemoved { device: String, document: Option<String>, change: Option<String> },
    #[error("device {device} wrote under key epoch {epoch}, which was never given to it{}", at(document, change))]
    EpochNotMember { device: String, epoch: u32, document: Option<String>, change: Option<String> },
    #[error("no device {id} in this workspace")]
    DeviceNotFound { id: String },
    #[error("this is not a valid invitation ticket: {detail}")]
    TicketInvalid { detail: String },
    #[error("the invitation expired at {expired_at}")]
    InviteExpired { expired_at: String },
    #[error("no open invitation {invite}: it was used already, withdrawn, or made for another workspace")]
    InviteUnknown { invite: String },
    #[error("the {what} does not match the invitation's secret: it was altered or made for another invitation")]
    InviteUnauthentic { what: &'static str },
    #[error("the recovery phrase is not valid: {detail}")]
    RecoveryPhraseInvalid { detail: String },
    #[error("the recovery phrase does not open this recovery key")]
    RecoveryWrongPhrase,
    #[error("the stored recovery key is not valid: {detail}")]
    RecoveryBlobMalformed { detail: String },
    #[error("relay unit {unit} belongs to workspace {found}, not this one ({expected})")]
    UnitForeign { unit: String, expected: String, found: String },
    #[error("relay unit {unit} failed authentication: it was altered, or sealed without the workspace key")]
    UnitCorrupt { unit: String },
    #[error("relay unit {unit} is not a valid unit: {detail}")]
    UnitMalformed { unit: String, detail: String },
    #[error("relay unit {unit} is sealed under key epoch {epoch}, which this device does not hold")]
    UnitEpochUnknown { unit: String, epoch: u32 },
    #[error("a change of document {document} is {bytes} bytes, more than a relay unit holds")]
    UnitTooLarge { document: String, bytes: usize },
    /// Serializing something to store failed; nothing was written in its place.
    #[error("could not encode the {what}")]
    Encode { what: &'static str },
}

/// Where a refused change was, for messages: ` (change H of document D)`.
fn at(document: &Option<String>, change: &Option<String>) -> String {
    match (document, change) {
        (Some(document), Some(change)) => format!(" (change {change} of document {document})"),
        (Some(document), None) => format!(" (document {document})"),
        _ => String::new(),
    }
}

/// What a JSON error says, without the value it may quote: serde's messages include the
/// offending value (`invalid type: string "…"`), which may be a record's text, and error
/// messages and logs never carry record values.
pub fn json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "has a field of the wrong type or value",
        Category::Eof => "is cut short",
    };
    match error.line() {
        0 => what.to_owned(),
        line => format!("{what} (line {line}, column {})", error.column()),
    }
}

impl Error {
    /// Whether this refuses what a device sent (its changes do not decode, verify, or come from
    /// an authorized device) rather than reporting a fault of this device: the same bytes get
    /// the same answer until the device list changes, so retrying them now is pointless.
    pub fn refuses_sent(&self) -> bool {
        matches!(
            self,
            Error::BundleMalformed { .. }
                | Error::UnitMalformed { .. }
                | Error::DocumentNameInvalid { .. }
                | Error::Envelope { .. }
                | Error::ChangeUnsigned { .. }
                | Error::ChangeBadSignature { .. }
                | Error::ChangeSignerMismatch { .. }
                | Error::ChangeEpochReplayed { .. }
                | Error::DeviceUnknown { .. }
                | Error::DeviceRemoved { .. }
                | Error::EpochNotMember { .. }
        )
    }

    /// Whether this says a unit of the relay's sequence did not open here (altered, of
    /// another workspace, malformed, or sealed under an epoch this device lacks): a fault of the
    /// relay, or of a device that uploaded something no device can open, which cannot be told
    /// apart. The sync holds such a unit back and goes on (see `Workspace::hold_unit`).
    pub fn leaves_unit_unopened(&self) -> bool {
        matches!(
            self,
            Error::UnitCorrupt { .. }
                | Error::UnitMalformed { .. }
                | Error::UnitForeign { .. }
                | Error::UnitEpochUnknown { .. }
        )
    }

    /// The number of the relay unit this error says does not open, if it names one
    /// ([`Self::leaves_unit_unopened`] of a unit of the sequence, named `#N`).
    pub fn unopened_relay_unit(&self) -> Option<u64> {
        match self {
            Error::UnitCorrupt { unit }
            | Error::UnitMalformed { unit, .. }
            | Error::UnitForeign { unit, .. }
            | Error::UnitEpochUnknown { unit, .. } => unit.strip_prefix('#')?.parse().ok(),
            _ => None,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::WorkspaceNotFound { .. } => ErrorCode::WorkspaceNotFound,
            Error::WorkspaceExists { .. } => ErrorCode::WorkspaceExists,
            Error::RestoreUnfinished { .. } => ErrorCode::RestoreUnfinished,
            Error::WorkspaceLocked { .. } => ErrorCode::WorkspaceLocked,
            Error::WorkspaceFormat { .. } => ErrorCode::WorkspaceFormat,
            Error::WrongPassphrase => ErrorCode::WrongPassphrase,
            Error::PassphraseRequired => ErrorCode::PassphraseRequired,
            Error::PassphraseTooShort { .. } => ErrorCode::PassphraseTooShort,
            Error::KeyDerivationCost { .. } => ErrorCode::KeyDerivationCost,
            Error::KeyringUnavailable { .. } => ErrorCode::KeyringUnavailable,
            Error::KeyringEntryMissing { .. } => ErrorCode::KeyringEntryMissing,
            Error::Chunk { source, .. } => match source {
                ChunkError::Malformed(_)
                | ChunkError::UnsupportedFormat(_)
                | ChunkError::UnknownKind(_)
                | ChunkError::WrongKind { .. } => ErrorCode::ChunkMalformed,
                ChunkError::UnknownKey(_) => ErrorCode::UnknownEpoch,
                ChunkError::Unauthentic => ErrorCode::ChunkCorrupt,
                ChunkError::BadSignature => ErrorCode::ChunkBadSignature,
            },
            Error::ChunkMissing { .. } | Error::SnapshotMissing { .. } => ErrorCode::ChunkMissing,
            Error::ChunkUnexpected { .. } => ErrorCode::ChunkUnexpected,
            Error::StoreRolledBack { .. } => ErrorCode::StoreRolledBack,
            Error::WitnessMissing { .. } => ErrorCode::WitnessMissing,
            Error::DocumentCorrupt { .. } => ErrorCode::DocumentCorrupt,
            Error::DocumentNameInvalid { .. } => ErrorCode::DocumentNameInvalid,
            Error::Envelope { source, .. } => match source {
                EnvelopeError::UnsupportedVersion { .. } => ErrorCode::EnvelopeVersion,
                _ => ErrorCode::EnvelopeMalformed,
            },
            Error::RecordNotFound { .. } => ErrorCode::RecordNotFound,
            Error::RecordAmbiguous { .. } => ErrorCode::RecordAmbiguous,
            Error::RecordInvalid { .. } => ErrorCode::RecordInvalid,
            Error::InvalidInput { .. } => ErrorCode::InputInvalid,
            Error::Store(source) | Error::DocumentStore { source, .. } => match source {
                StoreError::Locked { .. } => ErrorCode::WorkspaceLocked,
                StoreError::Corrupt { .. } => ErrorCode::StoreCorrupt,
                StoreError::Io { .. } => ErrorCode::StoreIo,
                StoreError::DiskFull { .. } => ErrorCode::StoreDiskFull,
                StoreError::Stopped { .. } => ErrorCode::StoreFailed,
                StoreError::ReadOnly { .. } => ErrorCode::StoreReadOnly,
            },
            Error::Random(_) | Error::Seal(SealError::Random(_)) => ErrorCode::StoreIo,
            Error::Seal(SealError::TooLong) | Error::Encode { .. } => ErrorCode::EncodeFailed,
            Error::BundleMalformed { .. } => ErrorCode::BundleMalformed,
            Error::PeerMessageMalformed { .. } => ErrorCode::PeerMessageMalformed,
            Error::ChangeUnsigned { .. } => ErrorCode::ChangeUnsigned,
            Error::ChangeBadSignature { .. } => ErrorCode::ChangeBadSignature,
            Error::ChangeSignerMismatch { .. } => ErrorCode::ChangeSignerMismatch,
            Error::ChangeDependencyMissing { .. } => ErrorCode::ChangeDependencyMissing,
            Error::ChangeEpochReplayed { .. } => ErrorCode::ChangeEpochReplayed,
            Error::DeviceUnknown { .. } => ErrorCode::DeviceUnknown,
            Error::DeviceRemoved { .. } => ErrorCode::DeviceRemoved,
            Error::EpochNotMember { .. } => ErrorCode::EpochNotMember,
            Error::DeviceNotFound { .. } => ErrorCode::DeviceNotFound,
            Error::TicketInvalid { .. } => ErrorCode::TicketInvalid,
            Error::InviteExpired { .. } => ErrorCode::InviteExpired,
            Error::InviteUnknown { .. } => ErrorCode::InviteUnknown,
            Error::InviteUnauthentic { .. } => ErrorCode::InviteUnauthentic,
            Error::UnitForeign { .. } => ErrorCode::SyncUnitForeign,
            Error::UnitCorrupt { .. } => ErrorCode::SyncUnitCorrupt,
            Error::UnitMalformed { .. } => ErrorCode::SyncUnitMalformed,
            Error::UnitEpochUnknown { .. } => ErrorCode::UnknownEpoch,
            Error::UnitTooLarge { .. } => ErrorCode::SyncUnitTooLarge,
            Error::RecoveryPhraseInvalid { .. } => ErrorCode::RecoveryPhraseInvalid,
            Error::RecoveryWrongPhrase => ErrorCode::RecoveryWrongPhrase,
            Error::RecoveryBlobMalformed { .. } => ErrorCode::RecoveryBlobMalformed,
        }
    }
}
