//! Relay sync, the client side: a device's account on an `adiuva-server` relay, and syncing
//! its workspace through it.
//!
//! - `client`: the relay's routes over blocking HTTP, typed answers and errors;
//! - `account`: the account kept in a device setting (never synced), signing in and out, and
//!   the authorized connection (token refresh, retries with backoff);
//! - `sync`: one sync ([`sync_once`]): devices, key envelopes and recovery key reconciled, the
//!   outbox pushed, everything after the cursor pulled;
//! - `restore`: a workspace brought back on an empty machine from the phrase and a login;
//! - `audit`: a private copy of the relay's log for the audit tool, read through a read grant
//!   (no device authorized, nothing committed);
//! - `invite`: inviting a device and joining through the relay (a [`RelayTicket`]);
//! - `live`: the relay's live socket, which announces new blobs;
//! - `backup`: restore points (compacted snapshots under the snapshot key) kept on the relay.
//!
//! What crosses the wire is sealed units (`adiuva_engine`'s relay module), opaque to the
//! relay; what the relay learns is sizes (padded to buckets), times and numbers. The engine
//! keeps the sync state (cursor, what the relay acknowledged, the outbox), so nothing here
//! holds state between calls.

mod account;
mod audit;
mod backup;
mod client;
mod error;
mod invite;
mod live;
mod restore;
mod sync;

pub use account::{Account, account_view, sign_in, sign_out};
pub use audit::{AuditCopy, copy_for_audit};
pub use backup::{PointRestored, backup_list, backup_now, restore_point};
pub use client::{AccountView, BlobEntry, ChangesPage, JoinView, ReadGrant, RelayClient, Session};
pub use error::{Result, SyncError};
pub use invite::{RelayTicket, invite, join, wait_for_join};
pub use live::{LiveEndpoint, LiveSocket};
pub use restore::{RestoreFrom, restore};
pub use sync::{Progress, SyncReport, sync_once};

/// The decoders of what the relay answers, without HTTP, for the fuzz targets (`fuzz/`). Not an
/// API: the client above is the only other caller.
#[doc(hidden)]
pub mod answers {
    pub use crate::client::{Answer, RecoveryView, check_page, expect, json};
    pub use crate::live::decode_head;
}
