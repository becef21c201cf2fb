//! The commit path: events applied to their documents in memory, their changes sealed into
//! chunks with each touched document's manifest and read-view delta, all in **one atomic store
//! batch**, then the durability barrier. Only then does a commit return.
//!
//! Every event is its own Automerge change (its envelope is the commit message), also in a
//! group commit, which shares one batch and one barrier. Documents are independent, so a large
//! group applies and stages its documents on every core, each document's events in the
//! group's order (an event depends only on the ones before it in its document, so the outcome
//! is that of applying them one after the other). If anything fails, the touched
//! documents are dropped from memory and reload from the store on next use, so memory never runs
//! ahead of what is durable.

use std::collections::{BTreeMap, BTreeSet};

use adiuva_model::envelope::{ENVELOPE_VERSION, Subject};
use adiuva_model::{Actor, Collection, DeviceId, Envelope, EventId, EventKind, Spread};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ChangeHash};
use chrono::Utc;
use tracing::warn;
use ulid::Ulid;

use super::devices;
use super::log::Attest;
use super::{FollowedEvent, LoggedEvent, ROOT_DOCUMENT, Workspace};
use crate::authorship::Attestation;
use crate::cores;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::records::Effect;
use crate::store::WriteBatch;
use crate::view::{Delta, Touched};

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

/// One event ready to apply.
pub(super) struct Prepared {
    document: String,
    envelope: Envelope,
    operation: Operation,
    /// Whether the caller asked for this event (engine bookkeeping events are not returned).
    requested: bool,
}
pub(super) enum Operation {
    Record(Effect),
    CreateWorkspace {
        device_name: String,
        box_key: String,
    },
    RegisterDocument {
        name: String,
        collection: Collection,
    },
    /// A device joins: its keys, its name, and every key epoch sealed to it.
    AddDevice {
        device: DeviceId,
        name: String,
        box_key: String,
        sealed: Vec<(u32, String)>,
    },
    RenameDevice {
        device: DeviceId,
        name: String,
    },
    /// A device leaves: which of its changes stay accepted, and the epoch that starts without it.
    RemoveDevice {
        device: DeviceId,
        accepted: Vec<(String, u64)>,
        epoch: u32,
    },
    /// A new key epoch, sealed to each device that has it.
    RotateKey {
        epoch: u32,
        sealed: Vec<(DeviceId, String)>,
    },
    /// A removal extended to the removed device's changes this device held when it learned of it.
    AmendRemoval {
        device: DeviceId,
        accepted: Vec<(String, u64)>,
        removed_by: Option<DeviceId>,
        removed_at: Option<String>,
        /// The least root sequence number the removals it replaces accepted.
        removal_root: u64,
    },
}

impl Prepared {
    pub(super) fn id(&self) -> EventId {
        self.envelope.id
    }

    /// The same event, recorded as caused by `cause`.
    pub(super) fn caused_by(mut self, cause: EventId) -> Self {
        self.envelope.causation = Some(cause);
        self
    }
}

impl Operation {
    pub(super) fn apply(&self, tx: &mut impl Transactable, envelope: &Envelope) -> Result<()> {
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
                // Documents made later (a bucket's, a month's, a record's) are registered when
                // first written.
                let whole = |c: &Collection| c.spread() == Spread::Whole;
                for collection in Collection::ALL.into_iter().filter(whole) {
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
            Operation::AddDevice { .. }
            | Operation::RenameDevice { .. }
            | Operation::RemoveDevice { .. }
            | Operation::RotateKey { .. }
            | Operation::AmendRemoval { .. } => devices::apply_device_event(tx, self, &envelope.device, &envelope.time),
        }
    }
}

impl Workspace {
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
            let document = match effect {
                Effect::CreateRecord { .. } => effect.document(),
                _ => self.locate(effect.collection(), effect.record())?,
            };
            if !seen.contains(&document) {
                if !self.is_registered(&document)? {
                    let operation =
                        Operation::RegisterDocument { name: document.clone(), collection: effect.collection() };
                    prepared.push(self.root_event("document.created", draft.correlation, operation, false));
                }
                seen.insert(document.clone());
            }
            prepared.push(self.record_event(document, draft, effect, true));
        }
        self.commit_prepared(prepared, WriteBatch::default())
    }

    /// An event applying `effect` in `document` (where the record is, or where it moves to).
    pub(super) fn record_event(
        &self,
        document: String,
        draft: EventDraft,
        effect: Effect,
        requested: bool,
    ) -> Prepared {
        let subject = Subject { document: document.clone(), record: effect.record() };
        let envelope = self.envelope(draft, Some(subject));
        Prepared { document, envelope, operation: Operation::Record(effect), requested }
    }

    /// An engine bookkeeping event on the root document.
    pub(super) fn root_event(
        &self,
        kind: &'static str,
        correlation: Option<Ulid>,
        operation: Operation,
        requested: bool,
    ) -> Prepared {
        let draft = EventDraft::new(EventKind::from_static(kind), Actor::System).correlated(correlation);
        Prepared { document: ROOT_DOCUMENT.into(), envelope: self.envelope(draft, None), operation, requested }
    }

    pub(super) fn envelope(&self, draft: EventDraft, subject: Option<Subject>) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: EventId::new(),
            kind: draft.kind,
            actor: draft.actor,
            device: self.log.identity.device_id(),
            time: Utc::now(),
            correlation: draft.correlation,
            causation: draft.causation,
            subject,
        }
    }

    /// Applies `events` and writes their changes durably, together with whatever `batch`
    /// already holds.
    pub(super) fn commit_prepared(&mut self, events: Vec<Prepared>, batch: WriteBatch) -> Result<Vec<Envelope>> {
        let touched: BTreeSet<String> = events.iter().map(|e| e.document.clone()).collect();
        let result = self.apply_and_persist(events, batch);
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
                    if let Err(error) = self.compact_in_background(document) {
                        warn!(document, %error, "compaction failed; will retry");
                    }
                }
            }
        }
        result
    }

    fn apply_and_persist(&mut self, events: Vec<Prepared>, mut batch: WriteBatch) -> Result<Vec<Envelope>> {
        // Each touched document's heads before the group and how many changes it gets: the new
        // changes are read back once per document, after the whole group.
        let mut heads_before: BTreeMap<String, (Vec<ChangeHash>, usize)> = BTreeMap::new();
        let mut touched: BTreeMap<String, Touched> = BTreeMap::new();
        // The group's events of each document, in the group's order.
        let mut by_document: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            let loaded = self.document(&event.document)?;
            if let Operation::Record(effect) = &event.operation {
                let records = touched.entry(event.document.clone()).or_default();
                let created = effect.created_record();
                // A record touched twice in one group is read back after the group.
                let state = if records.contains_key(&effect.record()) { None } else { created };
                records.insert(effect.record(), state);
            }
            let (_, count) = heads_before.entry(event.document.clone()).or_insert_with(|| (loaded.doc.get_heads(), 0));
            *count += 1;
            by_document.entry(event.document.clone()).or_default().push(index);
        }
        let events_count = events.len();
        let hashes = self.apply_by_document(&events, &by_document)?;
        let mut envelopes = Vec::with_capacity(events.len());
        // Only gathered when someone follows the log: (document, change hash, envelope).
        let mut followed = Vec::new();
        for (event, hash) in events.into_iter().zip(hashes) {
            if self.observer.is_some() {
                followed.push((event.document.clone(), hash, event.envelope.clone()));
            }
            if event.requested {
                envelopes.push(event.envelope);
            }
        }
        // Read back, sealed and staged per document, on the cores as the events were applied.
        let documents: Vec<_> = heads_before.iter().collect();
        let this = &*self;
        let parts = cores::across(&documents, 1, parallel_min_documents(events_count), |run| {
            run.iter()
                .map(|(document, (before, count))| {
                    let changes = this.loaded(document)?.doc.get_changes(before);
                    if changes.len() != *count {
                        return Err(Error::DocumentCorrupt {
                            document: (*document).clone(),
                            detail: "a committed change is not in the document".into(),
                        });
                    }
                    let mut part = WriteBatch::default();
                    let staged =
                        this.stage_document(document, &changes, Attest::Own, touched.get(*document), &mut part)?;
                    Ok((staged, part))
                })
                .collect::<Vec<_>>()
        });
        let mut staged = Vec::with_capacity(documents.len());
        for part in parts.into_iter().flatten() {
            let (document, part) = part?;
            batch.append(part);
            staged.push(document);
        }
        self.log.write_durably(batch)?;
        self.finish_staged(staged);
        self.tell_observer(followed);
        Ok(envelopes)
    }

    /// Applies each document's events in the group's order; returns each event's change hash,
    /// in the group's order. Documents are independent, so a large group spreads them over the
    /// cores; the outcome (the first failing event of the group, if any) is the same as one
    /// after the other, since an event depends only on the events before it in its document.
    fn apply_by_document(
        &mut self,
        events: &[Prepared],
        by_document: &BTreeMap<String, Vec<usize>>,
    ) -> Result<Vec<ChangeHash>> {
        // In document order; the buckets of a collection get about as many events each.
        let mut work: Vec<(&mut Automerge, &[usize])> = self
            .docs
            .iter_mut()
            .filter_map(|(name, loaded)| by_document.get(name).map(|indices| (&mut loaded.doc, indices.as_slice())))
            .collect();
        let outcomes = cores::across_mut(&mut work, parallel_min_documents(events.len()), |run| {
            run.iter_mut().map(|(doc, indices)| apply_to_document(doc, events, indices)).collect::<Vec<_>>()
        });
        let mut hashes = vec![None; events.len()];
        let mut failed: Option<(usize, Error)> = None;
        for outcome in outcomes.into_iter().flatten() {
            match outcome {
                Ok(applied) => applied.into_iter().for_each(|(index, hash)| hashes[index] = Some(hash)),
                Err((index, error)) if failed.as_ref().is_none_or(|(first, _)| index < *first) => {
                    failed = Some((index, error))
                }
                Err(_) => {}
            }
        }
        if let Some((_, error)) = failed {
            return Err(error);
        }
        hashes
            .into_iter()
            .zip(events)
            .map(|(hash, event)| {
                hash.ok_or_else(|| Error::DocumentCorrupt {
                    document: event.document.clone(),
                    detail: "an event of the group was not applied".into(),
                })
            })
            .collect()
    }

    /// Numbers a durable group's events within their documents and hands them to the observer.
    fn tell_observer(&mut self, followed: Vec<(String, ChangeHash, Envelope)>) {
        let Some(observer) = self.observer.as_mut() else { return };
        // The group's events of a document are the last ones its manifest counts.
        let mut next: BTreeMap<String, u64> = BTreeMap::new();
        for (document, _, _) in &followed {
            *next.entry(document.clone()).or_default() += 1;
        }
        for (document, in_group) in next.iter_mut() {
            let total = self.docs.get(document).and_then(|d| d.manifest.events).unwrap_or_default();
            *in_group = total.saturating_sub(*in_group) + 1;
        }
        let events: Vec<FollowedEvent> = followed
            .into_iter()
            .map(|(document, hash, envelope)| {
                let seq = next.get_mut(&document).map_or(0, |seq| {
                    *seq += 1;
                    *seq - 1
                });
                let event = LoggedEvent { document, change: hash.to_string(), envelope };
                FollowedEvent { seq, event }
            })
            .collect();
        observer(&events);
    }

    /// Stages `changes` of `document` (already applied in memory) into `batch`: its chunks, its
    /// new manifest, their event index part and, for a collection document, the read-view delta
    /// of the `touched` records. `attest` says whose attestations the chunks carry.
    /// Nothing in memory changes until the batch is durable ([`Self::finish_staged`]), so a
    /// failure or a panic in between leaves memory describing only what is stored.
    pub(super) fn stage_document(
        &self,
        document: &str,
        changes: &[Change],
        attest: Attest<'_>,
        touched: Option<&Touched>,
        batch: &mut WriteBatch,
    ) -> Result<Staged> {
        // Uncompressed: deflating every change costs more than it saves on a tail that the
        // next compaction rewrites in Automerge's compressed document format anyway.
        let (manifest, first_seq, attestations) =
            self.log.stage_changes(document, self.loaded(document)?, changes, attest, batch)?;
        self.stage_index_part(document, first_seq, manifest.next_seq, changes, batch)?;
        let delta = match touched {
            Some(touched) => Some(self.stage_delta(document, first_seq, manifest.next_seq, touched, batch)?),
            None => None,
        };
        Ok(Staged { document: document.to_owned(), manifest, delta, attestations })
    }

    /// Takes the manifests, attestations and read-view deltas of a durable batch into memory.
    pub(super) fn finish_staged(&mut self, staged: Vec<Staged>) {
        for Staged { document, manifest, delta, attestations } in staged {
            if let Some(loaded) = self.docs.get_mut(&document) {
                loaded.manifest = manifest;
                loaded.attestations.extend(attestations);
            }
            if let Some(delta) = delta {
                self.apply_delta(&document, &delta);
            }
        }
    }
}

/// What a batch changes of one document, to take into memory once the batch is durable.
pub(super) struct Staged {
    document: String,
    manifest: Manifest,
    delta: Option<Delta>,
    attestations: Vec<Attestation>,
}

/// Groups at least this large spread their documents over the cores: below it, starting a
/// thread costs more than it saves.
const PARALLEL_MIN_EVENTS: usize = 64;

/// The fewest documents worth a thread each, in a group of `events`.
fn parallel_min_documents(events: usize) -> usize {
    if events >= PARALLEL_MIN_EVENTS { 2 } else { usize::MAX }
}

/// What applying one document's events gave: each event's index in the group and its change's
/// hash, or the first event that failed (the ones after it are not applied).
type Applied = std::result::Result<Vec<(usize, ChangeHash)>, (usize, Error)>;

fn apply_to_document(doc: &mut Automerge, events: &[Prepared], indices: &[usize]) -> Applied {
    let mut applied = Vec::with_capacity(indices.len());
    for &index in indices {
        let event = &events[index];
        let hash = (|| {
            let message = event.envelope.encode().map_err(|_| Error::Encode { what: "event envelope" })?;
            let time = event.envelope.time.timestamp_millis();
            let options = CommitOptions::default().with_message(message.clone()).with_time(time);
            let success = doc
                .transact_with(|_| options, |tx| event.operation.apply(tx, &event.envelope))
                .map_err(|failure| failure.error)?;
            Ok(match success.hash {
                Some(hash) => hash,
                // An event that changed nothing (an edit to the same value) is still an event.
                None => doc.empty_commit(CommitOptions::default().with_message(message).with_time(time)),
            })
        })();
        match hash {
            Ok(hash) => applied.push((index, hash)),
            Err(error) => return Err((index, error)),
        }
    }
    Ok(applied)
}
