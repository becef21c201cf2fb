//! Restore points: the whole workspace as compacted snapshots, each with the attestations of
//! every change it holds, sealed under the **snapshot key** of the current epoch and signed by
//! the device that made it — what the relay keeps as a backup, opaque to it.
//!
//! ```text
//! blob     = "ADVR" | version u8 (=2) | workspace id 16 | frame
//! frame    = a bundle frame sealed under the snapshot key, blob id "relay/restore-point/2"
//! payload  = point id 16 | index u32 LE | count u32 LE | coverage length u32 LE | coverage
//!            | parts (as a relay unit's) | zeros up to the blob's size bucket
//! coverage = JSON: the relay's sequence number the maker had imported up to, per document
//!            the heads the relay held and how many changes they cover, and the units up to
//!            that number it held back (written only when there are any)
//! part     = a document's name and its `SignedSnapshot`
//! ```
//!
//! Version 1 (blob id "relay/restore-point", no coverage) still opens. A restore point is
//! `count` blobs (each at most 16 MiB; a document is never split), numbered within the point:
//! one missing, repeated, from another point or another workspace, altered or cut is a typed
//! error before anything is imported.
//!
//! Applying one brings back whatever this device lacks and changes nothing it already has. A
//! document this device has never stored is **adopted** whole: its snapshot loads (every change
//! hash checked by Automerge), every change is checked as an import checks it (envelope,
//! attestation, device list), and the snapshot is stored as the document's first one, with its
//! read view and event index, without replaying a change. Any other document, or one whose
//! check finds a fault, imports change by change through [`Workspace::import_changes`].
//!
//! The **coverage** lets a restore onto an empty directory pull from the relay only the units
//! after the point: the maker had imported every unit up to `cursor` but those it held back
//! because they do not open (which the restored device holds back in turn, and retries), and
//! kept nothing aside (with changes in its pending area the cursor is 0, and a restore pulls
//! every unit).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};

use adiuva_model::DeviceId;
use automerge::{Automerge, ChangeMetadata, ReadDoc, VerificationMode};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::devices::DeviceList;
use super::log::LoadedDocument;
use super::relay::{RELAY_FRAME_PREFIX, RelayFrame, decode_parts, encode_parts};
use super::sync::{self, Imported};
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::authorship::{Attestations, ChangeNames, Decoded, SignedChanges, SignedSnapshot};
use crate::chunk::BlobKind;
use crate::cores::{self, Spread};
use crate::crypto::{KeyPurpose, WorkspaceKey, random_bytes};
use crate::error::{Error, Result, json_error};
use crate::event_index::{EventIndex, IndexedEvent};
use crate::manifest::{Manifest, SnapshotRef};
use crate::store::{StoreError, WriteBatch};
use crate::untrusted::load_document;
use crate::view::RecordView;

/// How a restore point's blob starts.
const RESTORE_POINT_MAGIC: &[u8; 4] = b"ADVR";
pub(super) const RESTORE_POINT_FRAME: RelayFrame = RelayFrame {
    magic: RESTORE_POINT_MAGIC,
    version: 2,
    blob_id: b"relay/restore-point/2",
    purpose: KeyPurpose::Snapshots,
    noun: "restore point",
};
/// Restore points made before the coverage: the version byte and the blob id both differ, so
/// one cannot be passed off as the other.
const RESTORE_POINT_FRAME_V1: RelayFrame =
    RelayFrame { version: 1, blob_id: b"relay/restore-point", ..RESTORE_POINT_FRAME };
/// What a blob adds to its payload: prefix, frame header, nonce, tag, signer and signature.
const OVERHEAD: usize = RELAY_FRAME_PREFIX + 10 + 24 + 16 + 32 + 64;
/// The payload's point id, index, count and coverage length, and the parts' count.
const HEADER: usize = 16 + 4 + 4 + 4 + 4;
const SMALLEST: usize = 1024;
const LARGEST: usize = 16 * 1024 * 1024;
/// The chunk sequence number an adopted document's log continues from: its snapshot stands for
/// one folded chunk, so the witness counts the document from the start.
const ADOPTED_NEXT_SEQ: u64 = 1;

/// A restore point made by [`Workspace::restore_point`].
pub struct RestorePoint {
    /// Its blobs, in order.
    pub blobs: Vec<Vec<u8>>,
    pub documents: usize,
}

/// What of a relay's sequence a restore point holds (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayCoverage {
    /// Every unit up to this number of the relay's sequence is in the point, but those held.
    pub cursor: u64,
    /// Per document, heads the relay held (hex change hashes).
    pub acked: BTreeMap<String, BTreeSet<String>>,
    /// Per document, how many changes those heads cover.
    pub acked_events: BTreeMap<String, u64>,
    /// Units up to the cursor that did not open for the point's maker (see
    /// [`HeldUnit`](super::HeldUnit)): a device restored from the point holds them back too,
    /// and tries each again at every sync. Written only when there are any, so a point without
    /// them reads in builds from before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<u64, super::HeldUnit>,
}

/// One blob of a restore point, opened and checked.
pub struct OpenedBlob {
    pub signer: DeviceId,
    pub point: [u8; 16],
    pub index: u32,
    pub count: u32,
    pub coverage: RelayCoverage,
    pub parts: Vec<(String, Vec<u8>)>,
}

/// Every blob of one restore point, opened and checked together (see [`open_restore_point`]);
/// its signers are checked against the device list when it is applied. Its documents other
/// than the root load on one thread per core from the moment it is opened, so loading overlaps
/// what comes before applying them (a restore's pull and root) and each other's writes. Once
/// the root has brought the device list, the loaders also check each document this device
/// never stored for adoption and make its read view. (Applying keeps every document it adopts
/// loaded anyway.)
pub struct OpenedPoint {
    signers: BTreeSet<DeviceId>,
    coverage: RelayCoverage,
    root: Vec<u8>,
    /// The documents the loaders send, in the point's order.
    names: Vec<String>,
    /// The loaders' documents, dealt to them in the point's order.
    loaded: cores::Dealt<LoadedPart>,
    /// One per loader: what to check for adoption. Dropped unsent, the loaders only load.
    checks: Vec<Sender<Arc<AdoptionChecks>>>,
}

/// A document of a restore point: its name, its part (an encoded [`SignedSnapshot`]), and the
/// part decoded, loaded and, if asked for, checked for adoption.
type LoadedPart = (String, Vec<u8>, Result<WholeDocument>);

/// The device list the root brought, and the documents to check against it for adoption.
struct AdoptionChecks {
    list: DeviceList,
    documents: BTreeSet<String>,
}

impl OpenedPoint {
    /// The relay's sequence number up to which the point holds every unit (0: none).
    pub fn relay_cursor(&self) -> u64 {
        self.coverage.cursor
    }

    pub(super) fn coverage(&self) -> &RelayCoverage {
        &self.coverage
    }

    /// The point's root document as the signed changes of an import.
    pub(super) fn root_changes(&self) -> Result<Vec<u8>> {
        let (doc, attestations) = decode_snapshot(ROOT_DOCUMENT, &self.root)?;
        changes_of(&doc, &attestations)
    }
}

/// Whether `bytes` is a blob of a restore point (rather than a relay unit).
pub fn is_restore_point(bytes: &[u8]) -> bool {
    bytes.starts_with(RESTORE_POINT_MAGIC)
}

/// Opens every blob of a restore point with `keys` (workspace, epoch, authentication,
/// signature) and checks that they are the parts of one point, each once and in order. Pure.
pub fn open_restore_point(workspace_id: &[u8; 16], keys: &[WorkspaceKey], blobs: &[Vec<u8>]) -> Result<OpenedPoint> {
    let mut point = None;
    let (mut signers, mut coverage, mut parts) = (BTreeSet::new(), RelayCoverage::default(), Vec::new());
    for (index, blob) in blobs.iter().enumerate() {
        let name = format!("restore point part {}", index + 1);
        let malformed = |detail: &str| Error::UnitMalformed { unit: name.clone(), detail: detail.to_owned() };
        let opened = open_restore_blob_bytes(&name, workspace_id, keys, blob)?;
        if *point.get_or_insert(opened.point) != opened.point {
            return Err(malformed("a part of another restore point"));
        }
        if opened.index as usize != index || opened.count as usize != blobs.len() {
            return Err(malformed(&format!(
                "part {} of {} where part {} of {} was due",
                opened.index + 1,
                opened.count,
                index + 1,
                blobs.len()
            )));
        }
        if index == 0 {
            coverage = opened.coverage;
        } else if opened.coverage != coverage {
            return Err(malformed("its coverage differs from the first part's"));
        }
        signers.insert(opened.signer);
        parts.extend(opened.parts);
    }
    let malformed = |detail: &str| Error::UnitMalformed { unit: "restore point".into(), detail: detail.to_owned() };
    let root = match parts.iter().position(|(document, _)| document == ROOT_DOCUMENT) {
        Some(at) => parts.remove(at).1,
        None => return Err(malformed("it holds no root document")),
    };
    if parts.iter().any(|(document, _)| document == ROOT_DOCUMENT) {
        return Err(malformed("it holds the root document twice"));
    }
    let names: Vec<String> = parts.iter().map(|(document, _)| document.clone()).collect();
    let loaders = cores::count().min(names.len()).max(1);
    let (mut loaded, mut checks) = (Vec::with_capacity(loaders), Vec::with_capacity(loaders));
    let workspace_id = *workspace_id;
    for share in cores::deal(parts, loaders) {
        let (sender, receiver) = channel();
        let (checks_sender, checks_receiver) = channel::<Arc<AdoptionChecks>>();
        std::thread::Builder::new()
            .name("restore-point-load".into())
            .spawn(move || {
                // Waited for once the first document is loaded; `None` if none is coming.
                let mut asked: Option<Option<Arc<AdoptionChecks>>> = None;
                for (document, bytes) in share {
                    let loaded = decode_snapshot(&document, &bytes);
                    let asked = asked.get_or_insert_with(|| checks_receiver.recv().ok());
                    let list = asked.as_deref().filter(|c| c.documents.contains(&document)).map(|c| &c.list);
                    // Their views spread over the cores: these loaders wait for the root, then
                    // finish unevenly, and kept to their own threads a restore measured slower.
                    let whole = loaded.and_then(|loaded| {
                        WholeDocument::checked(&workspace_id, list, &document, loaded, Spread::AcrossCores)
                    });
                    // Nobody waits any more: the point was dropped.
                    if sender.send((document, bytes, whole)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Store(StoreError::from(e)))?;
        loaded.push(receiver);
        checks.push(checks_sender);
    }
    Ok(OpenedPoint { signers, coverage, root, names, loaded: cores::Dealt::new(loaded), checks })
}

impl Workspace {
    /// The workspace as a restore point: every document compacted, with its attestations, and
    /// what of `relay`'s sequence it covers.
    pub fn restore_point(&mut self, relay: &str) -> Result<RestorePoint> {
        // Changes kept aside (waiting for dependencies, or a removed device's) are in no
        // snapshot: with any, a restore must pull every unit to find them again.
        let coverage = match self.pending_count()? {
            0 => self.relay_coverage(relay)?,
            _ => RelayCoverage::default(),
        };
        let coverage = crate::encode::json(&coverage, "restore point coverage")?;
        let mut names = self.document_names()?;
        // The root first: importing it first admits the devices the rest was written by.
        names.sort_by_key(|name| name.as_str() != ROOT_DOCUMENT);
        let mut parts = Vec::new();
        for name in names {
            let snapshot = self.signed_snapshot(&name)?;
            parts.push((name, snapshot));
        }
        let documents = parts.len();
        let fixed = HEADER + coverage.len() + OVERHEAD;
        let mut groups: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new()];
        let mut group_bytes = 0;
        for (name, snapshot) in parts {
            let bytes = name.len() + snapshot.len() + 6;
            if bytes + fixed > LARGEST {
                return Err(Error::UnitTooLarge { document: name, bytes });
            }
            if group_bytes + bytes + fixed > LARGEST && groups.last().is_some_and(|group| !group.is_empty()) {
                groups.push(Vec::new());
                group_bytes = 0;
            }
            group_bytes += bytes;
            if let Some(group) = groups.last_mut() {
                group.push((name, snapshot));
            }
        }
        let point_id: [u8; 16] = random_bytes()?;
        let count = groups.len() as u32;
        let blobs = groups
            .iter()
            .enumerate()
            .map(|(index, group)| self.seal_restore_blob(&point_id, index as u32, count, &coverage, group))
            .collect::<Result<_>>()?;
        Ok(RestorePoint { blobs, documents })
    }

    /// `document` whole: the saved Automerge document with the attestations of every change
    /// (an encoded [`SignedSnapshot`]), as a restore point holds it and as a peer holding
    /// nothing of the document receives it.
    ///
    /// Nothing written since the document's last compaction, its stored snapshot is exactly
    /// that, and is sent as stored: opening it costs a fraction of saving the document again.
    pub(super) fn signed_snapshot(&mut self, document: &str) -> Result<Vec<u8>> {
        if self.document(document)?.legacy {
            // Refused, naming the change written before attestations (`upgrade` attests it).
            self.export_changes(document, &[])?;
        }
        let loaded = self.loaded(document)?;
        let manifest = &loaded.manifest;
        if let Some(snapshot) = manifest.snapshot
            && manifest.tail_start == manifest.next_seq
        {
            let key = layout::snapshot(document, snapshot.generation);
            let sealed = self
                .log
                .store
                .get(&key)
                .map_err(|source| Error::DocumentStore { document: document.to_owned(), source })?;
            let sealed = sealed.ok_or_else(|| Error::SnapshotMissing {
                document: document.to_owned(),
                generation: snapshot.generation,
            })?;
            return self.log.open_chunk(document, &key, &sealed, BlobKind::Snapshot);
        }
        let names = ChangeNames::of(&loaded.doc);
        SignedSnapshot { attestations: loaded.attestations.all().to_vec(), document: loaded.doc.save() }.encode(&names)
    }

    fn seal_restore_blob(
        &self,
        point: &[u8; 16],
        index: u32,
        count: u32,
        coverage: &[u8],
        parts: &[(String, Vec<u8>)],
    ) -> Result<Vec<u8>> {
        let what = "restore point";
        let mut payload = Vec::new();
        payload.extend_from_slice(point);
        payload.extend_from_slice(&index.to_le_bytes());
        payload.extend_from_slice(&count.to_le_bytes());
        payload.extend_from_slice(&crate::encode::length_u32(coverage.len(), what)?);
        payload.extend_from_slice(coverage);
        payload.extend(encode_parts(parts, what)?);
        let bucket = (payload.len() + OVERHEAD).max(SMALLEST).next_power_of_two();
        payload.resize(bucket - OVERHEAD, 0);
        let current =
            self.log.keyring.workspace_key().ok_or(Error::WorkspaceFormat { detail: "no workspace key".into() })?;
        RESTORE_POINT_FRAME.seal(&self.log.workspace_id, current, &self.log.identity, &payload)
    }

    /// Checks every blob of a restore point (format, workspace, epoch, authentication,
    /// signature by a device of the list, numbering within one point), then applies it (see
    /// [`Self::apply_opened_point`]). Nothing is imported unless every blob passed.
    pub fn apply_restore_point(&mut self, blobs: &[Vec<u8>]) -> Result<Imported> {
        let point = open_restore_point(&self.log.workspace_id, self.log.keyring.workspace_keys(), blobs)?;
        let mut imported = self.import_changes(ROOT_DOCUMENT, &point.root_changes()?)?;
        imported.add(self.apply_opened_point(point)?);
        Ok(imported)
    }

    /// Applies the documents of an opened restore point other than the root (which the caller
    /// imported first: it holds the device list), once every signer is found in the device
    /// list: each adopted if this device never stored it, else imported change by change.
    pub(super) fn apply_opened_point(&mut self, point: OpenedPoint) -> Result<Imported> {
        let list = self.device_list()?;
        if let Some(signer) = point.signers.iter().find(|signer| !list.devices.contains_key(signer)) {
            return Err(Error::DeviceUnknown { device: signer.to_string(), document: None, change: None });
        }
        // The documents this device never stored are checked for adoption as they load.
        let mut fresh = BTreeSet::new();
        for document in &point.names {
            if self.never_stored(document)? {
                fresh.insert(document.clone());
            }
        }
        let checks = Arc::new(AdoptionChecks { list, documents: fresh });
        for loader in &point.checks {
            // A loader that ended early is found below, by what it did not send.
            let _ = loader.send(checks.clone());
        }
        let mut imported = Imported::default();
        let mut received = 0;
        let documents = point.names.len();
        let mut loaded = point.loaded;
        while received < documents {
            let Some((document, bytes, whole)) = loaded.next() else { break };
            received += 1;
            imported.add(self.take_snapshot(&document, &bytes, whole?)?);
        }
        if received != documents {
            // Only a panic while loading ends a loader early.
            return Err(Error::UnitMalformed {
                unit: "restore point".into(),
                detail: format!("{} of its {} documents did not load", documents - received, documents),
            });
        }
        Ok(imported)
    }

    /// Takes in `document` whole (`doc`, loaded from `snapshot`, an encoded [`SignedSnapshot`]):
    /// adopted as it is if this device never stored the document and every change passes the
    /// checks of an import, else imported change by change, which keeps aside or refuses
    /// exactly as any import does.
    pub(super) fn take_snapshot(&mut self, document: &str, snapshot: &[u8], whole: WholeDocument) -> Result<Imported> {
        let WholeDocument { doc, attestations, precheck } = whole;
        let adoption = match precheck {
            _ if !self.never_stored(document)? => None,
            Precheck::Adoptable { events, view } => Some((events, Some(view))),
            Precheck::Faulty => None,
            Precheck::NotMade => {
                let list = self.device_list()?;
                adoptable(&self.log.workspace_id, &list, document, &doc, &attestations).map(|events| (events, None))
            }
        };
        let Some((events, view)) = adoption else {
            return self.import_changes(document, &changes_of(&doc, &attestations)?);
        };
        let applied = events.len();
        self.adopt(document, snapshot, doc, attestations, events, view)?;
        Ok(Imported { applied, ..Imported::default() })
    }

    /// Whether nothing of `document` is stored or loaded (a document loaded empty, as a peer
    /// session loads one to say it holds none of it, counts as nothing).
    pub(super) fn never_stored(&self, document: &str) -> Result<bool> {
        let loaded_empty = self.docs.get(document).is_none_or(|loaded| loaded.doc.get_heads().is_empty());
        Ok(loaded_empty && self.log.read_manifest(document)?.is_none())
    }

    /// Stores `doc`, loaded from `snapshot` (an encoded [`SignedSnapshot`]) and checked by
    /// [`adoptable`], as the first snapshot of `document`, with its read view (`view` if it was
    /// made already) and event index.
    fn adopt(
        &mut self,
        document: &str,
        snapshot: &[u8],
        mut doc: Automerge,
        attestations: Attestations,
        events: Vec<IndexedEvent>,
        view: Option<RecordView>,
    ) -> Result<()> {
        let count = events.len();
        self.register_if_new(document)?;
        let mut manifest = Manifest::empty();
        manifest.tail_start = ADOPTED_NEXT_SEQ;
        manifest.next_seq = ADOPTED_NEXT_SEQ;
        manifest.events = Some(count as u64);
        let key = layout::snapshot(document, 1);
        let sealed = self.log.seal(&key, BlobKind::Snapshot, snapshot)?;
        manifest.snapshot = Some(SnapshotRef { generation: 1, bytes: sealed.len() as u64 });
        let index = EventIndex { first_seq: 0, next_seq: ADOPTED_NEXT_SEQ, events };
        let view = match view {
            Some(view) => view,
            None => RecordView::materialize(&doc, ADOPTED_NEXT_SEQ, Spread::AcrossCores)?,
        };
        let mut batch = WriteBatch::default();
        batch.put(key, sealed);
        self.log.stage_manifest(document, &manifest, &mut batch)?;
        self.stage_index_base(document, &index, &mut batch)?;
        self.stage_view(document, &view, &mut batch)?;
        self.log.write_durably(batch)?;
        doc.set_actor(self.actor.clone());
        let loaded = LoadedDocument { doc, manifest, attestations, legacy: false };
        self.docs.insert(document.to_owned(), loaded);
        self.views.insert(document.to_owned(), view);
        self.write_witness()?;
        debug!(document, events = count, "adopted whole");
        Ok(())
    }
}

/// A document received whole: loaded, with its attestations and what was checked of it as it
/// loaded (off the thread that adopts it).
pub(super) struct WholeDocument {
    pub doc: Automerge,
    pub attestations: Attestations,
    pub precheck: Precheck,
}

/// The checks of adoption, made as a document received whole loaded, against the device list
/// the round was taken in with.
pub(super) enum Precheck {
    /// Left to the adopting thread.
    NotMade,
    /// A check found a fault: the document imports change by change.
    Faulty,
    /// Every change passed: the document's event index and read view.
    Adoptable { events: Vec<IndexedEvent>, view: RecordView },
}

/// Loads a document received whole; with `list` (the document is to be adopted: this device
/// never stored it), checks it for adoption and makes its read view too.
pub(super) fn load_whole(
    workspace_id: &[u8; 16],
    list: Option<&DeviceList>,
    document: &str,
    bytes: &[u8],
    spread: Spread,
) -> Result<WholeDocument> {
    WholeDocument::checked(workspace_id, list, document, decode_snapshot(document, bytes)?, spread)
}

impl WholeDocument {
    /// `doc` as loaded; with `list` (the document is to be adopted: this device never stored
    /// it), checked for adoption, with its read view made if it passed (spread as `spread`
    /// allows: not when documents load on a thread per core).
    fn checked(
        workspace_id: &[u8; 16],
        list: Option<&DeviceList>,
        document: &str,
        (doc, attestations): (Automerge, Attestations),
        spread: Spread,
    ) -> Result<Self> {
        let precheck = match list.map(|list| adoptable(workspace_id, list, document, &doc, &attestations)) {
            None => Precheck::NotMade,
            Some(None) => Precheck::Faulty,
            Some(Some(events)) => {
                Precheck::Adoptable { events, view: RecordView::materialize(&doc, ADOPTED_NEXT_SEQ, spread)? }
            }
        };
        Ok(Self { doc, attestations, precheck })
    }
}

/// The event index of `doc` (of `document`), if every change passes the checks of an import
/// against `list` and none lacks a dependency: then it can be adopted. `None` if a check finds
/// a fault: the caller imports change by change, which keeps aside or refuses exactly as any
/// import does.
fn adoptable(
    workspace_id: &[u8; 16],
    list: &DeviceList,
    document: &str,
    doc: &Automerge,
    attestations: &Attestations,
) -> Option<Vec<IndexedEvent>> {
    let metas: Vec<ChangeMetadata<'_>> = doc.get_changes_meta(&[]);
    let (faults, checked) = sync::authorship_faults(workspace_id, list, document, metas, attestations);
    if !faults.is_empty() || !doc.get_missing_deps(&[]).is_empty() {
        debug!(document, faults = faults.len(), "a document received whole imports change by change");
        return None;
    }
    Some(
        checked
            .into_iter()
            .map(|received| IndexedEvent {
                change: received.change.hash,
                envelope: received.change.message.as_deref().unwrap_or_default().into(),
            })
            .collect(),
    )
}

/// Every change of `doc` with its attestations, as the [`SignedChanges`] of an import.
fn changes_of(doc: &Automerge, attestations: &Attestations) -> Result<Vec<u8>> {
    let changes = doc.get_changes(&[]);
    SignedChanges {
        attestations: attestations.all().to_vec(),
        changes: changes.iter().map(|change| change.raw_bytes().to_vec()).collect(),
    }
    .encode()
}

/// A document whole (a restore point's part, a peer's answer to a device holding none of it):
/// loaded (every change hash checked), with its attestations.
pub(super) fn decode_snapshot(document: &str, bytes: &[u8]) -> Result<(Automerge, Attestations)> {
    let malformed =
        |detail: &str| Error::UnitMalformed { unit: format!("snapshot of {document}"), detail: detail.to_owned() };
    let Ok(Decoded::Attested(snapshot)) = SignedSnapshot::decode(bytes) else {
        return Err(malformed("not a signed snapshot"));
    };
    let doc = load_document(snapshot.document, VerificationMode::Check)
        .map_err(|_| malformed("not an Automerge document"))?;
    let mut attestations = Attestations::default();
    attestations.extend(snapshot.attestations(&doc).map_err(|error| malformed(error.0))?);
    Ok((doc, attestations))
}

/// One blob of a restore point opened with the snapshot keys of `keys` (workspace, epoch,
/// authentication and signature checked): its signer, point id, index, count, coverage and
/// parts. Pure; never panics.
pub(super) fn open_restore_blob_bytes(
    name: &str,
    workspace_id: &[u8; 16],
    keys: &[WorkspaceKey],
    blob: &[u8],
) -> Result<OpenedBlob> {
    let malformed = |detail: &str| Error::UnitMalformed { unit: name.to_owned(), detail: detail.to_owned() };
    let frame = match blob.get(4) {
        Some(1) => &RESTORE_POINT_FRAME_V1,
        _ => &RESTORE_POINT_FRAME,
    };
    let opened = frame.open(name, workspace_id, &frame.keys(keys), blob)?;
    let payload = opened.payload.as_slice();
    let (point, rest) = payload.split_at_checked(16).ok_or_else(|| malformed("truncated"))?;
    let (index, rest) = rest.split_at_checked(4).ok_or_else(|| malformed("truncated"))?;
    let (count, mut rest) = rest.split_at_checked(4).ok_or_else(|| malformed("truncated"))?;
    let point: [u8; 16] = point.try_into().map_err(|_| malformed("truncated"))?;
    let index = u32::from_le_bytes(index.try_into().map_err(|_| malformed("truncated"))?);
    let count = u32::from_le_bytes(count.try_into().map_err(|_| malformed("truncated"))?);
    let mut coverage = RelayCoverage::default();
    if frame.version >= 2 {
        let (length, after) = rest.split_at_checked(4).ok_or_else(|| malformed("truncated"))?;
        let length = u32::from_le_bytes(length.try_into().map_err(|_| malformed("truncated"))?) as usize;
        let (json, after) = after.split_at_checked(length).ok_or_else(|| malformed("truncated"))?;
        coverage = serde_json::from_slice(json).map_err(|e| malformed(&format!("its coverage {}", json_error(&e))))?;
        rest = after;
    }
    Ok(OpenedBlob { signer: opened.signer, point, index, count, coverage, parts: decode_parts(rest, name)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::identity::DeviceIdentity;

    const WORKSPACE: [u8; 16] = [9; 16];

    fn sealer() -> (WorkspaceKey, DeviceIdentity) {
        let key = WorkspaceKey { epoch: 1, key: SecretKey::from_bytes([7; 32]) };
        let identity =
            DeviceIdentity::from_secret_bytes(zeroize::Zeroizing::new([3; 32]), zeroize::Zeroizing::new([4; 32]));
        (key, identity)
    }

    /// A payload's header: point id, part 1 of 1.
    fn header() -> Vec<u8> {
        [[5; 16].as_slice(), &0u32.to_le_bytes(), &1u32.to_le_bytes()].concat()
    }

    #[test]
    fn a_version_1_point_opens_without_coverage_and_a_relabelled_version_2_point_does_not() {
        let (key, identity) = sealer();
        // Opening reads the root's bytes as they are: applying them is what checks them.
        let parts = encode_parts(&[(ROOT_DOCUMENT.to_owned(), b"root".to_vec())], "test").unwrap();
        let v1 = RESTORE_POINT_FRAME_V1.seal(&WORKSPACE, &key, &identity, &[header(), parts.clone()].concat()).unwrap();
        let opened = open_restore_point(&WORKSPACE, std::slice::from_ref(&key), &[v1]).unwrap();
        assert_eq!(opened.relay_cursor(), 0);

        let coverage = RelayCoverage { cursor: 42, ..RelayCoverage::default() };
        let json = crate::encode::json(&coverage, "test").unwrap();
        let length = (json.len() as u32).to_le_bytes();
        let payload = [header(), length.to_vec(), json, parts].concat();
        let mut v2 = RESTORE_POINT_FRAME.seal(&WORKSPACE, &key, &identity, &payload).unwrap();
        let opened = open_restore_point(&WORKSPACE, std::slice::from_ref(&key), std::slice::from_ref(&v2)).unwrap();
        assert_eq!(opened.relay_cursor(), 42);
        // Read as version 1, its coverage would pass for parts: the blob id binds the version.
        v2[4] = 1;
        let error = open_restore_point(&WORKSPACE, std::slice::from_ref(&key), &[v2]).err().unwrap();
        assert!(matches!(error, Error::UnitCorrupt { .. }), "{error}");
    }

    #[test]
    fn a_coverage_that_is_not_json_or_runs_past_the_payload_is_a_typed_error() {
        let (key, identity) = sealer();
        for (length, json) in [(8u32, b"not json".as_slice()), (u32::MAX, b"{}".as_slice())] {
            let payload = [header(), length.to_le_bytes().to_vec(), json.to_vec()].concat();
            let blob = RESTORE_POINT_FRAME.seal(&WORKSPACE, &key, &identity, &payload).unwrap();
            let error = open_restore_point(&WORKSPACE, std::slice::from_ref(&key), &[blob]).err().unwrap();
            assert!(matches!(error, Error::UnitMalformed { .. }), "{error}");
        }
        let error = open_restore_point(&WORKSPACE, &[key], &[]).err().unwrap();
        assert!(matches!(error, Error::UnitMalformed { .. }), "{error}");
    }
}
