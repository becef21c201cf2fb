//! Auditing the log: every stored part of a document checked — its manifest against the
//! witness, its snapshot (tag, signature, Automerge hashes), every tail chunk (tag, signature,
//! sequence), every change (parses, its dependencies stored, its envelope, its attestation and
//! that the device list authorized its signer) — and every fault collected, not only the first,
//! each naming its document, chunk or change. What the audit tool's `verify` runs, on a
//! workspace opened read-only; nothing here writes.

use std::collections::{BTreeMap, HashSet};

use adiuva_model::DeviceId;
use automerge::{Automerge, Change, ChangeHash, ChangeMetadata, VerificationMode};
use chrono::{DateTime, Utc};

use super::devices::DeviceList;
use super::sync::{self, ChangeFacts};
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::authorship::{Attestations, Decoded, SignedChanges, SignedSnapshot};
use crate::chunk::BlobKind;
use crate::error::{Error, Result};
use crate::untrusted::{self, load_document};

/// What auditing one document found.
#[derive(Debug)]
pub struct DocumentAudit {
    pub document: String,
    /// Chunks read (the snapshot and the tail).
    pub chunks: u64,
    /// Changes (events) the document holds.
    pub changes: u64,
    /// Every fault found, in the order found.
    pub faults: Vec<Error>,
    /// Who signed each change, under which epoch, and when its envelope says it was written:
    /// for [`epoch_faults`], which compares changes across documents.
    pub signed: Vec<SignedEvent>,
}

/// A change the audit checks: one the loaded document holds, or one of the tail it could not
/// apply (held back for a missing dependency).
enum AnyChange<'a> {
    Held(ChangeMetadata<'a>),
    Parsed(Box<Change>),
}

impl AnyChange<'_> {
    fn facts(&self) -> &dyn ChangeFacts {
        match self {
            AnyChange::Held(meta) => meta,
            AnyChange::Parsed(change) => &**change,
        }
    }
}

impl ChangeFacts for AnyChange<'_> {
    fn hash(&self) -> ChangeHash {
        self.facts().hash()
    }
    fn seq(&self) -> u64 {
        self.facts().seq()
    }
    fn deps(&self) -> &[ChangeHash] {
        self.facts().deps()
    }
    fn message(&self) -> Option<&str> {
        self.facts().message()
    }
    fn actor_bytes(&self) -> &[u8] {
        self.facts().actor_bytes()
    }
}

/// A change as its attestation and envelope describe it.
#[derive(Clone, Debug)]
pub struct SignedEvent {
    pub change: String,
    pub device: DeviceId,
    pub epoch: u32,
    pub time: DateTime<Utc>,
}

impl Workspace {
    /// Every document the store holds a manifest of, and every document the root lists
    /// (root first): a document whose manifest is lost is still audited, and reported.
    pub fn stored_documents(&mut self) -> Result<Vec<String>> {
        let mut names: Vec<String> = match self.document_names() {
            Ok(names) => names,
            Err(_) => vec![ROOT_DOCUMENT.to_owned()],
        };
        for key in self.log.store.keys_with_prefix(b"m/")? {
            let name = layout::document(&key);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Audits one document (see the module docs). `Err` only when the store itself cannot be
    /// read; every fault of what it holds is in the result.
    pub fn audit_document(&mut self, document: &str) -> Result<DocumentAudit> {
        layout::check_document_name(document)?;
        let mut audit = DocumentAudit {
            document: document.to_owned(),
            chunks: 0,
            changes: 0,
            faults: Vec::new(),
            signed: Vec::new(),
        };
        let corrupt = |detail: String| Error::DocumentCorrupt { document: document.to_owned(), detail };
        // Without a readable manifest, every chunk present is still opened and checked, on
        // top of the newest snapshot present; only what is missing cannot be told.
        let mut manifest_readable = true;
        let manifest = match self.log.read_manifest(document) {
            Ok(manifest) => manifest,
            Err(fault) => {
                audit.faults.push(fault);
                manifest_readable = false;
                None
            }
        };
        if let Some(manifest) = &manifest {
            let witnessed = self.log.witness.get(document).copied().unwrap_or(0);
            if manifest.next_seq < witnessed {
                audit.faults.push(Error::StoreRolledBack {
                    document: document.to_owned(),
                    found: manifest.next_seq,
                    expected: witnessed,
                });
            }
        }
        let mut attestations = Attestations::default();
        let mut doc = Automerge::new();
        let snapshot = match &manifest {
            Some(manifest) => manifest.snapshot.map(|snapshot| snapshot.generation),
            None if !manifest_readable => self
                .log
                .store
                .keys_with_prefix(&layout::snapshot_prefix(document))?
                .last()
                .and_then(|key| layout::snapshot_generation(document, key)),
            None => None,
        };
        if let Some(generation) = snapshot {
            let key = layout::snapshot(document, generation);
            match self.log.store.get(&key)? {
                None => audit.faults.push(Error::SnapshotMissing { document: document.to_owned(), generation }),
                Some(sealed) => {
                    audit.chunks += 1;
                    match self.log.open_chunk(document, &key, &sealed, BlobKind::Snapshot) {
                        Err(fault) => audit.faults.push(fault),
                        Ok(payload) => {
                            let mut details = Vec::new();
                            if let Some(loaded) = load_snapshot(&payload, &mut attestations, &mut details) {
                                doc = loaded;
                            }
                            let describe = |detail| corrupt(format!("{}: {detail}", layout::describe(&key)));
                            audit.faults.extend(details.into_iter().map(describe));
                        }
                    }
                }
            }
        }
        let (tail_start, next_seq) = match &manifest {
            Some(manifest) => (manifest.tail_start, manifest.next_seq),
            None if !manifest_readable => (0, u64::MAX),
            None => (0, 0),
        };
        let mut tail: Vec<Change> = Vec::new();
        let mut expected = tail_start;
        let missing = |seq| Error::ChunkMissing { document: document.to_owned(), seq, expected_end: next_seq };
        for (key, sealed) in self.log.store.scan_prefix(&layout::change_prefix(document))? {
            let unexpected = || Error::ChunkUnexpected { document: document.to_owned(), blob: layout::describe(&key) };
            let Some(seq) = layout::change_seq(document, &key) else {
                audit.faults.push(unexpected());
                continue;
            };
            if seq < tail_start {
                continue; // folded into the snapshot; left over from an interrupted compaction
            }
            if seq >= next_seq {
                audit.faults.push(unexpected());
                continue;
            }
            if manifest_readable {
                audit.faults.extend((expected..seq).map(missing));
            }
            expected = seq + 1;
            audit.chunks += 1;
            let payload = match self.log.open_chunk(document, &key, &sealed, BlobKind::Changes) {
                Ok(payload) => payload,
                Err(fault) => {
                    audit.faults.push(fault);
                    continue;
                }
            };
            match SignedChanges::decode(&payload) {
                Ok(Decoded::Attested(signed)) => {
                    attestations.extend(signed.attestations);
                    for bytes in signed.changes {
                        match untrusted::parse_change(bytes) {
                            Ok(change) => tail.push(change),
                            Err(e) => audit
                                .faults
                                .push(corrupt(format!("{}: a change does not parse: {e}", layout::describe(&key)))),
                        }
                    }
                }
                // Written before attestations: bare Automerge bytes.
                Ok(Decoded::Legacy) => match load_document(&payload, VerificationMode::Check) {
                    Ok(part) => tail.extend(part.get_changes(&[])),
                    Err(e) => audit.faults.push(corrupt(format!("{}: {e}", layout::describe(&key)))),
                },
                Err(e) => audit.faults.push(corrupt(format!("{}: {e}", layout::describe(&key)))),
            }
        }
        if manifest_readable {
            audit.faults.extend((expected..next_seq).map(missing));
        }

        // The tail applied, every change the document holds is listed by its metadata (the
        // facts the checks read), not materialized again; a tail change Automerge holds back
        // for a missing dependency is checked (its envelope, its author) and counted too.
        if let Err(e) = untrusted::apply_changes(&mut doc, tail.iter().cloned()) {
            audit.faults.push(corrupt(format!("the tail does not apply: {e}")));
        }
        let held = doc.get_changes_meta(&[]);
        let applied: HashSet<ChangeHash> = held.iter().map(|meta| meta.hash).collect();
        let in_tail: HashSet<ChangeHash> = tail.iter().map(Change::hash).collect();
        for change in &tail {
            let stored = |dependency: &&ChangeHash| applied.contains(*dependency) || in_tail.contains(*dependency);
            for dependency in change.deps().iter().filter(|dependency| !stored(dependency)) {
                audit.faults.push(Error::ChangeDependencyMissing {
                    document: document.to_owned(),
                    change: change.hash().to_string(),
                    dependency: dependency.to_string(),
                });
            }
        }
        let changes: Vec<AnyChange<'_>> = held
            .into_iter()
            .map(AnyChange::Held)
            .chain(
                tail.into_iter()
                    .filter(|change| !applied.contains(&change.hash()))
                    .map(|change| AnyChange::Parsed(Box::new(change))),
            )
            .collect();
        audit.changes = changes.len() as u64;
        if let Some(events) = manifest.as_ref().and_then(|manifest| manifest.events)
            && events != audit.changes
        {
            audit.faults.push(corrupt(format!("its manifest counts {events} events, its log holds {}", audit.changes)));
        }
        for (key, sealed) in self.log.store.scan_prefix(&layout::pending_prefix(document))? {
            if let Err(fault) = self.log.open_local(document, &key, &sealed, BlobKind::Pending) {
                audit.faults.push(fault);
            }
        }

        let list = match document {
            ROOT_DOCUMENT => Ok(DeviceList::read(&doc)),
            _ => self.device_list(),
        };
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                audit.faults.push(corrupt(format!("authorship not checked: the device list is unreadable ({e})")));
                return Ok(audit);
            }
        };
        let (faults, checked) =
            sync::authorship_faults(&self.log.workspace_id, &list, document, changes, &attestations);
        audit.faults.extend(faults);
        audit.signed = checked
            .iter()
            .filter_map(|checked| {
                let hash = checked.change.hash();
                attestations.covering(&hash).map(|attestation| SignedEvent {
                    change: hash.to_string(),
                    device: attestation.signer,
                    epoch: attestation.epoch,
                    time: checked.time,
                })
            })
            .collect();
        Ok(audit)
    }
}

/// Changes a device wrote under an older key epoch than one it had already written under (by
/// its own clock): a chunk replayed from before a key rotation. A device takes a new epoch
/// into use when it rotates or learns of it, and never goes back.
pub fn epoch_faults(audits: &[DocumentAudit]) -> Vec<Error> {
    let mut by_device: BTreeMap<DeviceId, Vec<(&str, &SignedEvent)>> = BTreeMap::new();
    for audit in audits {
        for event in &audit.signed {
            by_device.entry(event.device).or_default().push((&audit.document, event));
        }
    }
    let mut faults = Vec::new();
    for (device, mut events) in by_device {
        events.sort_by_key(|(_, event)| event.time);
        let mut newest = 0;
        for (document, event) in events {
            if event.epoch < newest {
                faults.push(Error::ChangeEpochReplayed {
                    document: document.to_owned(),
                    change: event.change.clone(),
                    device: device.to_string(),
                    epoch: event.epoch,
                    newer: newest,
                });
            }
            newest = newest.max(event.epoch);
        }
    }
    faults
}

/// A stored snapshot's document (`payload`), loaded with every hash checked, and its
/// attestations added to `attestations`; each fault described in `faults`. Attestations that do
/// not resolve are a fault of their own: the document is still audited, its changes then
/// unattested.
fn load_snapshot(payload: &[u8], attestations: &mut Attestations, faults: &mut Vec<String>) -> Option<Automerge> {
    let decoded = SignedSnapshot::decode(payload).map_err(|e| faults.push(e.to_string())).ok()?;
    let saved = match &decoded {
        Decoded::Attested(snapshot) => snapshot.document,
        Decoded::Legacy => payload,
    };
    let loaded = load_document(saved, VerificationMode::Check).map_err(|e| faults.push(e)).ok()?;
    if let Decoded::Attested(snapshot) = decoded {
        match snapshot.attestations(&loaded) {
            Ok(listed) => attestations.extend(listed),
            Err(e) => faults.push(e.to_string()),
        }
    }
    Some(loaded)
}
