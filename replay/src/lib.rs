//! `adiuva-replay`: audit, verify and time-travel an Adiuva workspace, read-only.
//!
//! The log is the source of truth: every event is one Automerge change whose commit message is
//! its envelope (who, on which device, when, why). This crate reads that log and answers an
//! auditor's questions about it — is it intact ([`verify`]), what happened ([`events`]), where
//! did a record come from ([`history`]), what did everything look like at a moment and what
//! changed between two ([`state`]) — and rebuilds derived data into a separate directory
//! ([`rebuild`]).
//!
//! ```no_run
//! # fn main() -> Result<(), adiuva_replay::ReplayError> {
//! let mut workspace = adiuva_replay::open("/home/me/.local/share/adiuva".as_ref())?;
//! let report = adiuva_replay::verify::verify(&mut workspace, &mut |_| {})?;
//! assert!(report.faults.is_empty());
//! # Ok(()) }
//! ```
//!
//! Design decisions, and why:
//! - **Read-only by construction.** Every command works on a workspace opened with
//!   [`Workspace::open_read_only`](adiuva_engine::Workspace::open_read_only): no lock, no
//!   write-ahead-log replay into the store, nothing written back; a write would fail with
//!   `store.read_only`. So an audit never changes what it audits, and runs beside a daemon.
//! - **Events from the event index**, states from the documents: listing events never loads
//!   Automerge, time travel forks each document at the heads of the changes up to the point.
//! - **Faults are data**: `verify` collects every fault with its stable code and keeps going,
//!   so one run reports all that is wrong.

pub mod error;
pub mod events;
pub mod history;
pub mod rebuild;
pub mod state;
pub mod verify;

use std::path::Path;

use adiuva_engine::Workspace;
use zeroize::Zeroizing;

pub use error::ReplayError;

/// Where the passphrase comes from when the workspace key is not in the OS keyring.
pub const PASSPHRASE_ENV: &str = "ADIUVA_PASSPHRASE";

/// Opens the workspace in `dir` read-only, unlocked as the app unlocks it: the OS keyring, else
/// the passphrase from `ADIUVA_PASSPHRASE`, else a prompt on the terminal.
pub fn open(dir: &Path) -> Result<Workspace, ReplayError> {
    Ok(Workspace::open_read_only(dir, passphrase)?)
}

fn passphrase() -> Option<Zeroizing<String>> {
    if let Some(passphrase) = std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty()) {
        return Some(Zeroizing::new(passphrase));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return None;
    }
    rpassword::prompt_password("Workspace passphrase: ").ok().map(Zeroizing::new)
}
