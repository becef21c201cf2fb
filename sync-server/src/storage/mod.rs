//! What the relay keeps, behind one narrow trait, [`Storage`], with two backends: [`Embedded`]
//! (sled + segment files under the data directory: one binary, no other service) and, for
//! several stateless instances serving one user, [`Cloud`] (blobs in S3, metadata in
//! PostgreSQL). Both pass one contract suite (`tests/storage_contract.rs`).
//!
//! The trait knows two things and nothing of accounts or tokens:
//! - **small records**: a key-value map of opaque bytes with compare-and-swap and prefix scans,
//!   on which the relay builds accounts, sessions, workspaces, devices, envelopes, invites and
//!   restore points (their stored formats are in [`records`]);
//! - **blob logs**: per workspace, content-addressed blobs, each numbered in the order it was
//!   first stored, charged to an account's usage under a quota.
//!
//! Nothing here ever sees a key that decrypts user data: blobs are ciphertext chosen by clients,
//! and every record is either the relay's own bookkeeping or bytes it passes on unread.

mod cloud;
mod embedded;
pub mod records;
mod segments;

use std::fmt;

use adiuva_model::ErrorCode;
use async_trait::async_trait;
use bytes::Bytes;

pub use cloud::{Cloud, CloudConfig};
pub use embedded::Embedded;

/// A blob's id: the BLAKE3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// The id `bytes` must be stored under.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Parses the lowercase hex form (64 digits).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(Self(id))
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", hex::encode(&self.0[..4]))
    }
}

/// A blob to store. `workspace` and `account` are names the relay validated
/// ([`valid_name`]); `id` was checked against `bytes` by the caller.
#[derive(Clone, Debug)]
pub struct NewBlob {
    pub workspace: String,
    pub account: String,
    pub id: BlobId,
    pub bytes: Bytes,
    /// The account's storage quota in bytes; `None` is unlimited.
    pub quota: Option<u64>,
}

/// Where a stored blob sits in its workspace's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub seq: u64,
    pub size: u64,
    /// False when the blob was already stored (a retried upload): nothing new was charged.
    pub created: bool,
}

/// One entry of a workspace's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub id: BlobId,
    pub size: u64,
}

/// Why storage failed. Quota refusals are outcomes callers branch on; everything else means
/// the backend could not be used, and nothing acknowledged was lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storing {size} bytes would exceed the quota ({used} of {quota} bytes used)")]
    QuotaExceeded { used: u64, size: u64, quota: u64 },
    #[error("storage I/O failed ({what}): {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("the metadata store failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("the metadata database failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the object store failed ({operation}): {message}")]
    ObjectStore { operation: &'static str, message: String },
    #[error("stored data is damaged ({what})")]
    Corrupt { what: String },
    #[error("the blob writer stopped after an earlier failure; restart the server")]
    Stopped,
    #[error("the data directory is in use by another running server")]
    Locked,
}

impl StorageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::QuotaExceeded { .. } => ErrorCode::RelayQuotaExceeded,
            _ => ErrorCode::RelayStorage,
        }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| StorageError::Io { what, source }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The relay's storage. Every method is safe to call concurrently, from any number of relay
/// instances sharing one backend (the cloud backend) or from one process (embedded).
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The small record at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Every small record whose key starts with `prefix`, in byte order of their keys.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Sets `key` to `new` (`None` removes it) only if it now holds exactly `expected`
    /// (`None`: absent). Returns whether it did. A `true` is durable when it returns; of two
    /// racing swaps from the same `expected`, at most one succeeds.
    async fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool>;

    /// Sets `key` to `value` unconditionally, durably.
    async fn put(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Stores a blob in its workspace's log. The first store of an id takes the workspace's
    /// next sequence number and charges its size to the account (refused with
    /// [`StorageError::QuotaExceeded`] if that would pass the quota: nothing is stored then);
    /// storing an id again returns its first number and charges nothing. When this returns
    /// `Ok`, the blob and its number are durable; no number is ever given to two blobs or
    /// skipped by a blob that was acknowledged.
    async fn put_blob(&self, blob: NewBlob) -> Result<StoredBlob>;

    /// A stored blob's bytes.
    async fn get_blob(&self, workspace: &str, id: &BlobId) -> Result<Option<Bytes>>;

    /// A stored blob's place in its sequence, without its bytes.
    async fn blob_seq(&self, workspace: &str, id: &BlobId) -> Result<Option<u64>>;

    /// Up to `limit` entries of a workspace's sequence numbered after `after`, in order.
    async fn changes(&self, workspace: &str, after: u64, limit: usize) -> Result<Vec<Change>>;

    /// The highest sequence number given in a workspace (0 before its first blob).
    async fn head(&self, workspace: &str) -> Result<u64>;

    /// The bytes of blobs charged to an account.
    async fn usage(&self, account: &str) -> Result<u64>;
}

/// Names the relay builds keys from (workspace ids, invite ids, device ids): 1–64 ASCII
/// letters, digits, `-` or `_`, so a name never contains the key separator `/` or a NUL.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
