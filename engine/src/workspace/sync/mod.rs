//! Sync primitives: a document's heads, the changes a peer lacks as a signed unit, and signed
//! units received from another device checked and applied durably.
//!
//! What crosses between devices is a [`SignedChanges`]: the changes with their authors'
//! attestations, never re-signed on the way. [`Workspace::import_changes`] trusts nothing of
//! the sender: every change must carry a valid envelope and be covered by an attestation that
//! verifies, whose signer is the envelope's `device` and owns the change's Automerge actor,
//! and which the device list authorizes (see `devices`). Any failure refuses the whole unit
//! with a typed error and nothing is applied.
//!
//! A change whose dependencies have not arrived yet is kept in the **pending area**
//! (`p/DOC\0HASH`, a local blob with its attestation) in the same batch as the rest of its
//! import, and applied by the import that brings what it lacks: it survives a restart, and
//! Automerge's own queue of orphans (lost at exit, and folded into a saved snapshot) is never
//! used.
//!
//! For transport, [`Workspace::export_bundle`] seals such a unit under the bundle key of the
//! current key epoch (the epoch is in the frame), and the sending device signs the frame inside
//! the ciphertext; [`Workspace::import_bundle`] opens it with whichever epoch it names.

use std::collections::{BTreeSet, HashMap, HashSet};

use adiuva_model::{Collection, DeviceId, Envelope, EventKind};
use automerge::{Automerge, Change, ChangeHash, ChangeMetadata, ReadDoc};
use chrono::{DateTime, Utc};

use super::commit::Operation;
use super::devices::DeviceList;
use super::log::Attest;
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::authorship::{AttestationPlace, Attestations, Decoded, SignedChanges};
use crate::chunk::{self, BlobKind, ChunkPlace, SealingKey};
use crate::crypto::{KeyPurpose, SecretKey, WorkspaceKey};
use crate::error::{Error, Result};
use crate::records;
use crate::store::WriteBatch;
use crate::untrusted;

/// What one import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Changes applied and stored.
    pub applied: usize,
    /// Changes kept in the pending area until their dependencies arrive.
    pub pending: usize,
    /// Changes refused as a removed device's, beyond what its removal accepted
    /// ([`Error::DeviceRemoved`]), or as written under an epoch not (yet) given to their
    /// device ([`Error::EpochNotMember`]), each naming its change: not applied, kept aside in
    /// the pending area in case an amendment accepts them or the root change that gives the
    /// epoch.
    pub refused: Vec<Error>,
}

impl Imported {
    /// Adds what another import did.
    pub(super) fn add(&mut self, other: Imported) {
        self.applied += other.applied;
        self.pending += other.pending;
        self.refused.extend(other.refused);
    }
}

/// A received change, checked: its envelope decodes and an attestation that verifies covers it.
pub(super) struct Received<C = Change> {
    pub change: C,
    pub kind: EventKind,
    /// When its envelope says it was written.
    pub time: DateTime<Utc>,
}

/// What the checks of a change read of it. A change parsed from bytes has it all, and so does
/// the metadata of a change a loaded document holds, which costs little to list where
/// materializing the change would encode it again (the audit reads every change there is).
pub(super) trait ChangeFacts {
    fn hash(&self) -> ChangeHash;
    fn seq(&self) -> u64;
    fn deps(&self) -> &[ChangeHash];
    fn message(&self) -> Option<&str>;
    fn actor_bytes(&self) -> &[u8];
}

impl ChangeFacts for Change {
    fn hash(&self) -> ChangeHash {
        Change::hash(self)
    }
    fn seq(&self) -> u64 {
        Change::seq(self)
    }
    fn deps(&self) -> &[ChangeHash] {
        Change::deps(self)
    }
    fn message(&self) -> Option<&str> {
        Change::message(self)
    }
    fn actor_bytes(&self) -> &[u8] {
        self.actor_id().to_bytes()
    }
}

impl ChangeFacts for ChangeMetadata<'_> {
    fn hash(&self) -> ChangeHash {
        self.hash
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn deps(&self) -> &[ChangeHash] {
        &self.deps
    }
    fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    fn actor_bytes(&self) -> &[u8] {
        self.actor.to_bytes()
    }
}

impl Workspace {
    /// The current heads of a document.
    pub fn heads(&mut self, document: &str) -> Result<Vec<ChangeHash>> {
        Ok(self.document(document)?.doc.get_heads())
    }

    /// The changes of `document` that a peer with `since` heads lacks, with their authors'
    /// attestations, encoded as a [`SignedChanges`] (what a sync bundle carries inside its
    /// encryption).
    pub fn export_changes(&mut self, document: &str, since: &[ChangeHash]) -> Result<Vec<u8>> {
        let changes = self.document(document)?.doc.get_changes(since);
        self.signed_unit(document, &changes)
    }

    /// The changes of `document` with these hashes, with their authors' attestations: what a
    /// peer running the Automerge sync protocol sends beside the changes a sync message
    /// carries, so the receiver checks them as [`Self::import_changes`] does.
    pub fn export_changes_by_hash(&mut self, document: &str, hashes: &[ChangeHash]) -> Result<Vec<u8>> {
        let doc = &self.document(document)?.doc;
        let changes = hashes
            .iter()
            .map(|hash| {
                doc.get_change_by_hash(hash)
                    .ok_or_else(|| Error::InvalidInput { detail: format!("document {document} has no change {hash}") })
            })
            .collect::<Result<Vec<_>>>()?;
        self.signed_unit(document, &changes)
    }

    pub(super) fn signed_unit(&self, document: &str, changes: &[Change]) -> Result<Vec<u8>> {
        let loaded = self.loaded(document)?;
        if let Some(unsigned) = changes.iter().find(|change| loaded.attestations.covering(&change.hash()).is_none()) {
            return Err(Error::ChangeUnsigned {
                document: document.to_owned(),
                change: format!("{} (written before attestations: run `adiuva upgrade`)", unsigned.hash()),
            });
        }
        let attestations = loaded.attestations.for_changes(changes);
        SignedChanges { attestations, changes: changes.iter().map(|c| c.raw_bytes().to_vec()).collect() }.encode()
    }

    /// [`Self::export_changes`] sealed for transport under the current epoch's bundle key.
    pub fn export_bundle(&mut self, document: &str, since: &[ChangeHash]) -> Result<Vec<u8>> {
        let payload = self.export_changes(document, since)?;
        let current =
            self.log.keyring.workspace_key().ok_or(Error::WorkspaceFormat { detail: "no workspace key".into() })?;
        let blob_id = bundle_id(document);
        let place = ChunkPlace { workspace_id: &self.log.workspace_id, blob_id: &blob_id };
        let key = current.key.derive(KeyPurpose::Bundles);
        Ok(chunk::seal_bundle(place, current.epoch, &key, &self.log.identity, &payload)?)
    }

    /// Opens a bundle of `document` sealed by [`Self::export_bundle`] on a device of this
    /// workspace and imports it. A bundle under an epoch this device was not given is refused
    /// (`key.unknown_epoch`) before anything is read.
    pub fn import_bundle(&mut self, document: &str, bytes: &[u8]) -> Result<Imported> {
        let payload = open_bundle(&self.log.workspace_id, self.log.keyring.workspace_keys(), document, bytes)?;
        self.import_changes(document, &payload)
    }

    /// Applies changes received from another device (a [`SignedChanges`]) and stores them
    /// durably, after checking each one (see the module docs). Idempotent: changes already
    /// present are skipped. Changes whose dependencies are missing wait in the pending area.
    pub fn import_changes(&mut self, document: &str, bytes: &[u8]) -> Result<Imported> {
        self.import_into(document, bytes, WriteBatch::default())
    }

    /// [`Self::import_changes`], writing `batch` in the same atomic batch.
    pub(super) fn import_into(&mut self, document: &str, bytes: &[u8], batch: WriteBatch) -> Result<Imported> {
        let result = self.import_and_persist(document, bytes, batch);
        if result.is_err() {
            self.docs.remove(document);
            self.views.remove(document);
            // The root may have taken changes in memory while the device list was worked out.
            self.docs.remove(ROOT_DOCUMENT);
        }
        result
    }

    fn import_and_persist(&mut self, document: &str, bytes: &[u8], mut batch: WriteBatch) -> Result<Imported> {
        // Before the name can reach the root document's directory.
        layout::check_document_name(document)?;
        let signed = match SignedChanges::decode(bytes) {
            Ok(Decoded::Attested(signed)) => signed,
            Ok(Decoded::Legacy) => {
                return Err(Error::ChangeUnsigned {
                    document: document.to_owned(),
                    change: "(bare Automerge changes, with no attestation)".into(),
                });
            }
            Err(error) => return Err(Error::BundleMalformed { document: document.to_owned(), detail: error.0.into() }),
        };
        let mut attestations = Attestations::default();
        attestations.extend(signed.attestations);
        let received = self.check_received(document, signed.changes, &attestations)?;
        let pending = self.log.read_pending(document)?;
        for (_, attestation) in &pending {
            attestations.add(attestation.clone());
        }
        let known: HashSet<ChangeHash> = received.iter().map(|r| r.change.hash()).collect();
        let mut candidates = received;
        for (change, _) in pending.iter() {
            if !known.contains(&change.hash()) {
                candidates.push(self.received_from_pending(document, change.clone())?);
            }
        }
        let was_pending: HashSet<ChangeHash> = pending.iter().map(|(change, _)| change.hash()).collect();
        self.register_if_new(document)?;

        let before = self.document(document)?.doc.get_heads();
        let list_before = self.device_list()?;
        let mut waiting: Vec<Received> = {
            let doc = &self.document(document)?.doc;
            candidates.into_iter().filter(|r| doc.get_change_meta_by_hash(&r.change.hash()).is_none()).collect()
        };
        // Authorized changes whose dependencies are present apply; in the root, a change can
        // add the device that signed the next one, so it goes round until nothing moves.
        let mut applied = HashSet::new();
        loop {
            let list = self.device_list()?;
            let vouched = vouched_for(&list, document, &waiting, &attestations);
            let doc = &self.loaded(document)?.doc;
            let mut ready = Vec::new();
            // The changes made ready, with the last operation number of each.
            let mut ready_hashes = HashMap::new();
            let mut progress = true;
            while progress {
                progress = false;
                for received in std::mem::take(&mut waiting) {
                    let hash = received.change.hash();
                    let expected_start = untrusted::expected_start_op(received.change.deps(), |dep| {
                        ready_hashes.get(dep).copied().or_else(|| doc.get_change_meta_by_hash(dep).map(|m| m.max_op))
                    });
                    let deps_present = expected_start.is_some();
                    if let Some(expected_start) = expected_start
                        && received.change.start_op().get() != expected_start
                    {
                        return Err(Error::BundleMalformed {
                            document: document.to_owned(),
                            detail: format!(
                                "change {hash} numbers its operations from {}, not {expected_start}",
                                received.change.start_op()
                            ),
                        });
                    }
                    let admitted = admits(&list, document, &received, &attestations)
                        || vouched.contains(&hash)
                        || (deps_present && admits_counter_removal(doc, document, &received, &attestations));
                    if deps_present && admitted {
                        ready_hashes.insert(hash, received.change.max_op());
                        ready.push(received.change);
                        progress = true;
                    } else {
                        waiting.push(received);
                    }
                }
            }
            if ready.is_empty() {
                break;
            }
            applied.extend(ready_hashes.into_keys());
            let doc = &mut self.document(document)?.doc;
            // What Automerge refuses (or gives up on) is the unit's fault, not the document's:
            // `import_into` drops the document from memory, and nothing of the unit is stored.
            untrusted::apply_changes(doc, ready)
                .map_err(|detail| Error::BundleMalformed { document: document.to_owned(), detail })?;
            if document != ROOT_DOCUMENT {
                break;
            }
        }
        // Left over: waiting for dependencies, refused as a removed device's (kept aside, in
        // case a device that still held it when it learned of the removal says so), or refused
        // outright (a typed error, nothing of the unit kept).
        let list = self.device_list()?;
        let vouched = vouched_for(&list, document, &waiting, &attestations);
        let mut refused = Vec::new();
        let unplaced = |r: &&Received| !was_pending.contains(&r.change.hash()) && !vouched.contains(&r.change.hash());
        for received in waiting.iter().filter(unplaced) {
            if let Some(attestation) = attestations.covering(&received.change.hash()) {
                match Self::check_authorized(&list, document, &received.change, attestation) {
                    Ok(()) => {}
                    // An epoch may be given by a root change this device keeps aside until
                    // an amendment accepts it: kept aside too, like a removed device's.
                    Err(error @ (Error::DeviceRemoved { .. } | Error::EpochNotMember { .. })) => refused.push(error),
                    Err(error) => return Err(error),
                }
            }
        }
        let loaded = self.document(document)?;
        let new_changes = untrusted::changes_since(&loaded.doc, &before)
            .map_err(|detail| Error::BundleMalformed { document: document.to_owned(), detail })?;
        // A change Automerge takes in but encodes differently (under another hash) leaves a
        // document whose save does not load again: compaction would lose it.
        if new_changes.len() != applied.len() || new_changes.iter().any(|change| !applied.contains(&change.hash())) {
            return Err(Error::BundleMalformed {
                document: document.to_owned(),
                detail: "a change is not encoded as Automerge encodes it".into(),
            });
        }
        let touched = records::touched_by(&loaded.doc, &new_changes)
            .map_err(|detail| Error::BundleMalformed { document: document.to_owned(), detail })?;
        for change in &new_changes {
            if was_pending.contains(&change.hash()) {
                batch.delete(layout::pending(document, &change.hash()));
            }
        }
        for received in &waiting {
            let hash = received.change.hash();
            if !was_pending.contains(&hash) {
                let attestation = attestations.covering(&hash).cloned().into_iter().collect();
                let unit =
                    SignedChanges { attestations: attestation, changes: vec![received.change.raw_bytes().to_vec()] };
                let key = layout::pending(document, &hash);
                batch.put(key.clone(), self.log.seal_local(&key, BlobKind::Pending, &unit.encode()?)?);
            }
        }
        let imported = Imported { applied: new_changes.len(), pending: waiting.len() - refused.len(), refused };
        if new_changes.is_empty() {
            if !batch.is_empty() {
                self.log.write_durably(batch)?;
            }
            return Ok(imported);
        }
        let applied_by: BTreeSet<DeviceId> = new_changes
            .iter()
            .filter_map(|change| attestations.covering(&change.hash()).map(|attestation| attestation.signer))
            .collect();
        let touched = (document != ROOT_DOCUMENT).then_some(&touched);
        let staged =
            self.stage_document(document, &new_changes, Attest::Received(&attestations), touched, &mut batch)?;
        self.log.write_durably(batch)?;
        self.finish_staged(vec![staged]);
        if document == ROOT_DOCUMENT {
            self.root_imported(&list_before, &applied_by)?;
        }
        Ok(imported)
    }

    /// Registers `document` in the root's directory unless it is there (or is the root).
    pub(super) fn register_if_new(&mut self, document: &str) -> Result<()> {
        if document != ROOT_DOCUMENT && !self.is_registered(document)? {
            let collection = Collection::of_document(document)
                .ok_or_else(|| Error::InvalidInput { detail: format!("unknown document {document:?}") })?;
            let operation = Operation::RegisterDocument { name: document.to_owned(), collection };
            let registered = self.root_event("document.created", None, operation, false);
            self.commit_prepared(vec![registered], WriteBatch::default())?;
        }
        Ok(())
    }

    /// Checks what can be checked of each received change without the device list: it parses,
    /// carries a valid envelope, and is covered by an attestation that verifies, whose signer
    /// is its envelope's device and owns its actor.
    fn check_received(
        &self,
        document: &str,
        changes: Vec<Vec<u8>>,
        attestations: &Attestations,
    ) -> Result<Vec<Received>> {
        let mut verified = HashSet::new();
        let mut received = Vec::with_capacity(changes.len());
        for bytes in changes {
            let change = untrusted::parse_change(bytes).map_err(|e| Error::BundleMalformed {
                document: document.to_owned(),
                detail: format!("a change does not parse: {e}"),
            })?;
            received.push(check_change(&self.log.workspace_id, document, change, attestations, &mut verified)?);
        }
        Ok(received)
    }

    /// Checks every change `document` holds as an import would (what the audit tool's
    /// `verify` reports): each fault found, all of them, not only the first. Loads the document.
    pub fn verify_authorship(&mut self, document: &str) -> Result<Vec<Error>> {
        let list = self.device_list()?;
        let loaded = self.document(document)?;
        let changes = loaded.doc.get_changes(&[]);
        let attestations = loaded.attestations.clone();
        Ok(authorship_faults(&self.log.workspace_id, &list, document, changes, &attestations).0)
    }

    /// A change from the pending area: it was checked when it arrived.
    fn received_from_pending(&self, document: &str, change: Change) -> Result<Received> {
        let envelope = Envelope::decode(change.message().unwrap_or_default()).map_err(|source| Error::Envelope {
            document: document.to_owned(),
            change: change.hash().to_string(),
            source,
        })?;
        Ok(Received { change, kind: envelope.kind, time: envelope.time })
    }

    /// How many received changes wait in the pending area (for their dependencies, or as a
    /// removed device's).
    pub(super) fn pending_count(&self) -> Result<usize> {
        Ok(self.log.store.keys_with_prefix(layout::PENDING_PREFIX)?.len())
    }

    /// The documents with changes in the pending area.
    pub(super) fn pending_documents(&self) -> Result<Vec<String>> {
        let mut documents: Vec<String> =
            self.log.store.keys_with_prefix(layout::PENDING_PREFIX)?.iter().map(|key| layout::document(key)).collect();
        documents.dedup();
        Ok(documents)
    }

    /// Applies whatever in the pending area `document` can take now.
    pub(super) fn retry_pending(&mut self, document: &str) -> Result<Imported> {
        self.import_changes(document, &SignedChanges::default().encode()?)
    }
}

/// Every authorship fault of `changes` of `document`, checked against `list`, and the
/// changes that passed the checks made without the list.
pub(super) fn authorship_faults<C: ChangeFacts>(
    workspace_id: &[u8; 16],
    list: &DeviceList,
    document: &str,
    changes: Vec<C>,
    attestations: &Attestations,
) -> (Vec<Error>, Vec<Received<C>>) {
    let mut faults = Vec::new();
    let mut verified = HashSet::new();
    let mut received = Vec::with_capacity(changes.len());
    for change in changes {
        match check_change(workspace_id, document, change, attestations, &mut verified) {
            Ok(checked) => received.push(checked),
            Err(fault) => faults.push(fault),
        }
    }
    let vouched = vouched_for(list, document, &received, attestations);
    for checked in received.iter().filter(|r| !vouched.contains(&r.change.hash())) {
        if let Some(attestation) = attestations.covering(&checked.change.hash())
            && let Err(fault) = Workspace::check_authorized(list, document, &checked.change, attestation)
        {
            faults.push(fault);
        }
    }
    (faults, received)
}

/// [`Workspace::check_received`] for one parsed change; `verified` holds the signatures already
/// checked.
fn check_change<C: ChangeFacts>(
    workspace_id: &[u8; 16],
    document: &str,
    change: C,
    attestations: &Attestations,
    verified: &mut HashSet<[u8; 64]>,
) -> Result<Received<C>> {
    let place = AttestationPlace { workspace_id, document };
    let hash = change.hash();
    let envelope = Envelope::decode(change.message().unwrap_or_default()).map_err(|source| Error::Envelope {
        document: document.to_owned(),
        change: hash.to_string(),
        source,
    })?;
    let attestation = attestations
        .covering(&hash)
        .ok_or_else(|| Error::ChangeUnsigned { document: document.to_owned(), change: hash.to_string() })?;
    if !verified.contains(&attestation.signature) {
        if !attestation.verify(place) {
            return Err(Error::ChangeBadSignature {
                document: document.to_owned(),
                change: hash.to_string(),
                signer: attestation.signer.to_string(),
            });
        }
        verified.insert(attestation.signature);
    }
    let mismatch = |detail: String| Error::ChangeSignerMismatch {
        document: document.to_owned(),
        change: hash.to_string(),
        detail,
    };
    if envelope.device != attestation.signer {
        return Err(mismatch(format!(
            "signed by {} but its envelope names {}",
            attestation.signer.short(),
            envelope.device.short()
        )));
    }
    if change.actor_bytes() != &attestation.signer.0[..16] {
        return Err(mismatch(format!("its actor is not the signer {}'s", attestation.signer.short())));
    }
    Ok(Received { change, kind: envelope.kind, time: envelope.time })
}

/// Whether the device list admits `received`. A workspace's very first change (which creates
/// it and names its first device) admits itself into an empty root.
fn admits<C: ChangeFacts>(
    list: &DeviceList,
    document: &str,
    received: &Received<C>,
    attestations: &Attestations,
) -> bool {
    let Some(attestation) = attestations.covering(&received.change.hash()) else {
        return false;
    };
    if list.devices.is_empty()
        && document == ROOT_DOCUMENT
        && received.change.deps().is_empty()
        && received.kind.as_str() == "workspace.created"
    {
        return true;
    }
    list.authorize(&attestation.signer, document, received.change.seq(), attestation.epoch).is_ok()
}

/// Whether `received` is a removal by a removed device of the device that removed it, neither
/// having seen the other's removal: the device list can tell only once the removal is in the
/// root, so it is tried on a copy of `root` (which holds its dependencies). Rare: only a
/// removed device's `device.removed` gets here.
fn admits_counter_removal(root: &Automerge, document: &str, received: &Received, attestations: &Attestations) -> bool {
    let Some(attestation) = attestations.covering(&received.change.hash()) else { return false };
    if document != ROOT_DOCUMENT || received.kind.as_str() != "device.removed" {
        return false;
    }
    let mut copy = root.fork();
    if untrusted::apply_changes(&mut copy, [received.change.clone()]).is_err() {
        return false;
    }
    let list = DeviceList::read(&copy);
    list.authorize(&attestation.signer, document, received.change.seq(), attestation.epoch).is_ok()
}

/// Opens a bundle of `document` with the bundle key of the epoch it names, if `keys` hold it.
pub(super) fn open_bundle(
    workspace_id: &[u8; 16],
    keys: &[WorkspaceKey],
    document: &str,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    let blob_id = bundle_id(document);
    let place = ChunkPlace { workspace_id, blob_id: &blob_id };
    let keys: HashMap<u32, SecretKey> =
        keys.iter().map(|key| (key.epoch, key.key.derive(KeyPurpose::Bundles))).collect();
    let opened = chunk::open_chunk(bytes, place, BlobKind::Changes, |sealing| match sealing {
        SealingKey::WorkspaceEpoch(epoch) => keys.get(&epoch),
        SealingKey::Device(_) => None,
    })
    .map_err(|source| Error::Chunk { document: document.to_owned(), blob: "bundle".into(), source })?;
    Ok(opened.payload)
}

/// The received changes some admitted change depends on (directly or through others received):
/// a device still authorized built on them, so it held them, and so must everyone. This is how
/// a removed device's change that reached a device before the removal did stays accepted (see
/// `devices`, "convergence"); a change the device list refuses outright vouches for nothing.
fn vouched_for<C: ChangeFacts>(
    list: &DeviceList,
    document: &str,
    received: &[Received<C>],
    attestations: &Attestations,
) -> HashSet<ChangeHash> {
    let by_hash: HashMap<ChangeHash, &Received<C>> = received.iter().map(|r| (r.change.hash(), r)).collect();
    let mut vouched = HashSet::new();
    let mut stack: Vec<ChangeHash> = received
        .iter()
        .filter(|r| admits(list, document, r, attestations))
        .flat_map(|r| r.change.deps().to_vec())
        .collect();
    while let Some(hash) = stack.pop() {
        if let Some(dependency) = by_hash.get(&hash)
            && vouched.insert(hash)
        {
            stack.extend(dependency.change.deps().iter().copied());
        }
    }
    vouched
}

/// The blob id a bundle of `document` is bound to: a bundle replayed as another document's,
/// or as a stored chunk, fails authentication.
fn bundle_id(document: &str) -> Vec<u8> {
    [b"bundle/", document.as_bytes()].concat()
}

#[cfg(test)]
pub(super) mod tests;
