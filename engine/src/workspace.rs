//! The workspace: Automerge documents kept durably and encrypted in a [`ChunkStore`].
//!
//! A workspace is a root document (workspace info, devices, settings, the directory of
//! documents) plus one document per collection, or per collection and month for sharded ones.
//! Every event is one Automerge change whose commit message is its [`Envelope`].
//!
//! Write path, for one event or a group: apply each event as its own transaction in memory;
//! take each change's bytes; seal them into chunks (`c/DOC\0SEQ`) and rewrite each touched
//! document's manifest, all in **one atomic store batch**; then the durability barrier. Only then
//! does `commit` return. If anything fails, the touched documents are dropped from memory and
//! reload from the store on next use, so memory never runs ahead of what is durable.
//!
//! Compaction writes the document's `save()` as one sealed snapshot together with the manifest
//! pointing at it (atomic, then durable), and only afterwards deletes the chunks and the older
//! snapshot it replaces. A crash in between leaves stale chunks or an old snapshot that the
//! manifest does not count; they are ignored on load and removed by the next compaction.
//!
//! Documents load lazily and independently: damage to one is reported, with its document and
//! chunk, by the operations that need it, and the others stay readable.
//!
//! A store that is *consistently* older than it should be (its log file truncated at a record
//! boundary, or an old copy put back) passes every per-chunk check, because sled recovers such a
//! file as if a crash had cut it short. The **witness** file beside the store catches that: at
//! every clean close and compaction it records, sealed, how many chunks each document had, and a
//! document that later loads with fewer is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use adiuva_model::envelope::{ENVELOPE_VERSION, Subject};
use adiuva_model::{Actor, Collection, DeviceId, Envelope, EventId, EventKind, RecordId};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ChangeHash, PatchLog, ReadDoc};
use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};
use ulid::Ulid;
use zeroize::Zeroizing;

use crate::chunk::{self, BlobKind, ChunkPlace};
use crate::crypto::{KeyPurpose, SecretKey};
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;
use crate::keystore::{self, Header, KeyProtection};
use crate::manifest::{Manifest, SnapshotRef};
use crate::records::{self, Effect, FieldConflict};
use crate::store::{ChunkStore, SledStore, StoreError, WriteBatch};
use crate::view::{self, Delta, RecordView, Touched};

/// The root document's name.
pub const ROOT_DOCUMENT: &str = "root";

/// Largest payload of one chunk. Keeps sled values far below the size at which it writes them
/// to unsynced side files, and bounds what one damaged chunk can take with it.
const MAX_CHUNK_PAYLOAD: usize = 64 * 1024;

/// Store keys outside the chunk format.
const HEADER_KEY: &[u8] = b"h";
const KEYRING_KEY: &[u8] = b"k";
/// The witness file's name, and its blob id in the chunk format.
const WITNESS_FILE: &str = "witness";

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

/// The caller's part of an envelope; the engine adds id, device, time and subject.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub kind: EventKind,
    pub actor: Actor,
    pub correlation: Option<Ulid>,
    pub causation: Option<EventId>,
}

impl EventDraft {
    pub fn new(kind: EventKind, actor: Actor) -> Self {
        Self { kind, actor, correlation: None, causation: None }
    }

    pub fn correlated(mut self, correlation: Option<Ulid>) -> Self {
        self.correlation = correlation;
        self
    }

    pub fn caused_by(mut self, causation: Option<EventId>) -> Self {
        self.causation = causation;
        self
    }
}

/// An event as read back from the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoggedEvent {
    pub document: String,
    /// The Automerge change hash, hex.
    pub change: String,
    pub envelope: Envelope,
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub record: Option<RecordId>,
}

impl EventFilter {
    fn matches(&self, envelope: &Envelope) -> bool {
        let kind_ok = self.kind.as_deref().is_none_or(|kind| {
            // `task` matches `task.created`, `task.updated`...; `task.created` matches itself.
            envelope.kind.as_str() == kind || envelope.kind.as_str().starts_with(&format!("{kind}."))
        });
        let actor_ok = self.actor.as_deref().is_none_or(|actor| {
            let text = envelope.actor.to_string();
            text == actor || text.starts_with(&format!("{actor}:")) || text.starts_with(&format!("{actor}/"))
        });
        let record_ok = self.record.is_none_or(|record| envelope.subject.as_ref().is_some_and(|s| s.record == record));
        kind_ok && actor_ok && record_ok
    }
}

/// What `status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct WorkspaceStatus {
    pub workspace_id: Ulid,
    pub device_id: DeviceId,
    pub path: PathBuf,
    pub key_epoch: u32,
    pub documents: Vec<DocumentStatus>,
    pub storage_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DocumentStatus {
    pub name: String,
    pub records: usize,
    pub events: usize,
    /// Change chunks written since the last compaction.
    pub tail_chunks: u64,
    pub snapshot_generation: Option<u64>,
    /// Set when the document cannot be loaded; the rest of the workspace is still usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct LoadedDocument {
    doc: Automerge,
    manifest: Manifest,
}

/// A document's log as read from the store, checked, not yet loaded into Automerge.
struct StoredLog {
    manifest: Manifest,
    snapshot: Option<Vec<u8>>,
    tail: Vec<Vec<u8>>,
}

/// One event ready to apply.
struct Prepared {
    document: String,
    envelope: Envelope,
    operation: Operation,
    /// Whether the caller asked for this event (engine bookkeeping events are not returned).
    requested: bool,
}

enum Operation {
    Record(Effect),
    CreateWorkspace { device_name: String, box_key: String },
    RegisterDocument { name: String, collection: Collection },
}

impl Operation {
    fn apply(&self, tx: &mut impl Transactable, envelope: &Envelope) -> Result<()> {
        let root_error = |e: automerge::AutomergeError| Error::DocumentCorrupt {
            document: ROOT_DOCUMENT.into(),
            detail: e.to_string(),
        };
        match self {
            Operation::Record(effect) => effect.apply(tx),
            Operation::CreateWorkspace { device_name, box_key } => {
                let time = envelope.time.to_rfc3339();
                let info = tx.put_object(automerge::ROOT, "workspace", automerge::ObjType::Map).map_err(root_error)?;
                tx.put(&info, "created_at", time.as_str()).map_err(root_error)?;
                let devices = tx.put_object(automerge::ROOT, "devices", automerge::ObjType::Map).map_err(root_error)?;
                let device = tx
                    .put_object(&devices, envelope.device.to_string(), automerge::ObjType::Map)
                    .map_err(root_error)?;
                tx.put(&device, "name", device_name.as_str()).map_err(root_error)?;
                tx.put(&device, "box_key", box_key.as_str()).map_err(root_error)?;
                tx.put(&device, "added_at", time.as_str()).map_err(root_error)?;
                tx.put_object(automerge::ROOT, "settings", automerge::ObjType::Map).map_err(root_error)?;
                let directory =
                    tx.put_object(automerge::ROOT, "documents", automerge::ObjType::Map).map_err(root_error)?;
                for collection in Collection::ALL.into_iter().filter(|c| !c.is_sharded()) {
                    tx.put(&directory, collection.name(), collection.name()).map_err(root_error)?;
                }
                Ok(())
            }
            Operation::RegisterDocument { name, collection } => {
                let directory = match tx.get(automerge::ROOT, "documents").map_err(root_error)? {
                    Some((_, directory)) => directory,
                    None => {
                        return Err(Error::DocumentCorrupt {
                            document: ROOT_DOCUMENT.into(),
                            detail: "no document directory".into(),
                        });
                    }
                };
                tx.put(&directory, name.as_str(), collection.name()).map_err(root_error)?;
                Ok(())
            }
        }
    }
}

pub struct Workspace {
    path: PathBuf,
    store: Box<dyn ChunkStore>,
    workspace_id: [u8; 16],
    identity: DeviceIdentity,
    /// Local-storage keys by epoch.
    storage_keys: BTreeMap<u32, SecretKey>,
    current_epoch: u32,
    actor: ActorId,
    docs: BTreeMap<String, LoadedDocument>,
    /// Read views of collection documents, kept current by every commit once read.
    views: BTreeMap<String, RecordView>,
    options: WorkspaceOptions,
    /// Chunk counts per document at the last clean close or compaction.
    witness: BTreeMap<String, u64>,
    /// Held for the workspace's lifetime: one process per workspace.
    _lock: File,
}

impl Workspace {
    /// Creates a new workspace in `dir` (created if missing; it must not hold one already).
    pub fn init(dir: &Path, protection: KeyProtection, device_name: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::from)?;
        let lock = lock_dir(dir)?;
        if store_dir(dir).exists() {
            return Err(Error::WorkspaceExists { path: dir.to_owned() });
        }
        let workspace_id = Ulid::new();
        // Keys first: an OS keyring that cannot be reached fails here, before anything is written.
        let created = keystore::create(workspace_id, protection)?;
        let store = SledStore::open(&store_dir(dir))?;
        let mut batch = WriteBatch::default();
        batch.put(HEADER_KEY, created.header);
        batch.put(KEYRING_KEY, created.sealed_keyring);
        store.write(batch)?;
        store.sync()?;
        let mut workspace = Self::assemble(dir, Box::new(store), lock, workspace_id, created.unlocked);
        let box_key = adiuva_model::hex::encode(&workspace.identity.box_public_key());
        let operation = Operation::CreateWorkspace { device_name: device_name.to_owned(), box_key };
        let created = workspace.root_event("workspace.created", None, operation, true);
        workspace.commit_prepared(vec![created])?;
        info!(workspace = %workspace_id, device = %workspace.identity.device_id().short(), "workspace created");
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
        if !store_dir(dir).is_dir() {
            return Err(Error::WorkspaceNotFound { path: dir.to_owned() });
        }
        let lock = lock_dir(dir)?;
        let store = SledStore::open(&store_dir(dir))?;
        let header_bytes =
            store.get(HEADER_KEY)?.ok_or_else(|| Error::WorkspaceFormat { detail: "no header".into() })?;
        let sealed_keyring =
            store.get(KEYRING_KEY)?.ok_or_else(|| Error::WorkspaceFormat { detail: "no local keyring".into() })?;
        let header = Header::decode(&header_bytes)?;
        let unlocked = keystore::unlock(&header_bytes, &sealed_keyring, passphrase)?;
        let mut workspace = Self::assemble(dir, Box::new(store), lock, header.workspace_id, unlocked);
        workspace.options = options;
        workspace.read_witness()?;
        // The root document is needed for everything else; load it now so a damaged one is
        // reported at open.
        workspace.document(ROOT_DOCUMENT)?;
        debug!(workspace = %header.workspace_id, "workspace opened");
        Ok(workspace)
    }

    fn assemble(
        dir: &Path,
        store: Box<dyn ChunkStore>,
        lock: File,
        workspace_id: Ulid,
        unlocked: keystore::Unlocked,
    ) -> Self {
        let storage_keys: BTreeMap<u32, SecretKey> =
            unlocked.keys.iter().map(|key| (key.epoch, key.key.derive(KeyPurpose::LocalStorage))).collect();
        let current_epoch = unlocked.keys.last().map_or(1, |key| key.epoch);
        let actor = ActorId::from(&unlocked.identity.device_id().0[..16]);
        Self {
            path: dir.to_owned(),
            store,
            workspace_id: workspace_id.to_bytes(),
            identity: unlocked.identity,
            storage_keys,
            current_epoch,
            actor,
            docs: BTreeMap::new(),
            views: BTreeMap::new(),
            options: WorkspaceOptions::default(),
            witness: BTreeMap::new(),
            _lock: lock,
        }
    }

    fn read_witness(&mut self) -> Result<()> {
        let path = self.path.join(WITNESS_FILE);
        let sealed = match std::fs::read(&path) {
            Ok(sealed) => sealed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::from(e).into()),
        };
        let bytes = self.open_chunk(WITNESS_FILE, WITNESS_FILE.as_bytes(), &sealed, BlobKind::Manifest)?;
        self.witness = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(StoreError::Corrupt { detail: format!("witness: {e}") }))?;
        Ok(())
    }

    /// Records every loaded document's chunk count (all durable) in the witness file, atomically.
    fn write_witness(&mut self) -> Result<()> {
        for (name, loaded) in &self.docs {
            let count = self.witness.entry(name.clone()).or_default();
            *count = (*count).max(loaded.manifest.next_seq);
        }
        let bytes = serde_json::to_vec(&self.witness).unwrap_or_default();
        let sealed = self.seal(WITNESS_FILE.as_bytes(), BlobKind::Manifest, &bytes)?;
        let temporary = self.path.join(format!("{WITNESS_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            std::io::Write::write_all(&mut file, &sealed)?;
            file.sync_all()?;
            std::fs::rename(&temporary, self.path.join(WITNESS_FILE))?;
            File::open(&self.path)?.sync_all()
        };
        write().map_err(|e| StoreError::from(e).into())
    }

    pub fn workspace_id(&self) -> Ulid {
        Ulid::from_bytes(self.workspace_id)
    }

    pub fn device_id(&self) -> DeviceId {
        self.identity.device_id()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits one event; returns its full envelope once the event is durable.
    pub fn commit(&mut self, draft: EventDraft, effect: Effect) -> Result<Envelope> {
        let mut envelopes = self.commit_batch(vec![(draft, effect)])?;
        envelopes.pop().ok_or_else(|| Error::InvalidInput { detail: "empty commit".into() })
    }

    /// Group commit: every event is still its own change with its own envelope, but all of them
    /// become durable together, with one store batch and one durability barrier. All or none.
    pub fn commit_batch(&mut self, events: Vec<(EventDraft, Effect)>) -> Result<Vec<Envelope>> {
        let mut prepared = Vec::with_capacity(events.len());
        // Each document this group touches, registered in the directory first if it is new.
        let mut seen = BTreeSet::new();
        for (draft, effect) in events {
            let document = effect.document();
            if !seen.contains(&document) {
                if !self.is_registered(&document)? {
                    let operation =
                        Operation::RegisterDocument { name: document.clone(), collection: effect.collection() };
                    prepared.push(self.root_event("document.created", draft.correlation, operation, false));
                }
                seen.insert(document.clone());
            }
            let subject = Subject { document: document.clone(), record: effect.record() };
            let envelope = self.envelope(draft, Some(subject));
            prepared.push(Prepared { document, envelope, operation: Operation::Record(effect), requested: true });
        }
        self.commit_prepared(prepared)
    }

    /// An engine bookkeeping event on the root document.
    fn root_event(
        &self,
        kind: &'static str,
        correlation: Option<Ulid>,
        operation: Operation,
        requested: bool,
    ) -> Prepared {
        let draft = EventDraft::new(EventKind::from_static(kind), Actor::System).correlated(correlation);
        Prepared { document: ROOT_DOCUMENT.into(), envelope: self.envelope(draft, None), operation, requested }
    }

    fn envelope(&self, draft: EventDraft, subject: Option<Subject>) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: EventId::new(),
            kind: draft.kind,
            actor: draft.actor,
            device: self.identity.device_id(),
            time: Utc::now(),
            correlation: draft.correlation,
            causation: draft.causation,
            subject,
        }
    }

    fn commit_prepared(&mut self, events: Vec<Prepared>) -> Result<Vec<Envelope>> {
        let touched: BTreeSet<String> = events.iter().map(|e| e.document.clone()).collect();
        let result = self.apply_and_persist(events);
        if result.is_err() {
            // Memory must not run ahead of the store: reload these from what is durable.
            for document in &touched {
                self.docs.remove(document);
                self.views.remove(document);
            }
        } else {
            for document in &touched {
                if self.docs.get(document).is_some_and(|d| self.options.should_compact(&d.manifest)) {
                    // The events are durable already; a compaction that fails is retried after the
                    // next commit and must not make this one look failed.
                    if let Err(error) = self.compact_document(document) {
                        warn!(document, %error, "compaction failed; will retry");
                    }
                }
            }
        }
        result
    }

    fn apply_and_persist(&mut self, events: Vec<Prepared>) -> Result<Vec<Envelope>> {
        // Each touched document's heads before the group and how many changes it gets: the new
        // changes are read back once per document, after the whole group.
        let mut heads_before: BTreeMap<String, (Vec<ChangeHash>, usize)> = BTreeMap::new();
        let mut touched: BTreeMap<String, Touched> = BTreeMap::new();
        let mut envelopes = Vec::with_capacity(events.len());
        for event in events {
            let loaded = self.document(&event.document)?;
            if let Operation::Record(effect) = &event.operation {
                let records = touched.entry(event.document.clone()).or_default();
                let created = effect.created_record();
                // A record touched twice in one group is read back after the group.
                let state = if records.contains_key(&effect.record()) { None } else { created };
                records.insert(effect.record(), state);
            }
            let (_, count) = heads_before.entry(event.document.clone()).or_insert_with(|| (loaded.doc.get_heads(), 0));
            let message = event.envelope.encode();
            let time = event.envelope.time.timestamp_millis();
            let options = CommitOptions::default().with_message(message.clone()).with_time(time);
            let success = loaded
                .doc
                .transact_with(|_| options, |tx| event.operation.apply(tx, &event.envelope))
                .map_err(|failure| failure.error)?;
            if success.hash.is_none() {
                // An event that changed nothing (an edit to the same value) is still an event.
                loaded.doc.empty_commit(CommitOptions::default().with_message(message).with_time(time));
            }
            *count += 1;
            if event.requested {
                envelopes.push(event.envelope);
            }
        }
        let mut batch = WriteBatch::default();
        let mut deltas = Vec::new();
        for (document, (before, count)) in &heads_before {
            let changes = self.loaded(document)?.doc.get_changes(before);
            if changes.len() != *count {
                return Err(Error::DocumentCorrupt {
                    document: document.clone(),
                    detail: "a committed change is not in the document".into(),
                });
            }
            // Uncompressed: deflating every change costs more than it saves on a tail that the
            // next compaction rewrites in Automerge's compressed document format anyway.
            let changes: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
            let first_seq = self.stage_changes(document, &changes, &mut batch)?;
            if let Some(records) = touched.get(document) {
                deltas.push((document.clone(), self.stage_delta(document, first_seq, records, &mut batch)?));
            }
        }
        self.store.write(batch)?;
        self.store.sync()?;
        self.apply_deltas(deltas);
        Ok(envelopes)
    }

    /// Stages the view delta of the chunks `document` got from `first_seq` on: the new state of
    /// the `touched` records, in the same batch as the chunks.
    fn stage_delta(&self, document: &str, first_seq: u64, touched: &Touched, batch: &mut WriteBatch) -> Result<Delta> {
        let loaded = self.loaded(document)?;
        let delta = Delta::capture(&loaded.doc, first_seq, loaded.manifest.next_seq, touched);
        let key = layout::delta(document, first_seq);
        batch.put(key.clone(), self.seal_local(&key, BlobKind::ReadViewDelta, &delta.encode())?);
        Ok(delta)
    }

    /// Brings the cached views up to date once their deltas are durable.
    fn apply_deltas(&mut self, deltas: Vec<(String, Delta)>) {
        for (document, delta) in deltas {
            if let Some(view) = self.views.get_mut(&document)
                && !view.apply(&delta)
            {
                self.views.remove(&document);
            }
        }
    }

    /// Seals `changes` (raw change bytes) into as few chunks as fit, appends them to the
    /// document's tail and stages the new manifest, all into `batch`. Returns the first chunk's
    /// sequence number.
    fn stage_changes(&mut self, document: &str, changes: &[Vec<u8>], batch: &mut WriteBatch) -> Result<u64> {
        let loaded = self.loaded(document)?;
        let mut manifest = loaded.manifest.clone();
        manifest.events = Some(match manifest.events {
            Some(events) => events + changes.len() as u64,
            // A format-1 manifest did not count them: count once (the document holds the new ones).
            None => loaded.doc.get_changes_meta(&[]).len() as u64,
        });
        let first_seq = manifest.next_seq;
        let mut payload = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            payload.extend_from_slice(change);
            let next_fits = changes.get(index + 1).is_some_and(|next| payload.len() + next.len() <= MAX_CHUNK_PAYLOAD);
            if !next_fits {
                let key = layout::change(document, manifest.next_seq);
                let sealed = self.seal(&key, BlobKind::Changes, &payload)?;
                manifest.tail_bytes += sealed.len() as u64;
                batch.put(key, sealed);
                manifest.next_seq += 1;
                payload.clear();
            }
        }
        self.stage_manifest(document, &manifest, batch)?;
        if let Some(loaded) = self.docs.get_mut(document) {
            loaded.manifest = manifest;
        }
        Ok(first_seq)
    }

    fn stage_manifest(&self, document: &str, manifest: &Manifest, batch: &mut WriteBatch) -> Result<()> {
        let key = layout::manifest(document);
        let sealed = self.seal_local(&key, BlobKind::Manifest, &manifest.encode())?;
        batch.put(key, sealed);
        Ok(())
    }

    fn seal(&self, key: &[u8], kind: BlobKind, payload: &[u8]) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        Ok(chunk::seal_chunk(place, kind, self.current_epoch, self.current_storage_key()?, &self.identity, payload)?)
    }

    fn seal_local(&self, key: &[u8], kind: BlobKind, payload: &[u8]) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        Ok(chunk::seal_local(place, kind, self.current_epoch, self.current_storage_key()?, payload)?)
    }

    fn current_storage_key(&self) -> Result<&SecretKey> {
        self.storage_keys
            .get(&self.current_epoch)
            .ok_or_else(|| Error::WorkspaceFormat { detail: "no key for the current epoch".into() })
    }

    /// Opens a local blob; a manifest may also be a signed chunk, as format 1 wrote them.
    fn open_local(&self, document: &str, key: &[u8], bytes: &[u8], kind: BlobKind) -> Result<Vec<u8>> {
        if kind == BlobKind::Manifest && chunk::is_chunk(bytes) {
            return self.open_chunk(document, key, bytes, kind);
        }
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        chunk::open_local(bytes, place, kind, |epoch| self.storage_keys.get(&epoch)).map_err(|source| Error::Chunk {
            document: document.to_owned(),
            blob: layout::describe(key),
            source,
        })
    }

    fn open_chunk(&self, document: &str, key: &[u8], bytes: &[u8], kind: BlobKind) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        chunk::open_chunk(bytes, place, kind, |epoch| self.storage_keys.get(&epoch))
            .map(|chunk| chunk.payload)
            .map_err(|source| Error::Chunk { document: document.to_owned(), blob: layout::describe(key), source })
    }

    fn loaded(&self, document: &str) -> Result<&LoadedDocument> {
        self.docs
            .get(document)
            .ok_or_else(|| Error::DocumentCorrupt { document: document.to_owned(), detail: "not loaded".into() })
    }

    /// The document, loaded from the store on first use (empty if it has never been written).
    fn document(&mut self, document: &str) -> Result<&mut LoadedDocument> {
        if !self.docs.contains_key(document) {
            let loaded = self.load_document(document)?;
            self.docs.insert(document.to_owned(), loaded);
        }
        self.docs.get_mut(document).ok_or_else(|| Error::DocumentCorrupt {
            document: document.to_owned(),
            detail: "vanished while loading".into(),
        })
    }

    /// Reads a document's log with every part checked: the manifest, the snapshot it names and
    /// its tail chunks, each authentic, none missing, none stray, and not older than the witness.
    /// `None` for a document never written.
    fn read_log(&self, document: &str) -> Result<Option<StoredLog>> {
        let at = |source: StoreError| Error::DocumentStore { document: document.to_owned(), source };
        let Some(manifest) = self.read_manifest(document)? else {
            return Ok(None);
        };
        let snapshot = match manifest.snapshot {
            Some(snapshot) => {
                let key = layout::snapshot(document, snapshot.generation);
                let sealed = self.store.get(&key).map_err(at)?.ok_or_else(|| Error::SnapshotMissing {
                    document: document.to_owned(),
                    generation: snapshot.generation,
                })?;
                Some(self.open_chunk(document, &key, &sealed, BlobKind::Snapshot)?)
            }
            None => None,
        };
        let witnessed = self.witness.get(document).copied().unwrap_or(0);
        if manifest.next_seq < witnessed {
            return Err(Error::StoreRolledBack {
                document: document.to_owned(),
                found: manifest.next_seq,
                expected: witnessed,
            });
        }
        let mut tail = Vec::new();
        for (key, sealed) in self.store.scan_prefix(&layout::change_prefix(document)).map_err(at)? {
            let seq = layout::change_seq(document, &key).ok_or_else(|| Error::ChunkUnexpected {
                document: document.to_owned(),
                blob: layout::describe(&key),
            })?;
            if seq < manifest.tail_start {
                continue; // folded into the snapshot; left over from an interrupted compaction
            }
            if seq >= manifest.next_seq {
                return Err(Error::ChunkUnexpected { document: document.to_owned(), blob: layout::describe(&key) });
            }
            let expected = manifest.tail_start + tail.len() as u64;
            if seq != expected {
                return Err(Error::ChunkMissing {
                    document: document.to_owned(),
                    seq: expected,
                    expected_end: manifest.next_seq,
                });
            }
            tail.push(self.open_chunk(document, &key, &sealed, BlobKind::Changes)?);
        }
        let end = manifest.tail_start + tail.len() as u64;
        if end != manifest.next_seq {
            return Err(Error::ChunkMissing {
                document: document.to_owned(),
                seq: end,
                expected_end: manifest.next_seq,
            });
        }
        Ok(Some(StoredLog { manifest, snapshot, tail }))
    }

    /// A document's manifest as stored; `None` for a document never written (after checking
    /// that nothing of it is stored, and that the witness does not say otherwise).
    fn read_manifest(&self, document: &str) -> Result<Option<Manifest>> {
        let at = |source: StoreError| Error::DocumentStore { document: document.to_owned(), source };
        let Some(sealed) = self.store.get(&layout::manifest(document)).map_err(at)? else {
            if let Some(stray) = self.store.keys_with_prefix(&layout::change_prefix(document)).map_err(at)?.first() {
                return Err(Error::ChunkUnexpected { document: document.to_owned(), blob: layout::describe(stray) });
            }
            if let Some(&expected) = self.witness.get(document).filter(|&&count| count > 0) {
                return Err(Error::StoreRolledBack { document: document.to_owned(), found: 0, expected });
            }
            return Ok(None);
        };
        let bytes = self.open_local(document, &layout::manifest(document), &sealed, BlobKind::Manifest)?;
        let manifest = Manifest::decode(&bytes)
            .map_err(|detail| Error::DocumentCorrupt { document: document.to_owned(), detail })?;
        Ok(Some(manifest))
    }

    fn load_document(&self, document: &str) -> Result<LoadedDocument> {
        let Some(log) = self.read_log(document)? else {
            let mut doc = Automerge::new();
            doc.set_actor(self.actor.clone());
            return Ok(LoadedDocument { doc, manifest: Manifest::empty() });
        };
        let corrupt = |e: automerge::AutomergeError| Error::DocumentCorrupt {
            document: document.to_owned(),
            detail: e.to_string(),
        };
        let mut doc = match &log.snapshot {
            // The bytes are authenticated and were saved by a device of this workspace from a
            // document it had checked; re-hashing every change here would only cost time. (The
            // audit tool verifies hashes.)
            Some(bytes) => {
                let options = automerge::LoadOptions::new().verification_mode(automerge::VerificationMode::DontCheck);
                Automerge::load_with_options(bytes, options).map_err(corrupt)?
            }
            None => Automerge::new(),
        };
        for payload in &log.tail {
            doc.load_incremental(payload).map_err(corrupt)?;
        }
        let missing = doc.get_missing_deps(&[]);
        if !missing.is_empty() {
            return Err(Error::DocumentCorrupt {
                document: document.to_owned(),
                detail: format!("{} changes depend on history that is not stored", missing.len()),
            });
        }
        doc.set_actor(self.actor.clone());
        Ok(LoadedDocument { doc, manifest: log.manifest })
    }

    /// A collection document's read view: cached, else from the store once its log checks out,
    /// else rebuilt from the document (and stored for next time).
    fn view(&mut self, document: &str) -> Result<&RecordView> {
        if !self.views.contains_key(document) {
            let view = self.load_view(document)?;
            self.views.insert(document.to_owned(), view);
        }
        self.views.get(document).ok_or_else(|| Error::DocumentCorrupt {
            document: document.to_owned(),
            detail: "view vanished while loading".into(),
        })
    }

    fn load_view(&mut self, document: &str) -> Result<RecordView> {
        let (next_seq, stored) = match self.docs.get(document) {
            Some(loaded) => (loaded.manifest.next_seq, self.stored_view(document)?),
            None => {
                // Checking the log and decoding the view are independent: one core each.
                let (log, stored) = std::thread::scope(|scope| {
                    let log = scope.spawn(|| self.read_log(document));
                    let stored = self.stored_view(document);
                    (log.join(), stored)
                });
                let log = log.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                match log {
                    Some(log) => (log.manifest.next_seq, stored?),
                    None => return Ok(RecordView::default()),
                }
            }
        };
        if let Some(view) = stored.filter(|view| view.through_seq() == next_seq) {
            return Ok(view);
        }
        let loaded = self.document(document)?;
        let view = RecordView::materialize(&loaded.doc, loaded.manifest.next_seq);
        debug!(document, records = view.len(), "read view rebuilt");
        let mut batch = WriteBatch::default();
        self.stage_view(document, &view, &mut batch)?;
        // The view is a cache: failing to store it costs the next open a rebuild, nothing else.
        if let Err(error) = self.store.write(batch).and_then(|()| self.store.sync()) {
            warn!(document, %error, "could not store the rebuilt read view");
        }
        Ok(view)
    }

    /// The stored view: a base continued by its deltas without a gap. `None` if there is none
    /// or it is damaged (to be rebuilt); whether it is current is the caller's to check.
    fn stored_view(&self, document: &str) -> Result<Option<RecordView>> {
        let at = |source: StoreError| Error::DocumentStore { document: document.to_owned(), source };
        let base_key = layout::view(document);
        let Some(sealed) = self.store.get(&base_key).map_err(at)? else {
            return Ok(None);
        };
        let Some(mut view) = self.open_view_part(document, &base_key, &sealed, BlobKind::ReadView, RecordView::decode)
        else {
            return Ok(None);
        };
        for (key, sealed) in self.store.scan_prefix(&layout::delta_prefix(document)).map_err(at)? {
            let Some(delta) = self.open_view_part(document, &key, &sealed, BlobKind::ReadViewDelta, Delta::decode)
            else {
                return Ok(None);
            };
            if delta.next_seq <= view.through_seq() {
                continue; // folded into the base; left over from an interrupted compaction
            }
            if !view.apply(&delta) {
                return Ok(None);
            }
        }
        Ok(Some(view))
    }

    /// Opens and decodes one stored part of a read view; `None` (logged) if it does not, so the
    /// view is rebuilt from the log.
    fn open_view_part<T>(
        &self,
        document: &str,
        key: &[u8],
        sealed: &[u8],
        kind: BlobKind,
        decode: impl FnOnce(&[u8]) -> std::result::Result<T, view::ViewDecodeError>,
    ) -> Option<T> {
        let decoded = self.open_local(document, key, sealed, kind).map_err(|e| e.to_string());
        match decoded.and_then(|bytes| decode(&bytes).map_err(|e| e.to_string())) {
            Ok(part) => Some(part),
            Err(error) => {
                warn!(document, blob = %layout::describe(key), %error, "a read view part does not open; rebuilding the view");
                None
            }
        }
    }

    /// Stages `view` as the document's base and removes every delta it includes.
    fn stage_view(&self, document: &str, view: &RecordView, batch: &mut WriteBatch) -> Result<()> {
        let key = layout::view(document);
        batch.put(key.clone(), self.seal_local(&key, BlobKind::ReadView, &view.encode())?);
        for key in self.store.keys_with_prefix(&layout::delta_prefix(document))? {
            if layout::delta_seq(document, &key).is_none_or(|seq| seq < view.through_seq()) {
                batch.delete(key);
            }
        }
        Ok(())
    }

    /// Folds every loaded document's tail into a fresh snapshot.
    pub fn compact(&mut self) -> Result<()> {
        for document in self.document_names()? {
            if self.document(&document)?.manifest.tail_len() > 0 {
                self.compact_document(&document)?;
            }
        }
        Ok(())
    }

    fn compact_document(&mut self, document: &str) -> Result<()> {
        let loaded = self.document(document)?;
        let bytes = loaded.doc.save();
        let old = loaded.manifest.clone();
        let generation = old.snapshot.map_or(1, |s| s.generation + 1);
        // Step 1: the new snapshot and the manifest that points at it, durable together.
        let key = layout::snapshot(document, generation);
        let sealed = self.seal(&key, BlobKind::Snapshot, &bytes)?;
        let mut manifest = old.clone();
        manifest.tail_start = old.next_seq;
        manifest.tail_bytes = 0;
        manifest.snapshot = Some(SnapshotRef { generation, bytes: sealed.len() as u64 });
        let mut batch = WriteBatch::default();
        batch.put(key, sealed);
        self.stage_manifest(document, &manifest, &mut batch)?;
        if document != ROOT_DOCUMENT {
            // The view's deltas fold into a new base at the same pace as the tail into the snapshot.
            self.view(document)?;
            if let Some(view) = self.views.get(document) {
                self.stage_view(document, view, &mut batch)?;
            }
        }
        self.store.write(batch)?;
        self.store.sync()?;
        if let Some(loaded) = self.docs.get_mut(document) {
            loaded.manifest = manifest;
        }
        // Step 2: only now delete what the snapshot replaces (and leftovers of earlier runs).
        let mut cleanup = WriteBatch::default();
        for key in self.store.keys_with_prefix(&layout::change_prefix(document))? {
            if layout::change_seq(document, &key).is_some_and(|seq| seq < old.next_seq) {
                cleanup.delete(key);
            }
        }
        for key in self.store.keys_with_prefix(&layout::snapshot_prefix(document))? {
            if key != layout::snapshot(document, generation) {
                cleanup.delete(key);
            }
        }
        if !cleanup.is_empty() {
            self.store.write(cleanup)?;
            self.store.sync()?;
        }
        self.write_witness()?;
        debug!(document, generation, bytes = bytes.len(), "compacted");
        Ok(())
    }

    /// Whether the root directory lists `document`.
    fn is_registered(&mut self, document: &str) -> Result<bool> {
        let root = &self.document(ROOT_DOCUMENT)?.doc;
        Ok(match root.get(automerge::ROOT, "documents") {
            Ok(Some((_, directory))) => matches!(root.get(&directory, document), Ok(Some(_))),
            _ => false,
        })
    }

    /// The documents the root directory lists, root first.
    pub fn document_names(&mut self) -> Result<Vec<String>> {
        let root = &self.document(ROOT_DOCUMENT)?.doc;
        let mut names = vec![ROOT_DOCUMENT.to_owned()];
        if let Ok(Some((_, directory))) = root.get(automerge::ROOT, "documents") {
            names.extend(root.keys(&directory));
        }
        Ok(names)
    }

    fn collection_documents(&mut self, collection: Collection) -> Result<Vec<String>> {
        Ok(self
            .document_names()?
            .into_iter()
            .filter(|name| Collection::of_document(name) == Some(collection))
            .collect())
    }

    /// A record's current fields, or `None`.
    pub fn get(&mut self, collection: Collection, id: RecordId) -> Result<Option<Value>> {
        let document = records::document_of(collection, id);
        if collection.is_sharded() && !self.is_registered(&document)? {
            return Ok(None);
        }
        Ok(self.view(&document)?.get(id))
    }

    pub fn get_as<T: DeserializeOwned>(&mut self, collection: Collection, id: RecordId) -> Result<Option<T>> {
        self.get(collection, id)?.map(|value| decode_record(collection, value)).transpose()
    }

    /// Every record of a collection, oldest first.
    pub fn list(&mut self, collection: Collection) -> Result<Vec<Value>> {
        self.list_as(collection)
    }

    /// Every record of a collection, oldest first, deserialized straight from the read view.
    pub fn list_as<T: DeserializeOwned + Send>(&mut self, collection: Collection) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for document in self.collection_documents(collection)? {
            let records = self
                .view(&document)?
                .records_as()
                .map_err(|(id, e)| Error::RecordInvalid { collection, detail: format!("record {id}: {e}") })?;
            out.extend(records);
        }
        Ok(out)
    }

    /// Resolves a full id or a unique prefix of one (case-insensitive) to a record id.
    ///
    /// A unique *suffix* of at least four characters works too: a ULID starts with its
    /// timestamp, so records created close together share long prefixes but end differently.
    pub fn resolve_id(&mut self, collection: Collection, text: &str) -> Result<RecordId> {
        let part = text.to_ascii_uppercase();
        if part.is_empty() {
            return Err(Error::InvalidInput { detail: "empty record id".into() });
        }
        let matches_text = |id: &RecordId| {
            let id = id.to_string();
            id.starts_with(&part) || (part.len() >= 4 && id.ends_with(&part))
        };
        let mut matches = Vec::new();
        for document in self.collection_documents(collection)? {
            matches.extend(self.view(&document)?.ids().filter(matches_text));
        }
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::RecordNotFound { collection, id: text.to_owned() }),
            _ => Err(Error::RecordAmbiguous { collection, prefix: text.to_owned(), matches: matches.len() }),
        }
    }

    /// The conflicts Automerge keeps for a record (fields set concurrently on two devices).
    pub fn conflicts(&mut self, collection: Collection, id: RecordId) -> Result<Vec<FieldConflict>> {
        let document = records::document_of(collection, id);
        records::record_conflicts(&self.document(&document)?.doc, collection, id)
    }

    /// Events matching `filter`, across all documents, in time order.
    pub fn events(&mut self, filter: &EventFilter) -> Result<Vec<LoggedEvent>> {
        let mut out = Vec::new();
        for document in self.document_names()? {
            out.extend(self.document_events(&document)?.into_iter().filter(|e| filter.matches(&e.envelope)));
        }
        out.sort_by_key(|e| (e.envelope.time, e.envelope.id));
        Ok(out)
    }

    /// A record's events (its history), oldest first.
    pub fn history(&mut self, collection: Collection, id: RecordId) -> Result<Vec<LoggedEvent>> {
        let document = records::document_of(collection, id);
        let mut events: Vec<LoggedEvent> = self
            .document_events(&document)?
            .into_iter()
            .filter(|e| e.envelope.subject.as_ref().is_some_and(|s| s.record == id))
            .collect();
        events.sort_by_key(|e| (e.envelope.time, e.envelope.id));
        Ok(events)
    }

    fn document_events(&mut self, document: &str) -> Result<Vec<LoggedEvent>> {
        let doc = &self.document(document)?.doc;
        doc.get_changes_meta(&[])
            .into_iter()
            .map(|meta| {
                let change = meta.hash.to_string();
                let envelope = Envelope::decode(meta.message.as_deref().unwrap_or_default()).map_err(|source| {
                    Error::Envelope { document: document.to_owned(), change: change.clone(), source }
                })?;
                Ok(LoggedEvent { document: document.to_owned(), change, envelope })
            })
            .collect()
    }

    /// The current heads of a document.
    pub fn heads(&mut self, document: &str) -> Result<Vec<ChangeHash>> {
        Ok(self.document(document)?.doc.get_heads())
    }

    /// The changes of `document` that a peer with `since` heads lacks, as concatenated change
    /// bytes (what a sync bundle carries inside its encryption).
    pub fn export_changes(&mut self, document: &str, since: &[ChangeHash]) -> Result<Vec<u8>> {
        let doc = &self.document(document)?.doc;
        Ok(doc.get_changes(since).iter().flat_map(|change| change.raw_bytes().to_vec()).collect())
    }

    /// Applies changes received from another device and stores them durably. Idempotent:
    /// changes already present are skipped. Every new change must carry a valid envelope, or
    /// nothing is kept. Returns how many changes were new.
    pub fn import_changes(&mut self, document: &str, bytes: &[u8]) -> Result<usize> {
        let result = self.import_and_persist(document, bytes);
        if result.is_err() {
            self.docs.remove(document);
            self.views.remove(document);
        }
        result
    }

    fn import_and_persist(&mut self, document: &str, bytes: &[u8]) -> Result<usize> {
        if document != ROOT_DOCUMENT && !self.is_registered(document)? {
            let collection = Collection::of_document(document)
                .ok_or_else(|| Error::InvalidInput { detail: format!("unknown document {document:?}") })?;
            let operation = Operation::RegisterDocument { name: document.to_owned(), collection };
            let registered = self.root_event("document.created", None, operation, false);
            self.commit_prepared(vec![registered])?;
        }
        let loaded = self.document(document)?;
        let before = loaded.doc.get_heads();
        // Logging patches while applying costs what the new changes touch; a diff afterwards
        // would walk the whole document.
        let mut patch_log = PatchLog::active();
        loaded
            .doc
            .load_incremental_log_patches(bytes, &mut patch_log)
            .map_err(|e| Error::DocumentCorrupt { document: document.to_owned(), detail: e.to_string() })?;
        let touched = records::touched_records(&loaded.doc.make_patches(&mut patch_log));
        let new_changes = loaded.doc.get_changes(&before);
        for change in &new_changes {
            Envelope::decode(change.message().unwrap_or_default()).map_err(|source| Error::Envelope {
                document: document.to_owned(),
                change: change.hash().to_string(),
                source,
            })?;
        }
        let count = new_changes.len();
        if count > 0 {
            let bytes: Vec<Vec<u8>> = new_changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
            let mut batch = WriteBatch::default();
            let first_seq = self.stage_changes(document, &bytes, &mut batch)?;
            let delta = match document {
                ROOT_DOCUMENT => None,
                _ => Some((document.to_owned(), self.stage_delta(document, first_seq, &touched, &mut batch)?)),
            };
            self.store.write(batch)?;
            self.store.sync()?;
            self.apply_deltas(delta.into_iter().collect());
        }
        Ok(count)
    }

    /// Counts, sizes and the health of every document. A damaged document is reported in its
    /// entry; the others are counted as usual. Collections are counted through their read
    /// views and events through the manifests, so no Automerge document needs to load; the log
    /// of each document is still checked.
    pub fn status(&mut self) -> Result<WorkspaceStatus> {
        let mut documents = Vec::new();
        for name in self.document_names()? {
            let status = self.document_status(&name).unwrap_or_else(|error| {
                warn!(document = %name, %error, "document does not load");
                DocumentStatus {
                    name: name.clone(),
                    records: 0,
                    events: 0,
                    tail_chunks: 0,
                    snapshot_generation: None,
                    error: Some(format!("{}: {error}", error.code().as_str())),
                }
            });
            documents.push(status);
        }
        Ok(WorkspaceStatus {
            workspace_id: self.workspace_id(),
            device_id: self.device_id(),
            path: self.path.clone(),
            key_epoch: self.current_epoch,
            documents,
            storage_bytes: self.store.size_on_disk()?,
        })
    }

    fn document_status(&mut self, name: &str) -> Result<DocumentStatus> {
        let records = if name == ROOT_DOCUMENT { 0 } else { self.view(name)?.len() };
        let manifest = match self.docs.get(name) {
            Some(loaded) => loaded.manifest.clone(),
            None => self.read_manifest(name)?.unwrap_or_else(Manifest::empty),
        };
        let events = match manifest.events {
            Some(events) => events as usize,
            None => self.document(name)?.doc.get_changes_meta(&[]).len(),
        };
        Ok(DocumentStatus {
            name: name.to_owned(),
            records,
            events,
            tail_chunks: manifest.tail_len(),
            snapshot_generation: manifest.snapshot.map(|s| s.generation),
            error: None,
        })
    }
}

impl Drop for Workspace {
    /// A clean close records the witness, so a store later found holding less is refused.
    fn drop(&mut self) {
        if let Err(error) = self.write_witness() {
            warn!(%error, "could not record the witness at close");
        }
    }
}

fn decode_record<T: DeserializeOwned>(collection: Collection, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::RecordInvalid { collection, detail: e.to_string() })
}

/// Builds the field map of a record from a serializable value, without its `id`.
pub fn fields_of<T: Serialize>(collection: Collection, record: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(record) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("id");
            Ok(fields)
        }
        Ok(_) => Err(Error::RecordInvalid { collection, detail: "a record must be an object".into() }),
        Err(e) => Err(Error::RecordInvalid { collection, detail: e.to_string() }),
    }
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

fn lock_dir(dir: &Path) -> Result<File> {
    let file =
        File::options().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(StoreError::from)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::WorkspaceLocked { path: dir.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::from(e).into()),
    }
}

/// Store key layout. Document names may contain `/`, so a NUL ends the name in chunk keys and
/// `activity` can never be a prefix of `activity/2026-11`'s keys.
mod layout {
    pub fn manifest(document: &str) -> Vec<u8> {
        [b"m/", document.as_bytes()].concat()
    }

    pub fn change_prefix(document: &str) -> Vec<u8> {
        [b"c/", document.as_bytes(), b"\0"].concat()
    }

    pub fn change(document: &str, seq: u64) -> Vec<u8> {
        numbered(&change_prefix(document), seq)
    }

    pub fn change_seq(document: &str, key: &[u8]) -> Option<u64> {
        number_after(&change_prefix(document), key)
    }

    pub fn view(document: &str) -> Vec<u8> {
        [b"v/", document.as_bytes()].concat()
    }

    pub fn delta_prefix(document: &str) -> Vec<u8> {
        [b"d/", document.as_bytes(), b"\0"].concat()
    }

    pub fn delta(document: &str, seq: u64) -> Vec<u8> {
        numbered(&delta_prefix(document), seq)
    }

    pub fn delta_seq(document: &str, key: &[u8]) -> Option<u64> {
        number_after(&delta_prefix(document), key)
    }

    pub fn snapshot_prefix(document: &str) -> Vec<u8> {
        [b"s/", document.as_bytes(), b"\0"].concat()
    }

    pub fn snapshot(document: &str, generation: u64) -> Vec<u8> {
        numbered(&snapshot_prefix(document), generation)
    }

    fn numbered(prefix: &[u8], number: u64) -> Vec<u8> {
        [prefix, &number.to_be_bytes()].concat()
    }

    fn number_after(prefix: &[u8], key: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(key.strip_prefix(prefix)?.try_into().ok()?))
    }

    /// A readable name for a store key, for errors: `tasks#12`, `tasks snapshot 3`.
    pub fn describe(key: &[u8]) -> String {
        // `DOC\0NUMBER` as `DOC{separator}NUMBER`.
        let numbered = |rest: &[u8], separator: &str| -> String {
            let (document, number) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let document = String::from_utf8_lossy(document);
            match <[u8; 8]>::try_from(number) {
                Ok(number) => format!("{document}{separator}{}", u64::from_be_bytes(number)),
                Err(_) => format!("{document}{separator}?"),
            }
        };
        match key {
            [b'c', b'/', rest @ ..] => numbered(rest, "#"),
            [b's', b'/', rest @ ..] => numbered(rest, " snapshot "),
            [b'd', b'/', rest @ ..] => numbered(rest, " read view delta "),
            [b'm', b'/', rest @ ..] => format!("{} manifest", String::from_utf8_lossy(rest)),
            [b'v', b'/', rest @ ..] => format!("{} read view", String::from_utf8_lossy(rest)),
            other => String::from_utf8_lossy(other).into_owned(),
        }
    }
}
