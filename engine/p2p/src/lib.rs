//! Peer-to-peer sync: two devices of one workspace sync directly over iroh (QUIC), with no
//! server at all. Depends on `engine` and `model`; the engine does not depend on it and it
//! knows no UI.
//!
//! - Each device's Ed25519 identity (its [`DeviceId`](adiuva_model::DeviceId)) is its iroh
//!   endpoint key, so the TLS handshake proves the same identity its changes are signed by.
//! - The protocol is [`ALPN`], versioned. A listener checks the dialer's key against the
//!   workspace's device list (present, not removed) before it reads a byte; a dialer dials only
//!   a device of its own list. Anyone else is refused (close code [`session::CLOSE_REFUSED`])
//!   and the refusal is logged with the peer's id.
//! - A session runs the Automerge sync protocol per document (see [`session`]); every change
//!   received goes through the engine's import checks
//!   ([`Workspace::receive_peer_message`](adiuva_engine::Workspace::receive_peer_message)).
//! - A live connection stays open after its first session and runs another whenever either
//!   side gained changes ([`live`]).
//! - A device joins over P2P with an invitation ([`join`]): `device invite --p2p` listens with
//!   it open on a protocol of its own, and the joiner syncs the rest as a device afterwards.
//! - Frames are length-prefixed and bounded ([`frame`]); a peer that sends garbage, too much,
//!   or nothing for [`PeerOptions::stall`] gets a typed error and a closed connection.

use std::sync::{Mutex, MutexGuard, PoisonError};

use adiuva_engine::Workspace;

pub mod error;
pub mod frame;
pub mod join;
pub mod live;
mod peer;
mod push;
pub mod session;
pub mod ticket;

pub use error::{PeerError, Result};
pub use join::JoinTicket;
pub use live::Peers;
pub use peer::{PeerOptions, PeerServer, dial, sync_live, sync_once};
pub use session::SessionReport;
pub use ticket::PeerTicket;

/// The peer sync protocol's ALPN; a new incompatible protocol gets a new number.
pub const ALPN: &[u8] = b"adiuva/sync/1";

/// The workspace a peer syncs, shared with whoever else uses it (the command line's own, or
/// the daemon's).
pub trait SharedWorkspace: Send + Sync + 'static {
    fn workspace(&self) -> MutexGuard<'_, Workspace>;
}

impl SharedWorkspace for Mutex<Workspace> {
    fn workspace(&self) -> MutexGuard<'_, Workspace> {
        // A panic while holding the workspace drops what it held in memory; the store is the truth.
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
