//! A document's log in the store: its manifest, snapshot and tail chunks, sealed and checked,
//! plus the witness that catches a store rolled back as a whole.
//!
//! This is the part that sync, the daemon and the audit tool need without the rest of the
//! workspace: reading a document's log with every part authenticated and accounted for,
//! staging new chunks and manifests into a batch, and sealing or opening any stored blob.
//!
//! A store that is *consistently* older than it should be (its log file truncated at a record
//! boundary, or an old copy put back) passes every per-chunk check, because sled recovers such a
//! file as if a crash had cut it short. The **witness** file beside the store catches that: at
//! every clean close and compaction it records, sealed, how many chunks each document had, and a
//! document that later loads with fewer is refused. Once a witness file exists the store records
//! that it does (`w`), so deleting the file is refused at open rather than silently switching
//! the check off; `Workspace::open_resetting_witness` is the explicit way to trust a store
//! whose witness is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use automerge::{ActorId, Automerge, Change, ReadDoc};

use super::layout;
use crate::authorship::{Attestation, AttestationPlace, Attestations, Decoded, SignedChanges, SignedSnapshot};
use crate::chunk::{self, BlobKind, ChunkPlace, SealingKey};
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;
use crate::keystore::Keyring;
use crate::manifest::Manifest;
use crate::store::disk::Disk;
use crate::store::{ChunkStore, RealDisk, StoreError, WriteBatch, replace_file};
use crate::untrusted::{self, load_document};

/// Largest payload of one chunk. Keeps sled values far below the size at which it writes them
/// to unsynced side files, and bounds what one damaged chunk can take with it.
const MAX_CHUNK_PAYLOAD: usize = 64 * 1024;

/// The witness file's name, and its blob id in the chunk format.
const WITNESS_FILE: &str = "witness";

/// A document in memory, with the manifest of what of it is durable.
pub(super) struct LoadedDocument {
    pub doc: Automerge,
    pub manifest: Manifest,
    /// The attestations of the document's changes, from its snapshot and tail.
    pub attestations: Attestations,
    /// Part of the log predates attestations: compaction attests this device's own changes.
    pub legacy: bool,
}

/// Who attests the changes being staged.
pub(super) enum Attest<'a> {
    /// This device, which authored them.
    Own,
    /// Their authors, whose attestations came with them.
    Received(&'a Attestations),
    /// Another identity this device holds (the recovery identity, during a restore).
    Device(&'a DeviceIdentity),
}

/// A document's log as read from the store, checked, not yet loaded into Automerge.
pub(super) struct StoredLog {
    pub manifest: Manifest,
    pub snapshot: Option<Vec<u8>>,
    pub tail: Vec<Vec<u8>>,
}

/// The store, and what it takes to seal, open and check what it holds.
pub(super) struct DocumentLog {
    pub store: Box<dyn ChunkStore>,
    /// The workspace directory (the witness lives there, beside the store).
    pub dir: PathBuf,
    pub workspace_id: [u8; 16],
    pub identity: DeviceIdentity,
    /// The device's storage key (everything is sealed under it) and the workspace keys.
    pub keyring: Keyring,
    /// The storage keys derived from the workspace key, by epoch, while the store may still
    /// hold blobs format 1 sealed under them; empty once it has moved.
    pub derived_keys: BTreeMap<u32, SecretKey>,
    /// Chunk counts per document at the last clean close or compaction.
    pub witness: BTreeMap<String, u64>,
    /// Whether the store records that it has a witness file (then a missing file is refused).
    pub witness_marked: bool,
    /// Opened to be read only (`Workspace::open_read_only`): caches are not stored back, and
    /// snapshots load with their hashes checked.
    pub read_only: bool,
}

impl DocumentLog {
    pub fn seal(&self, key: &[u8], kind: BlobKind, payload: &[u8]) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        Ok(chunk::seal_chunk(place, kind, self.keyring.storage_key(), &self.identity, payload)?)
    }

    pub fn seal_local(&self, key: &[u8], kind: BlobKind, payload: &[u8]) -> Result<Vec<u8>> {
        self.local_sealer().seal(key, kind, payload)
    }

    /// What sealing local blobs takes, for a thread of its own.
    pub fn local_sealer(&self) -> LocalSealer {
        LocalSealer { workspace_id: self.workspace_id, storage_key: self.keyring.storage_key().clone() }
    }

    /// The key a stored frame names, if this device still accepts it.
    fn key_for(&self, sealing: SealingKey) -> Option<&SecretKey> {
        match sealing {
            SealingKey::Device(chunk::DEVICE_KEY) => Some(self.keyring.storage_key()),
            SealingKey::Device(_) => None,
            SealingKey::WorkspaceEpoch(epoch) => self.derived_keys.get(&epoch),
        }
    }

    /// `bytes` (stored at `key`) sealed again under the device's storage key if format 1 sealed
    /// them under a derived key; `None` if they need no move (current, or not a sealed frame).
    /// Every chunk in a device's store was signed by that device, so it signs the moved one.
    pub fn reseal(&self, key: &[u8], bytes: &[u8]) -> Result<Option<Vec<u8>>> {
        let Ok(frame) = chunk::parse_frame(bytes) else {
            return Ok(None);
        };
        if !matches!(frame.key, SealingKey::WorkspaceEpoch(_)) {
            return Ok(None);
        }
        let document = layout::document(key);
        Ok(Some(if frame.signed {
            let payload = self.open_chunk(&document, key, bytes, frame.kind)?;
            self.seal(key, frame.kind, &payload)?
        } else {
            let payload = self.open_local(&document, key, bytes, frame.kind)?;
            self.seal_local(key, frame.kind, &payload)?
        }))
    }

    /// Opens a local blob; a manifest may also be a signed chunk, as format 1 wrote them.
    pub fn open_local(&self, document: &str, key: &[u8], bytes: &[u8], kind: BlobKind) -> Result<Vec<u8>> {
        if kind == BlobKind::Manifest && chunk::is_chunk(bytes) {
            return self.open_chunk(document, key, bytes, kind);
        }
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        chunk::open_local(bytes, place, kind, |sealing| self.key_for(sealing)).map_err(|source| Error::Chunk {
            document: document.to_owned(),
            blob: layout::describe(key),
            source,
        })
    }

    pub fn open_chunk(&self, document: &str, key: &[u8], bytes: &[u8], kind: BlobKind) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        chunk::open_chunk(bytes, place, kind, |sealing| self.key_for(sealing))
            .map(|chunk| chunk.payload)
            .map_err(|source| Error::Chunk { document: document.to_owned(), blob: layout::describe(key), source })
    }

    /// Reads a document's log with every part checked: the manifest, the snapshot it names and
    /// its tail chunks, each authentic, none missing, none stray, and not older than the witness.
    /// `None` for a document never written.
    pub fn read_log(&self, document: &str) -> Result<Option<StoredLog>> {
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
    pub fn read_manifest(&self, document: &str) -> Result<Option<Manifest>> {
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

    /// Loads a document from its checked log (empty if it has never been written); new changes
    /// made in it are `actor`'s.
    pub fn load_document(&self, document: &str, actor: &ActorId) -> Result<LoadedDocument> {
        let Some(log) = self.read_log(document)? else {
            let mut doc = Automerge::new();
            doc.set_actor(actor.clone());
            return Ok(LoadedDocument {
                doc,
                manifest: Manifest::empty(),
                attestations: Attestations::default(),
                legacy: false,
            });
        };
        let corrupt = |detail: String| Error::DocumentCorrupt { document: document.to_owned(), detail };
        let mut attestations = Attestations::default();
        let mut legacy = false;
        let mut doc = match &log.snapshot {
            // The bytes are authenticated and were saved by a device of this workspace from a
            // document it had checked; re-hashing every change here would only cost time. A
            // read-only open (an audit) checks them.
            Some(bytes) => {
                let verification = match self.read_only {
                    true => automerge::VerificationMode::Check,
                    false => automerge::VerificationMode::DontCheck,
                };
                let load = |saved: &[u8]| load_document(saved, verification).map_err(corrupt);
                match SignedSnapshot::decode(bytes).map_err(|e| corrupt(e.to_string()))? {
                    Decoded::Attested(snapshot) => {
                        let doc = load(snapshot.document)?;
                        attestations.extend(snapshot.attestations(&doc).map_err(|e| corrupt(e.to_string()))?);
                        doc
                    }
                    Decoded::Legacy => {
                        legacy = true;
                        load(bytes)?
                    }
                }
            }
            None => Automerge::new(),
        };
        let mut changes = Vec::new();
        for payload in &log.tail {
            match SignedChanges::decode(payload).map_err(|e| corrupt(e.to_string()))? {
                Decoded::Attested(signed) => {
                    attestations.extend(signed.attestations);
                    for bytes in signed.changes {
                        changes.push(untrusted::parse_change(bytes).map_err(corrupt)?);
                    }
                }
                Decoded::Legacy => {
                    legacy = true;
                    untrusted::apply_changes(&mut doc, std::mem::take(&mut changes)).map_err(corrupt)?;
                    doc.load_incremental(payload).map_err(|e| corrupt(e.to_string()))?;
                }
            }
        }
        untrusted::apply_changes(&mut doc, changes).map_err(corrupt)?;
        let missing = doc.get_missing_deps(&[]);
        if !missing.is_empty() {
            return Err(corrupt(format!("{} changes depend on history that is not stored", missing.len())));
        }
        doc.set_actor(actor.clone());
        Ok(LoadedDocument { doc, manifest: log.manifest, attestations, legacy })
    }

    /// The changes of `document` waiting in the pending area, each with its attestation.
    pub fn read_pending(&self, document: &str) -> Result<Vec<(Change, Attestation)>> {
        let corrupt = |detail: String| Error::DocumentCorrupt { document: document.to_owned(), detail };
        let mut pending = Vec::new();
        for (key, sealed) in self.store.scan_prefix(&layout::pending_prefix(document))? {
            let bytes = self.open_local(document, &key, &sealed, BlobKind::Pending)?;
            let Decoded::Attested(unit) = SignedChanges::decode(&bytes).map_err(|e| corrupt(e.to_string()))? else {
                return Err(corrupt("a pending change without its attestation".into()));
            };
            let (Some(bytes), Some(attestation)) =
                (unit.changes.into_iter().next(), unit.attestations.into_iter().next())
            else {
                return Err(corrupt("an empty pending change".into()));
            };
            pending.push((untrusted::parse_change(bytes).map_err(corrupt)?, attestation));
        }
        Ok(pending)
    }

    /// This device's attestation of `changes` of `document`, under the current key epoch.
    pub fn attest(&self, document: &str, changes: &[&Change]) -> Attestation {
        self.attest_as(&self.identity, document, changes)
    }

    fn attest_as(&self, identity: &DeviceIdentity, document: &str, changes: &[&Change]) -> Attestation {
        let place = AttestationPlace { workspace_id: &self.workspace_id, document };
        let epoch = self.keyring.workspace_key().map_or(0, |key| key.epoch);
        Attestation::sign(identity, place, epoch, changes.iter().map(|change| change.hash()).collect())
    }

    /// Seals `changes` into as few chunks as fit, each with the attestations of its changes
    /// (this device's, signed here, or the ones they arrived with), appends them to the
    /// document's tail and stages the new manifest, all into `batch`. Returns the new manifest
    /// (for the caller to keep once the batch is durable), the first chunk's sequence number
    /// and the attestations written.
    pub fn stage_changes(
        &self,
        document: &str,
        loaded: &LoadedDocument,
        changes: &[Change],
        attest: Attest<'_>,
        batch: &mut WriteBatch,
    ) -> Result<(Manifest, u64, Vec<Attestation>)> {
        let mut manifest = loaded.manifest.clone();
        manifest.events = Some(match manifest.events {
            Some(events) => events + changes.len() as u64,
            // A format-1 manifest did not count them: count once (the document holds the new ones).
            None => loaded.doc.get_changes_meta(&[]).len() as u64,
        });
        let first_seq = manifest.next_seq;
        let mut written = Vec::new();
        let mut group: Vec<&Change> = Vec::new();
        let mut group_bytes = 0;
        for (index, change) in changes.iter().enumerate() {
            group.push(change);
            group_bytes += change.raw_bytes().len();
            let next_fits =
                changes.get(index + 1).is_some_and(|next| group_bytes + next.raw_bytes().len() <= MAX_CHUNK_PAYLOAD);
            if !next_fits {
                let attestations = match attest {
                    Attest::Own => vec![self.attest(document, &group)],
                    Attest::Device(identity) => vec![self.attest_as(identity, document, &group)],
                    Attest::Received(received) => received.for_changes(group.iter().copied()),
                };
                let signed = SignedChanges {
                    changes: group.iter().map(|change| change.raw_bytes().to_vec()).collect(),
                    attestations,
                };
                let key = layout::change(document, manifest.next_seq);
                let sealed = self.seal(&key, BlobKind::Changes, &signed.encode()?)?;
                manifest.tail_bytes += sealed.len() as u64;
                batch.put(key, sealed);
                manifest.next_seq += 1;
                written.extend(signed.attestations);
                group.clear();
                group_bytes = 0;
            }
        }
        self.stage_manifest(document, &manifest, batch)?;
        Ok((manifest, first_seq, written))
    }

    pub fn stage_manifest(&self, document: &str, manifest: &Manifest, batch: &mut WriteBatch) -> Result<()> {
        let key = layout::manifest(document);
        let sealed = self.seal_local(&key, BlobKind::Manifest, &manifest.encode()?)?;
        batch.put(key, sealed);
        Ok(())
    }

    /// Stores the header and the sealed keyring as the keyring now is, durably.
    pub fn store_keyring(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(layout::HEADER, self.keyring.header());
        batch.put(layout::KEYRING, self.keyring.seal(&self.identity)?);
        self.write_durably(batch)
    }

    /// Writes `batch` and waits until it is durable.
    pub fn write_durably(&self, batch: WriteBatch) -> Result<()> {
        self.store.write(batch)?;
        self.store.sync()?;
        Ok(())
    }

    /// Reads the witness. A store that records having had one refuses to open without it:
    /// deleting the file must not switch the rollback check off.
    pub fn read_witness(&mut self) -> Result<()> {
        self.witness_marked = match self.store.get(layout::WITNESS_MARK)? {
            Some(sealed) => {
                self.open_local(WITNESS_FILE, layout::WITNESS_MARK, &sealed, BlobKind::Manifest)?;
                true
            }
            None => false,
        };
        let path = self.dir.join(WITNESS_FILE);
        let sealed = match RealDisk.read(&path) {
            Ok(sealed) => sealed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.witness_marked => {
                return Err(Error::WitnessMissing { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::from(e).into()),
        };
        let bytes = self.open_chunk(WITNESS_FILE, WITNESS_FILE.as_bytes(), &sealed, BlobKind::Manifest)?;
        self.witness = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(StoreError::Corrupt { detail: format!("witness: {e}") }))?;
        Ok(())
    }

    /// Records the chunk counts of `manifests` (all durable) in the witness file, atomically,
    /// and then, once, in the store that it has a witness. Nothing is written while every count
    /// is zero (an `init` that failed): there is nothing to protect yet.
    pub fn write_witness<'a>(&mut self, manifests: impl IntoIterator<Item = (&'a String, &'a Manifest)>) -> Result<()> {
        for (name, manifest) in manifests {
            let count = self.witness.entry(name.clone()).or_default();
            *count = (*count).max(manifest.next_seq);
        }
        if self.witness.values().all(|&count| count == 0) {
            return Ok(());
        }
        let bytes = crate::encode::json(&self.witness, "witness")?;
        let sealed = self.seal(WITNESS_FILE.as_bytes(), BlobKind::Manifest, &bytes)?;
        replace_file(&RealDisk, &self.dir, WITNESS_FILE, &sealed).map_err(|e| StoreError::io(e, &self.dir))?;
        if !self.witness_marked {
            // Only after the file is durable: a store must never claim a witness that is not there.
            let mut batch = WriteBatch::default();
            batch.put(layout::WITNESS_MARK, self.seal_local(layout::WITNESS_MARK, BlobKind::Manifest, b"witness")?);
            self.write_durably(batch)?;
            self.witness_marked = true;
        }
        Ok(())
    }
}

/// Whether `dir` has a witness file. Only a complete workspace ever writes one (an `init` cut
/// short has nothing to record), so beside an empty store it means the store was lost.
pub(super) fn has_witness(dir: &Path) -> bool {
    witness_path(dir).exists()
}

pub(super) fn witness_path(dir: &Path) -> PathBuf {
    dir.join(WITNESS_FILE)
}

/// Seals local blobs (views, event indexes, manifests) under the device's storage key.
pub struct LocalSealer {
    workspace_id: [u8; 16],
    storage_key: SecretKey,
}

impl LocalSealer {
    pub fn seal(&self, key: &[u8], kind: BlobKind, payload: &[u8]) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        Ok(chunk::seal_local(place, kind, &self.storage_key, payload)?)
    }
}
