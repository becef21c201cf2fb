//! The workspace: Automerge documents kept durably and encrypted in a [`ChunkStore`].
//!
//! A workspace is a root document (workspace info, devices, settings, the directory of
//! documents) plus one document per collection, per collection and month for sharded ones, or
//! per record for collections of long texts (notes).
//! Every event is one Automerge change whose commit message is its
//! [`Envelope`](adiuva_model::Envelope).
//!
//! This module owns opening and creating a workspace and the documents in memory; each job
//! around them has its own module:
//! - `layout`: where each stored thing lives in the store;
//! - `log`: a document's log (manifests, chunks, snapshots, sealing, the witness), what sync
//!   and the audit tool need without the rest;
//! - `commit`: the write path (one atomic batch, then the barrier);
//! - `views`: read views, so reads need not load Automerge;
//! - `index`: event indexes, so `log` and `history` need not load Automerge either;
//! - `compaction`: folding a tail into a snapshot;
//! - `query`: reads and status;
//! - `sync`: heads, export and import of changes;
//! - `relay`: sealed multi-document units for a relay and the sync state kept per relay;
//! - `audit`: every stored part of the log checked and every fault kept (the audit tool's
//!   `verify`, on a workspace opened with [`Workspace::open_read_only`]);
//! - `upgrade`: bringing a workspace written by an older build to this build's layout and keys.
//!
//! Documents load lazily and independently: damage to one is reported, with its document and
//! chunk, by the operations that need it, and the others stay readable.

mod audit;
mod commit;
mod compaction;
mod devices;
mod follow;
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod invite;
mod layout;
mod log;
mod peer;
mod query;
mod recovery;
mod relay;
mod restore_point;
mod settings;
#[cfg(test)]
mod store_failures;
mod sync;
mod unsettled;
mod upgrade;
mod views;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use adiuva_model::{Collection, DeviceId};
use automerge::ActorId;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};
use ulid::Ulid;
use zeroize::Zeroizing;

pub use audit::{DocumentAudit, SignedEvent, epoch_faults};
pub use commit::EventDraft;
pub use devices::{DeviceInfo, Removal};
pub use follow::{CommitObserver, Cursor, FollowedEvent};
pub use invite::{JoinAcceptance, JoinRequest, PendingJoin, Ticket};
pub use peer::{PeerHeads, PeerMessage, PeerPush, PeerStates};
pub use query::{DocumentStatus, EventFilter, LoggedEvent, WorkspaceStatus};
pub use relay::{RelayState, UnitImport};
pub use restore_point::{OpenedPoint, RestorePoint, is_restore_point, open_restore_point};
pub use sync::Imported;
pub use unsettled::{HeldUnit, RefusedUnit, UnsettledUnits};
pub use upgrade::Upgrade;

use crate::error::{Error, Result, json_error};
use crate::keystore::{self, Header, KeyProtection};
use crate::manifest::Manifest;
use crate::store::disk::{Disk, PRIVATE_DIR, PRIVATE_FILE, RealDisk};
use crate::store::{ChunkStore, ReadOnlyStore, SledStore, StoreError, WriteBatch};
use crate::view::RecordView;
use commit::Operation;
use log::{DocumentLog, LoadedDocument};

/// The root document's name.
pub const ROOT_DOCUMENT: &str = "root";

/// Whether `open` checks the store against the witness, or trusts the store and records a new
/// witness of it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Witness {
    Check,
    Reset,
}

/// When to compact a document. Compaction folds the tail into a new snapshot: it bounds the
/// time to open the document and the bytes the key-value store holds.
#[derive(Clone, Debug)]
pub struct WorkspaceOptions {
    /// Compact once this many change chunks sit on top of the snapshot (each costs a read and a
    /// signature check at open).
    pub compact_after_chunks: u64,
    /// Compact once the tail holds this many bytes, or four times the snapshot's bytes if that
    /// is more: snapshots then grow geometrically and rewriting them costs O(1) per event
    /// committed.
    pub compact_after_bytes: u64,
}

/// How many bytes of tail to let grow per byte of snapshot. A compressed snapshot holds an
/// event in about a sixth of the bytes the tail needs (the tail's changes are stored
/// uncompressed), so at 4 a compaction folds in about two thirds as many events as the
/// snapshot already has: each compaction rewrites the whole document, and at a ratio of 1 the
/// 100k-event group-commit benchmark spent a quarter of its time compacting.
const TAIL_TO_SNAPSHOT: u64 = 4;

impl Default for WorkspaceOptions {
    fn default() -> Self {
        Self { compact_after_chunks: 512, compact_after_bytes: 2 * 1024 * 1024 }
    }
}

impl WorkspaceOptions {
    fn should_compact(&self, manifest: &Manifest) -> bool {
        let snapshot_bytes = manifest.snapshot.map_or(0, |s| s.bytes);
        manifest.tail_len() >= self.compact_after_chunks
            || manifest.tail_bytes >= self.compact_after_bytes.max(snapshot_bytes.saturating_mul(TAIL_TO_SNAPSHOT))
    }
}

pub struct Workspace {
    path: PathBuf,
    log: DocumentLog,
    actor: ActorId,
    docs: BTreeMap<String, LoadedDocument>,
    /// Read views of collection documents, kept current by every commit once read.
    views: BTreeMap<String, RecordView>,
    options: WorkspaceOptions,
    /// Told about every durable commit group (see [`Workspace::on_commit`]).
    observer: Option<CommitObserver>,
    /// A compaction whose save runs on its own thread (see `compaction`).
    compacting: Option<compaction::Compacting>,
    /// Held for the workspace's lifetime: one process per workspace. A read-only open takes
    /// none: it writes nothing, so it may read beside the process that holds the lock.
    _lock: Option<File>,
}

impl Workspace {
    /// Creates a new workspace in `dir` (created if missing; it must not hold one already).
    ///
    /// Atomic: the header, the keyring and the root document's first event are one store batch,
    /// so a crash leaves either a complete workspace or an empty store, which is no workspace
    /// (`open` says so) and which `init` takes over when run again.
    pub fn init(dir: &Path, protection: KeyProtection, device_name: &str) -> Result<Self> {
        // Owner-only before sled creates its files in the store directory: their mode follows
        // the process's umask, so these directories are what keeps them private.
        for dir in [dir, &store_dir(dir)] {
            RealDisk.create_dir_all(dir).map_err(StoreError::from)?;
        }
        // An empty directory given to `init` becomes the workspace: owner-only too. One that
        // holds other things is left as it is (with a warning if it is shared).
        if std::fs::read_dir(dir).map_err(StoreError::from)?.count() == 1 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR)).map_err(StoreError::from)?;
        }
        warn_if_shared(dir);
        let lock = lock_dir(dir)?;
        let store = SledStore::open(&store_dir(dir))?;
        Self::init_in(dir, lock, Box::new(store), protection, device_name)
    }

    /// [`Self::init`] over a given store (tests inject failures through it).
    fn init_in(
        dir: &Path,
        lock: File,
        store: Box<dyn ChunkStore>,
        protection: KeyProtection,
        device_name: &str,
    ) -> Result<Self> {
        if store.get(layout::HEADER)?.is_some() || !is_empty(store.as_ref())? || log::has_witness(dir) {
            return Err(Error::WorkspaceExists { path: dir.to_owned() });
        }
        let workspace_id = Ulid::new();
        // Keys before anything is written: an OS keyring that cannot be reached fails here.
        let created = keystore::create(workspace_id, protection)?;
        let mut batch = WriteBatch::default();
        batch.put(layout::HEADER, created.keyring.header());
        batch.put(layout::KEYRING, created.keyring.seal(&created.identity)?);
        let mut workspace = Self::assemble(dir, store, Some(lock), workspace_id, created);
        let box_key = adiuva_model::hex::encode(&workspace.log.identity.box_public_key());
        let operation = Operation::CreateWorkspace { device_name: device_name.to_owned(), box_key };
        let created = workspace.root_event("workspace.created", None, operation, true);
        workspace.commit_prepared(vec![created], batch)?;
        info!(workspace = %workspace_id, device = %workspace.device_id().short(), "workspace created");
        Ok(workspace)
    }

    /// Opens the workspace in `dir`. `passphrase` is called only if the workspace key is
    /// passphrase-protected.
    pub fn open(dir: &Path, passphrase: impl FnOnce() -> Option<Zeroizing<String>>) -> Result<Self> {
        Self::open_with(dir, passphrase, WorkspaceOptions::default())
    }

    pub fn open_with(
        dir: &Path,
        passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
        options: WorkspaceOptions,
    ) -> Result<Self> {
        Self::open_dir(dir, passphrase, options, Witness::Check)
    }

    /// Opens a workspace whose witness file is lost ([`Error::WitnessMissing`]), trusting its
    /// store as it is: a store rolled back before this call is taken as the truth from now on.
    /// Records a new witness of every document.
    pub fn open_resetting_witness(dir: &Path, passphrase: impl FnOnce() -> Option<Zeroizing<String>>) -> Result<Self> {
        Self::open_dir(dir, passphrase, WorkspaceOptions::default(), Witness::Reset)
    }

    fn open_dir(
        dir: &Path,
        passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
        options: WorkspaceOptions,
        witness: Witness,
    ) -> Result<Self> {
        if recovery::restore_unfinished(dir) {
            return Err(Error::RestoreUnfinished { path: dir.to_owned() });
        }
        if !store_dir(dir).is_dir() {
            return Err(Error::WorkspaceNotFound { path: dir.to_owned() });
        }
        warn_if_shared(dir);
        let lock = lock_dir(dir)?;
        let store = SledStore::open(&store_dir(dir))?;
        Self::open_in(dir, lock, Box::new(store), passphrase, options, witness)
    }

    /// [`Self::open_with`] over a given store (tests inject failures through it).
    fn open_in(
        dir: &Path,
        lock: File,
        store: Box<dyn ChunkStore>,
        passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
        options: WorkspaceOptions,
        witness: Witness,
    ) -> Result<Self> {
        let Some(header_bytes) = store.get(layout::HEADER)? else {
            return Err(match is_empty(store.as_ref())? {
                // What an `init` cut short leaves behind.
                true if !log::has_witness(dir) => Error::WorkspaceNotFound { path: dir.to_owned() },
                true => Error::WorkspaceFormat {
                    detail:
                        "the store is empty, but its witness shows it held a workspace: restore the store from a backup"
                            .into(),
                },
                false => Error::WorkspaceFormat { detail: "no header".into() },
            });
        };
        let sealed_keyring =
            store.get(layout::KEYRING)?.ok_or_else(|| Error::WorkspaceFormat { detail: "no local keyring".into() })?;
        let header = Header::decode(&header_bytes)?;
        let unlocked = keystore::unlock(&header_bytes, &sealed_keyring, passphrase)?;
        let outdated = unlocked.outdated;
        let mut workspace = Self::assemble(dir, store, Some(lock), header.workspace_id, unlocked);
        if outdated {
            // Before anything is sealed under the device's storage key it got just now.
            workspace.log.store_keyring()?;
        }
        workspace.options = options;
        if witness == Witness::Check {
            workspace.log.read_witness()?;
        }
        // The root document is needed for everything else; load it now so a damaged one is
        // reported at open. A key epoch sealed to this device that a crash kept out of its
        // keyring is taken in now.
        workspace.document(ROOT_DOCUMENT)?;
        workspace.learn_epochs()?;
        workspace.move_unsettled_units_out()?;
        if witness == Witness::Reset {
            let mut manifests = Vec::new();
            for name in workspace.document_names()? {
                manifests.extend(workspace.log.read_manifest(&name)?.map(|manifest| (name, manifest)));
            }
            workspace.log.write_witness(manifests.iter().map(|(name, manifest)| (name, manifest)))?;
            warn!(workspace = %header.workspace_id, "witness reset: the store is trusted as it is");
        }
        debug!(workspace = %header.workspace_id, "workspace opened");
        Ok(workspace)
    }

    /// Opens the workspace in `dir` for reading only, as the audit tool does: without the
    /// write path. No lock is taken (so it reads beside a daemon that holds the workspace),
    /// the store is read without replaying its write-ahead log into it (see
    /// [`ReadOnlyStore`]), and nothing is ever written back: no checkpoint, compaction, read
    /// view or event index rebuilt into the store, keyring upgrade or witness. Snapshots load
    /// with their Automerge hashes checked. Every write returns `store.read_only`.
    pub fn open_read_only(dir: &Path, passphrase: impl FnOnce() -> Option<Zeroizing<String>>) -> Result<Self> {
        if !store_dir(dir).is_dir() {
            return Err(Error::WorkspaceNotFound { path: dir.to_owned() });
        }
        let store = ReadOnlyStore::open(&store_dir(dir))?;
        let Some(header_bytes) = store.get(layout::HEADER)? else {
            return Err(Error::WorkspaceNotFound { path: dir.to_owned() });
        };
        let sealed_keyring =
            store.get(layout::KEYRING)?.ok_or_else(|| Error::WorkspaceFormat { detail: "no local keyring".into() })?;
        let header = Header::decode(&header_bytes)?;
        let unlocked = keystore::unlock(&header_bytes, &sealed_keyring, passphrase)?;
        let mut workspace = Self::assemble(dir, Box::new(store), None, header.workspace_id, unlocked);
        workspace.log.read_only = true;
        workspace.log.read_witness()?;
        debug!(workspace = %header.workspace_id, "workspace opened read-only");
        Ok(workspace)
    }

    /// Whether this workspace was opened with [`Self::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.log.read_only
    }

    fn assemble(
        dir: &Path,
        store: Box<dyn ChunkStore>,
        lock: Option<File>,
        workspace_id: Ulid,
        unlocked: keystore::Unlocked,
    ) -> Self {
        let actor = ActorId::from(&unlocked.identity.device_id().0[..16]);
        let log = DocumentLog {
            store,
            dir: dir.to_owned(),
            workspace_id: workspace_id.to_bytes(),
            derived_keys: unlocked.keyring.derived_storage_keys(),
            identity: unlocked.identity,
            keyring: unlocked.keyring,
            witness: BTreeMap::new(),
            witness_marked: false,
            read_only: false,
        };
        Self {
            path: dir.to_owned(),
            log,
            actor,
            docs: BTreeMap::new(),
            views: BTreeMap::new(),
            options: WorkspaceOptions::default(),
            observer: None,
            compacting: None,
            _lock: lock,
        }
    }

    /// Whether a process holds the workspace in `dir` open right now (its lock is taken).
    pub fn is_held(dir: &Path) -> bool {
        matches!(lock_dir(dir), Err(Error::WorkspaceLocked { .. }))
    }

    pub fn workspace_id(&self) -> Ulid {
        Ulid::from_bytes(self.log.workspace_id)
    }

    pub fn device_id(&self) -> DeviceId {
        self.log.identity.device_id()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn loaded(&self, document: &str) -> Result<&LoadedDocument> {
        self.docs
            .get(document)
            .ok_or_else(|| Error::DocumentCorrupt { document: document.to_owned(), detail: "not loaded".into() })
    }

    /// The document, loaded from the store on first use (empty if it has never been written).
    fn document(&mut self, document: &str) -> Result<&mut LoadedDocument> {
        if !self.docs.contains_key(document) {
            layout::check_document_name(document)?;
            let loaded = self.log.load_document(document, &self.actor)?;
            self.docs.insert(document.to_owned(), loaded);
        }
        self.docs.get_mut(document).ok_or_else(|| Error::DocumentCorrupt {
            document: document.to_owned(),
            detail: "vanished while loading".into(),
        })
    }

    /// Reads something kept beside a document's log (its read view, its event index) while the
    /// log is checked: returns the document's `next_seq` (`None` if never written) and what
    /// `read` gave. A loaded document's log was checked as it loaded; otherwise the check and
    /// the read are independent and run side by side, one core each.
    fn checked_with<T>(&self, document: &str, read: impl FnOnce() -> T) -> Result<(Option<u64>, T)> {
        if let Some(loaded) = self.docs.get(document) {
            return Ok((Some(loaded.manifest.next_seq), read()));
        }
        let (log, stored) = std::thread::scope(|scope| {
            let log = scope.spawn(|| self.log.read_log(document));
            let stored = read();
            (log.join(), stored)
        });
        let log = log.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((log.map(|log| log.manifest.next_seq), stored))
    }

    /// Records every loaded document's (durable) chunk count in the witness.
    fn write_witness(&mut self) -> Result<()> {
        self.log.write_witness(self.docs.iter().map(|(name, loaded)| (name, &loaded.manifest)))
    }
}

impl Drop for Workspace {
    /// A clean close records the witness, so a store later found holding less is refused.
    fn drop(&mut self) {
        if self.log.read_only {
            return;
        }
        if std::thread::panicking() {
            // Memory may be halfway through a change: record nothing rather than a guess.
            warn!("not recording the witness: closing while a panic unwinds");
            return;
        }
        self.finish_compaction(true);
        if let Err(error) = self.write_witness() {
            warn!(%error, "could not record the witness at close");
        }
    }
}

/// Builds the field map of a record from a serializable value, without its `id`.
pub fn fields_of<T: Serialize>(collection: Collection, record: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(record) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("id");
            Ok(fields)
        }
        Ok(_) => Err(Error::RecordInvalid { collection, detail: "a record must be an object".into() }),
        Err(e) => Err(Error::RecordInvalid { collection, detail: format!("the record {}", json_error(&e)) }),
    }
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// Whether the store holds nothing at all (reads every key: only for a store without a header).
pub(super) fn is_empty(store: &dyn ChunkStore) -> Result<bool> {
    Ok(store.keys_with_prefix(b"")?.is_empty())
}

/// Warns when other users of this machine can enter the workspace directory or its store (a
/// workspace copied or created by an older version with a looser mode): what they hold is
/// sealed, but not their sizes, names and times. Files inside an owner-only directory are out
/// of reach whatever their own mode, so the two directories are what is checked.
fn warn_if_shared(dir: &Path) {
    for path in [dir.to_owned(), store_dir(dir)] {
        if let Ok(metadata) = std::fs::metadata(&path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            let mode = format!("{:o}", metadata.permissions().mode() & 0o777);
            warn!(path = %path.display(), mode, "other users of this machine can access the workspace; restrict it with `chmod 700`");
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE)
        .open(dir.join("lock"))
        .map_err(StoreError::from)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::WorkspaceLocked { path: dir.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::from(e).into()),
    }
}
