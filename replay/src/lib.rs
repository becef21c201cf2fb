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
//! - **A relay backup audits like a directory.** [`open_relay`] reads the log from the relay
//!   with a short-lived read grant (the relay authorizes no device), builds a private copy of
//!   it in a temporary directory that commits nothing (no `device.added`: the copy is the
//!   relay's log and no more), and opens that copy read-only; the copy goes when the
//!   [`Audited`] does.

pub mod error;
pub mod events;
pub mod history;
pub mod rebuild;
pub mod state;
pub mod verify;

use std::path::Path;

use adiuva_engine::{KeyProtection, Workspace};
pub use adiuva_sync::{Progress as RelayProgress, RestoreFrom as RelayBackup};
use zeroize::Zeroizing;

pub use error::ReplayError;

/// Where the passphrase comes from when the workspace key is not in the OS keyring.
pub const PASSPHRASE_ENV: &str = "ADIUVA_PASSPHRASE";
/// Where the relay account's password comes from for a relay backup (else a prompt).
pub const PASSWORD_ENV: &str = "ADIUVA_PASSWORD";

/// Opens the workspace in `dir` read-only, unlocked as the app unlocks it: the OS keyring, else
/// the passphrase from `ADIUVA_PASSPHRASE`, else a prompt on the terminal.
pub fn open(dir: &Path) -> Result<Workspace, ReplayError> {
    Ok(Workspace::open_read_only(dir, passphrase)?)
}

/// A workspace opened read-only for an audit, with the private copy it was read from when it
/// came from a relay (removed when this is dropped, after the workspace closes).
pub struct Audited {
    pub workspace: Workspace,
    /// What every device refuses of a relay's log (a unit's part that does not decode, verify
    /// or come from an authorized device) and its units that do not open, as faults: the copy
    /// went on without them.
    pub refused: Vec<verify::Fault>,
    /// Declared after the workspace, so it is dropped (removed) after the workspace closes.
    copy: Option<tempfile::TempDir>,
}

impl Audited {
    /// Where the relay backup was copied to, while this lives.
    pub fn copy_dir(&self) -> Option<&Path> {
        self.copy.as_ref().map(tempfile::TempDir::path)
    }
}

impl From<Workspace> for Audited {
    fn from(workspace: Workspace) -> Self {
        Self { workspace, refused: Vec::new(), copy: None }
    }
}

/// Opens a relay backup for an audit: the log the relay holds for `from.workspace` copied into
/// a private temporary directory (see `adiuva_sync::copy_for_audit`: a read grant, no device
/// authorized, every unit checked, nothing committed), under a random passphrase that never
/// leaves this process, and opened read-only as a directory is. On any failure the copy is
/// removed at once.
pub fn open_relay(from: &RelayBackup<'_>, progress: &mut dyn FnMut(RelayProgress)) -> Result<Audited, ReplayError> {
    let copy =
        tempfile::Builder::new().prefix("adiuva-replay-").tempdir().map_err(|source| ReplayError::Copy { source })?;
    let dir = copy.path().join("workspace");
    let secret = adiuva_engine::crypto::random_bytes::<32>().map_err(adiuva_engine::Error::from)?;
    let passphrase = Zeroizing::new(adiuva_model::hex::encode(&secret));
    let copied = adiuva_sync::copy_for_audit(&dir, KeyProtection::Passphrase(passphrase.clone()), from, progress)?;
    let workspace = Workspace::open_read_only(&dir, || Some(passphrase))?;
    let refused = (copied.refused.iter())
        .map(|(seq, error)| verify::Fault {
            code: error.code().as_str(),
            message: format!("relay unit #{seq}: {error}"),
        })
        .collect();
    Ok(Audited { workspace, refused, copy: Some(copy) })
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
