//! Relay sync, the engine's side: sealed multi-document **units** (what one push sends to the
//! relay) and what this device knows of each relay (its **sync state**), kept in the store.
//! The transport is elsewhere (`adiuva-sync`); nothing here knows HTTP.
//!
//! ```text
//! unit    = "ADVU" | version u8 (=1) | workspace id 16 | frame
//! frame   = a bundle frame (see `chunk`): sealed under the bundle key of the current key epoch,
//!           signed by the sending device inside the ciphertext, blob id "relay/unit"
//! payload = count u32 LE | (name length u16 LE | name | length u32 LE | SignedChanges) × count
//!           | zeros up to the unit's size bucket
//! ```
//!
//! The workspace id is in clear so a unit of another workspace is named as such
//! ([`Error::UnitForeign`]) rather than as altered; the frame's associated data binds it too.
//! Units are padded to powers of two (at least 1 KiB), so the relay learns coarse sizes only.
//! [`Workspace::open_unit`] imports each document's changes through [`Workspace::import_changes`]:
//! every change is checked against the device list exactly as any import is. Each document
//! imports atomically. A unit that does not open (altered, of another workspace, under an epoch
//! this device lacks) is the relay's or the path's fault: a typed error, retried later. One
//! that opens was sealed by a device of the workspace; if its payload or a document's part is
//! then refused, that is its sender's fault, and every device refuses it alike. Such a unit is
//! a **refused unit** (kept, with its reasons, in records of its own: see `unsettled`): its other
//! parts are imported, the cursor passes it, so one faulty or hostile device cannot stop every
//! other device's sync, and it is tried again whenever the root document has moved (the
//! device list may then admit its sender).
//!
//! **Sync state** (`y/RELAY`, a local blob): the cursor (the last number of the relay's
//! sequence imported), per document the heads the relay is known to hold (pushed and
//! acknowledged, or pulled) and how many changes they cover, the devices authorized and revoked
//! there, the key envelopes and recovery epochs uploaded. **Outbox** (`o/RELAY\0N`): the units
//! of a push, stored with the heads they cover before they are uploaded and deleted once the
//! relay acknowledged them all, so a push cut short uploads the same bytes again (the same blob
//! ids: the relay stores nothing twice) and a reconnect sends only what is new.

use std::collections::{BTreeMap, BTreeSet};

use adiuva_model::DeviceId;
use automerge::{Change, ChangeHash};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::devices::open_epoch_key;
use super::restore_point::RelayCoverage;
use super::sync::Imported;
use super::unsettled::HeldUnit;
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::authorship::{Decoded, SignedChanges};
use crate::chunk::{self, BlobKind, ChunkError, ChunkPlace, SealingKey, VerifiedChunk};
use crate::crypto::{KeyPurpose, SecretKey, WorkspaceKey};
use crate::encode;
use crate::error::{Error, Result, json_error};
use crate::identity::DeviceIdentity;
use crate::store::WriteBatch;
use crate::untrusted;

const UNIT_MAGIC: &[u8; 4] = b"ADVU";
const UNIT_VERSION: u8 = 1;
const UNIT_BLOB_ID: &[u8] = b"relay/unit";
/// What a unit adds to its payload: the prefix, the frame header, nonce and tag, the signer and
/// its signature.
const UNIT_OVERHEAD: usize = RELAY_FRAME_PREFIX + 10 + 24 + 16 + 32 + 64;
/// The smallest size bucket.
const SMALLEST_UNIT: usize = 1024;
/// The largest unit (the relay takes blobs of up to 16 MiB).
const LARGEST_UNIT: usize = 16 * 1024 * 1024;
/// Bytes of changes packed into one unit before a new one starts.
const UNIT_BUDGET: usize = 4 * 1024 * 1024;

/// What this device knows of one relay.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RelayState {
    /// The last number of the relay's sequence that was imported.
    pub cursor: u64,
    /// Per document, heads the relay holds (hex change hashes).
    #[serde(default)]
    acked: BTreeMap<String, BTreeSet<String>>,
    /// Per document, how many changes those heads cover.
    #[serde(default)]
    acked_events: BTreeMap<String, u64>,
    /// What the outbox's units cover, per document: heads and change counts.
    #[serde(default)]
    outbox: Option<BTreeMap<String, (BTreeSet<String>, u64)>>,
    /// The devices authorized on the relay by this device.
    #[serde(default)]
    pub authorized: BTreeSet<DeviceId>,
    /// The devices revoked on the relay by this device.
    #[serde(default)]
    pub revoked: BTreeSet<DeviceId>,
    /// The key envelopes uploaded: (epoch, device).
    #[serde(default)]
    pub envelopes: BTreeSet<(u32, DeviceId)>,
    /// The newest epoch the uploaded recovery key holds.
    #[serde(default)]
    pub recovery_epoch: Option<u32>,
    /// When a sync last completed.
    #[serde(default)]
    pub last_sync: Option<DateTime<Utc>>,
}

impl RelayState {
    /// What a restore point made now holds of the relay's sequence: every unit up to `cursor`,
    /// but those `held` (see [`Workspace::relay_coverage`]).
    pub(super) fn coverage(&self, cursor: u64, held: BTreeMap<u64, HeldUnit>) -> RelayCoverage {
        RelayCoverage { cursor, acked: self.acked.clone(), acked_events: self.acked_events.clone(), held }
    }

    /// The state of a device restored from a restore point with `coverage`: it holds what the
    /// point's maker held of the relay, and has authorized, revoked and uploaded nothing yet;
    /// with the units the maker held back, which it holds back too.
    pub(super) fn covered(coverage: RelayCoverage) -> (Self, BTreeMap<u64, HeldUnit>) {
        let RelayCoverage { cursor, acked, acked_events, held } = coverage;
        (Self { cursor, acked, acked_events, ..Self::default() }, held)
    }
}

/// What opening and importing one unit did.
#[derive(Debug, Default)]
pub struct UnitImport {
    pub imported: Imported,
    /// What of the unit was refused: the unit is kept to be tried again (see [`RefusedUnit`]).
    pub refusals: Vec<Error>,
    /// The device that sealed the unit.
    pub sender: Option<DeviceId>,
}

/// A unit opened: its sender and each document's signed changes, root first as written.
pub struct OpenedUnit {
    pub sender: DeviceId,
    pub parts: Vec<(String, Vec<u8>)>,
    /// Why the payload is refused, if it does not decode (then there are no parts): the unit
    /// opened, so this is its sender's fault, not the relay's.
    pub refused: Option<Error>,
}

impl Workspace {
    /// This device's state for `relay` (empty if it never synced with it).
    pub fn relay_state(&self, relay: &str) -> Result<RelayState> {
        let key = layout::relay_state(relay);
        let Some(sealed) = self.log.store.get(&key)? else {
            return Ok(RelayState::default());
        };
        parse_relay_state(&self.log.open_local("relay state", &key, &sealed, BlobKind::RelayState)?)
    }

    /// Stores `state` for `relay`, durably.
    pub fn set_relay_state(&mut self, relay: &str, state: &RelayState) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.stage_relay_state(relay, state, &mut batch)?;
        self.log.write_durably(batch)
    }

    pub(super) fn stage_relay_state(&self, relay: &str, state: &RelayState, batch: &mut WriteBatch) -> Result<()> {
        self.stage_relay_state_at(layout::relay_state(relay), state, batch)
    }

    /// Stages `state` at `key`, a relay's sync state key.
    pub(super) fn stage_relay_state_at(&self, key: Vec<u8>, state: &RelayState, batch: &mut WriteBatch) -> Result<()> {
        let bytes = encode::json(state, "relay state")?;
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::RelayState, &bytes)?);
        Ok(())
    }

    /// The units to push to `relay`, in order: those of a push not acknowledged yet (the same
    /// bytes), else new ones holding every change the relay lacks, stored as the outbox before
    /// they are returned. Empty when the relay lacks nothing.
    pub fn relay_outbox(&mut self, relay: &str) -> Result<Vec<Vec<u8>>> {
        let mut state = self.relay_state(relay)?;
        if state.outbox.is_some() {
            let prefix = layout::relay_outbox_prefix(relay);
            let mut units = Vec::new();
            for (key, sealed) in self.log.store.scan_prefix(&prefix)? {
                units.push(self.log.open_local("relay outbox", &key, &sealed, BlobKind::RelayOutbox)?);
            }
            return Ok(units);
        }
        let mut parts: Vec<(String, Vec<u8>, usize)> = Vec::new();
        let mut covered = BTreeMap::new();
        let mut caught_up = false;
        for document in self.document_names()? {
            let manifest = self.current_manifest(&document)?;
            let events = self.event_count(&document, &manifest)?;
            if state.acked_events.get(&document) == Some(&events) {
                continue;
            }
            let acked = present_heads(&self.document(&document)?.doc, state.acked.get(&document));
            let doc = &self.document(&document)?.doc;
            let changes = doc.get_changes(&acked);
            let total = events;
            let heads: BTreeSet<String> = doc.get_heads().iter().map(ChangeHash::to_string).collect();
            if changes.is_empty() {
                state.acked.insert(document.clone(), heads);
                state.acked_events.insert(document.clone(), total);
                caught_up = true;
                continue;
            }
            for group in split_by_size(&changes, &document)? {
                let bytes: usize = group.iter().map(|c| c.raw_bytes().len()).sum();
                parts.push((document.clone(), self.signed_unit(&document, group)?, bytes));
            }
            covered.insert(document, (heads, total));
        }
        if parts.is_empty() {
            if caught_up {
                self.set_relay_state(relay, &state)?;
            }
            return Ok(Vec::new());
        }
        let mut units = Vec::new();
        let mut current: Vec<(String, Vec<u8>)> = Vec::new();
        let mut current_bytes = 0;
        for (document, signed, bytes) in parts {
            if !current.is_empty() && current_bytes + bytes > UNIT_BUDGET {
                units.push(self.seal_unit(&std::mem::take(&mut current))?);
                current_bytes = 0;
            }
            current_bytes += bytes;
            current.push((document, signed));
        }
        units.push(self.seal_unit(&current)?);
        let mut batch = WriteBatch::default();
        for (index, unit) in units.iter().enumerate() {
            let key = layout::relay_outbox(relay, index as u64);
            batch.put(key.clone(), self.log.seal_local(&key, BlobKind::RelayOutbox, unit)?);
        }
        state.outbox = Some(covered);
        self.stage_relay_state(relay, &state, &mut batch)?;
        self.log.write_durably(batch)?;
        Ok(units)
    }

    /// The relay acknowledged every unit of the outbox: what they cover is the relay's now.
    pub fn relay_outbox_acknowledged(&mut self, relay: &str) -> Result<()> {
        let mut state = self.relay_state(relay)?;
        let Some(covered) = state.outbox.take() else { return Ok(()) };
        for (document, (heads, events)) in covered {
            let acked = state.acked.entry(document.clone()).or_default();
            acked.extend(heads);
            let count = state.acked_events.entry(document.clone()).or_default();
            *count = (*count).max(events);
            // Heads pulled meanwhile and those pushed, as one set once they cover the document.
            let present = present_heads(&self.document(&document)?.doc, Some(&*acked));
            let doc = &self.document(&document)?.doc;
            if doc.get_changes(&present).is_empty() {
                *acked = doc.get_heads().iter().map(ChangeHash::to_string).collect();
            }
        }
        let mut batch = WriteBatch::default();
        for key in self.log.store.keys_with_prefix(&layout::relay_outbox_prefix(relay))? {
            batch.delete(key);
        }
        self.stage_relay_state(relay, &state, &mut batch)?;
        self.log.write_durably(batch)
    }

    /// How many of this device's changes `relay` has not acknowledged (what `status` shows as
    /// waiting to go out). Reads manifests and event indexes only.
    pub fn relay_waiting(&mut self, relay: &str) -> Result<u64> {
        let state = self.relay_state(relay)?;
        let mut waiting = 0;
        for document in self.document_names()? {
            let manifest = self.current_manifest(&document)?;
            let events = self.event_count(&document, &manifest)?;
            waiting += events.saturating_sub(state.acked_events.get(&document).copied().unwrap_or(0));
        }
        Ok(waiting)
    }

    /// Seals `parts` (each a document and its signed changes) into one unit under the current
    /// epoch, padded to its size bucket.
    fn seal_unit(&self, parts: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
        let mut payload = encode_parts(parts, "relay unit")?;
        let bucket = (payload.len() + UNIT_OVERHEAD).max(SMALLEST_UNIT).next_power_of_two();
        if bucket > LARGEST_UNIT {
            let document = parts.first().map(|(d, _)| d.clone()).unwrap_or_default();
            return Err(Error::UnitTooLarge { document, bytes: payload.len() });
        }
        payload.resize(bucket - UNIT_OVERHEAD, 0);
        let current =
            self.log.keyring.workspace_key().ok_or(Error::WorkspaceFormat { detail: "no workspace key".into() })?;
        UNIT_FRAME.seal(&self.log.workspace_id, current, &self.log.identity, &payload)
    }

    /// Opens unit number `seq` of `relay` (workspace id, epoch, authentication and signature
    /// checked), imports its changes through the checked import path, and records in the sync
    /// state that the relay holds them and that the cursor passed `seq`. A unit that does not
    /// open (altered, foreign, under an epoch this device lacks) is a typed error, and the
    /// cursor stays where it was. One that opens but whose payload, or a document's part, is
    /// refused ([`Error::refuses_sent`]) keeps what its other parts imported, is kept as a
    /// [`RefusedUnit`], and the cursor passes it.
    pub fn open_unit(&mut self, relay: &str, seq: u64, bytes: &[u8]) -> Result<UnitImport> {
        let unit = format!("#{seq}");
        let keys = bundle_keys(self.log.keyring.workspace_keys());
        let opened = open_unit_bytes(&unit, &self.log.workspace_id, &keys, bytes)?;
        let mut result = UnitImport { sender: Some(opened.sender), ..UnitImport::default() };
        result.refusals.extend(opened.refused);
        let mut state = self.relay_state(relay)?;
        for (document, signed) in &opened.parts {
            let imported = match self.import_part(document, &opened.sender, signed)? {
                Ok(imported) => imported,
                Err(refusal) => {
                    result.refusals.push(refusal);
                    continue;
                }
            };
            result.imported.add(imported);
            let acked = state.acked.entry(document.clone()).or_default();
            for change in unit_changes(document, signed)? {
                for dependency in change.deps() {
                    acked.remove(&dependency.to_string());
                }
                acked.insert(change.hash().to_string());
            }
            let acked_heads = present_heads(&self.document(document)?.doc, Some(&*acked));
            let uncovered = self.document(document)?.doc.get_changes(&acked_heads).len() as u64;
            let total = self.event_count(document, &self.current_manifest(document)?)?;
            state.acked_events.insert(document.clone(), total.saturating_sub(uncovered));
        }
        let mut batch = WriteBatch::default();
        self.stage_unit_outcome(relay, seq, bytes, &result.refusals, &mut batch)?;
        state.cursor = state.cursor.max(seq);
        self.stage_relay_state(relay, &state, &mut batch)?;
        self.log.write_durably(batch)?;
        Ok(result)
    }

    /// Imports one document's part of a unit sealed by `sender`: `Ok(Err(refusal))` if the
    /// part is refused for what it holds ([`Error::refuses_sent`]), `Err` for a fault of this
    /// device (its store, its own documents).
    pub(super) fn import_part(
        &mut self,
        document: &str,
        sender: &DeviceId,
        signed: &[u8],
    ) -> Result<Result<Imported, Error>> {
        match self.check_unit_sender(document, sender).and_then(|()| self.import_changes(document, signed)) {
            Ok(imported) => Ok(Ok(imported)),
            Err(error) if error.refuses_sent() => Ok(Err(error)),
            Err(error) => Err(error),
        }
    }

    /// Refuses a unit's part for `document` sealed by `sender` if the sender is not in the
    /// device list (the root, which the list comes from, excepted).
    pub(super) fn check_unit_sender(&mut self, document: &str, sender: &DeviceId) -> Result<()> {
        if document != ROOT_DOCUMENT && !self.device_list()?.devices.contains_key(sender) {
            return Err(Error::DeviceUnknown {
                device: sender.to_string(),
                document: Some(document.to_owned()),
                change: None,
            });
        }
        Ok(())
    }

    /// Takes in the key of `epoch` from a key envelope the relay kept for this device (the
    /// epoch's key sealed to its box key, as `key.rotated` carries it): how a device that was
    /// away during a rotation opens the units sealed under the new epoch before it holds the
    /// root change that announces it. The envelope's workspace and epoch are checked inside.
    pub fn accept_key_envelope(&mut self, epoch: u32, envelope: &[u8]) -> Result<()> {
        if self.log.keyring.epoch_key(epoch).is_some() {
            return Ok(());
        }
        let key = open_epoch_key(&self.log.identity, &self.log.workspace_id, epoch, envelope)
            .ok_or(Error::UnitEpochUnknown { unit: "key envelope".into(), epoch })?;
        self.log.keyring.add_epoch(key);
        if let Err(error) = self.log.store_keyring() {
            self.log.keyring.remove_epoch(epoch);
            return Err(error);
        }
        Ok(())
    }

    /// Every key envelope the relay should keep: each epoch after the first, sealed to each
    /// device still in the workspace, as the root document holds them.
    pub fn key_envelopes(&mut self) -> Result<Vec<(u32, DeviceId, Vec<u8>)>> {
        let list = self.device_list()?;
        let active: BTreeSet<DeviceId> = list.active().map(|device| device.id).collect();
        let mut envelopes = Vec::new();
        for (epoch, sealed) in list.sealed.iter().filter(|(epoch, _)| **epoch > 1) {
            for (device, bytes) in sealed.iter().filter(|(device, _)| active.contains(device)) {
                envelopes.push((*epoch, *device, bytes.clone()));
            }
        }
        Ok(envelopes)
    }

    /// The devices the relay should authorize (those in the workspace) and revoke (those
    /// removed).
    pub fn relay_devices(&mut self) -> Result<(Vec<DeviceId>, Vec<DeviceId>)> {
        let list = self.device_list()?;
        let (removed, active): (Vec<_>, Vec<_>) = list.devices.values().partition(|device| device.is_removed());
        Ok((active.iter().map(|d| d.id).collect(), removed.iter().map(|d| d.id).collect()))
    }

    /// The newest key epoch this device holds.
    pub fn key_epoch(&self) -> u32 {
        self.log.keyring.workspace_key().map_or(0, |key| key.epoch)
    }
}

/// A sync state (or the part of one `T` reads), from its JSON.
pub(super) fn parse_relay_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::WorkspaceFormat { detail: format!("the relay state {}", json_error(&e)) })
}

/// The bundle key of each epoch of `keys`.
pub(super) fn bundle_keys(keys: &[WorkspaceKey]) -> BTreeMap<u32, SecretKey> {
    UNIT_FRAME.keys(keys)
}

/// The heads among `heads` that `doc` holds (a pulled change may wait in the pending area).
fn present_heads(doc: &automerge::Automerge, heads: Option<&BTreeSet<String>>) -> Vec<ChangeHash> {
    heads
        .into_iter()
        .flatten()
        .filter_map(|hash| hash.parse::<ChangeHash>().ok())
        .filter(|hash| doc.get_change_meta_by_hash(hash).is_some())
        .collect()
}

/// `changes` cut into runs of at most [`UNIT_BUDGET`] bytes (at least one change each).
fn split_by_size<'a>(changes: &'a [Change], document: &str) -> Result<Vec<&'a [Change]>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, change) in changes.iter().enumerate() {
        let size = change.raw_bytes().len();
        if size + UNIT_OVERHEAD + 1024 > LARGEST_UNIT {
            return Err(Error::UnitTooLarge { document: document.to_owned(), bytes: size });
        }
        if index > start && bytes + size > UNIT_BUDGET {
            groups.push(&changes[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < changes.len() {
        groups.push(&changes[start..]);
    }
    Ok(groups)
}

/// The changes of one document's part of a unit.
fn unit_changes(document: &str, signed: &[u8]) -> Result<Vec<Change>> {
    let malformed = |detail: String| Error::BundleMalformed { document: document.to_owned(), detail };
    match SignedChanges::decode(signed) {
        Ok(Decoded::Attested(signed)) => signed
            .changes
            .into_iter()
            .map(|bytes| untrusted::parse_change(bytes).map_err(|e| malformed(format!("a change does not parse: {e}"))))
            .collect(),
        Ok(Decoded::Legacy) => Err(malformed("no attestations".into())),
        Err(error) => Err(malformed(error.0.into())),
    }
}

/// How a blob the relay stores is framed: its magic, a version byte and the workspace id in
/// clear (the relay and a restore tell blobs apart by them), then a bundle frame sealed under
/// the epoch's key for `purpose`, bound to `blob_id` and signed by the device that made it.
/// Relay units and restore points are framed so.
pub(super) struct RelayFrame {
    pub magic: &'static [u8; 4],
    pub version: u8,
    pub blob_id: &'static [u8],
    pub purpose: KeyPurpose,
    /// What such a blob is called in errors.
    pub noun: &'static str,
}

/// The clear part of a [`RelayFrame`]: magic, version, workspace id.
pub(super) const RELAY_FRAME_PREFIX: usize = 4 + 1 + 16;

pub(super) const UNIT_FRAME: RelayFrame = RelayFrame {
    magic: UNIT_MAGIC,
    version: UNIT_VERSION,
    blob_id: UNIT_BLOB_ID,
    purpose: KeyPurpose::Bundles,
    noun: "relay unit",
};

impl RelayFrame {
    /// Seals `payload` (padded) under the key of `current`, signed by `identity`.
    pub fn seal(
        &self,
        workspace_id: &[u8; 16],
        current: &WorkspaceKey,
        identity: &DeviceIdentity,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let place = ChunkPlace { workspace_id, blob_id: self.blob_id };
        let key = current.key.derive(self.purpose);
        let frame = chunk::seal_bundle(place, current.epoch, &key, identity, payload)?;
        let mut blob = Vec::with_capacity(RELAY_FRAME_PREFIX + frame.len());
        blob.extend_from_slice(self.magic);
        blob.push(self.version);
        blob.extend_from_slice(workspace_id);
        blob.extend_from_slice(&frame);
        Ok(blob)
    }

    /// The keys to open such blobs with, by epoch, from the workspace keys.
    pub fn keys(&self, keys: &[WorkspaceKey]) -> BTreeMap<u32, SecretKey> {
        keys.iter().map(|key| (key.epoch, key.key.derive(self.purpose))).collect()
    }

    /// Opens `bytes`, named `name` in errors, with `keys` (by epoch): workspace, epoch,
    /// authentication and signature checked. Pure; never panics.
    pub fn open(
        &self,
        name: &str,
        workspace_id: &[u8; 16],
        keys: &BTreeMap<u32, SecretKey>,
        bytes: &[u8],
    ) -> Result<VerifiedChunk> {
        let malformed = |detail: String| Error::UnitMalformed { unit: name.to_owned(), detail };
        let (prefix, frame) =
            bytes.split_at_checked(RELAY_FRAME_PREFIX).ok_or_else(|| malformed("truncated".into()))?;
        if &prefix[..4] != self.magic {
            return Err(malformed(format!("not a {}", self.noun)));
        }
        if prefix[4] != self.version {
            return Err(malformed(format!("a newer {} version than this build reads", self.noun)));
        }
        if &prefix[5..] != workspace_id {
            let found: [u8; 16] = prefix[5..].try_into().map_err(|_| malformed("truncated".into()))?;
            return Err(Error::UnitForeign {
                unit: name.to_owned(),
                expected: ulid::Ulid::from_bytes(*workspace_id).to_string(),
                found: ulid::Ulid::from_bytes(found).to_string(),
            });
        }
        let place = ChunkPlace { workspace_id, blob_id: self.blob_id };
        chunk::open_chunk(frame, place, BlobKind::Changes, |sealing| match sealing {
            SealingKey::WorkspaceEpoch(epoch) => keys.get(&epoch),
            SealingKey::Device(_) => None,
        })
        .map_err(|error| match error {
            ChunkError::UnknownKey(SealingKey::WorkspaceEpoch(epoch)) => {
                Error::UnitEpochUnknown { unit: name.to_owned(), epoch }
            }
            ChunkError::Unauthentic | ChunkError::BadSignature => Error::UnitCorrupt { unit: name.to_owned() },
            other => Error::UnitMalformed { unit: name.to_owned(), detail: other.to_string() },
        })
    }
}

/// Opens a unit with the bundle keys `keys` (by epoch): a typed error if it does not open; a
/// payload that opens but does not decode is [`OpenedUnit::refused`]. Pure; never panics.
pub(super) fn open_unit_bytes(
    unit: &str,
    workspace_id: &[u8; 16],
    keys: &BTreeMap<u32, SecretKey>,
    bytes: &[u8],
) -> Result<OpenedUnit> {
    let opened = UNIT_FRAME.open(unit, workspace_id, keys, bytes)?;
    Ok(match decode_parts(&opened.payload, unit) {
        Ok(parts) => OpenedUnit { sender: opened.signer, parts, refused: None },
        Err(error) => OpenedUnit { sender: opened.signer, parts: Vec::new(), refused: Some(error) },
    })
}

/// `count u32 LE | (name length u16 LE | name | length u32 LE | bytes) × count`: a unit's
/// payload (and a restore point's), before its padding.
pub(super) fn encode_parts(parts: &[(String, Vec<u8>)], what: &'static str) -> Result<Vec<u8>> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for (document, signed) in parts {
        let name_len = u16::try_from(document.len()).map_err(|_| Error::Encode { what })?;
        let signed_len = u32::try_from(signed.len()).map_err(|_| Error::Encode { what })?;
        payload.extend_from_slice(&name_len.to_le_bytes());
        payload.extend_from_slice(document.as_bytes());
        payload.extend_from_slice(&signed_len.to_le_bytes());
        payload.extend_from_slice(signed);
    }
    Ok(payload)
}

/// What [`encode_parts`] wrote, followed by zeros only (the padding); every name checked.
pub(super) fn decode_parts(payload: &[u8], unit: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let malformed = |detail: &str| Error::UnitMalformed { unit: unit.to_owned(), detail: detail.to_owned() };
    let mut rest = payload;
    let count = u32::from_le_bytes(take(&mut rest, unit)?);
    let mut parts = Vec::new();
    for _ in 0..count {
        let name_len = u16::from_le_bytes(take(&mut rest, unit)?) as usize;
        let name = std::str::from_utf8(take_slice(&mut rest, name_len, unit)?)
            .map_err(|_| malformed("a document name is not UTF-8"))?;
        layout::check_document_name(name)?;
        let signed_len = u32::from_le_bytes(take(&mut rest, unit)?) as usize;
        parts.push((name.to_owned(), take_slice(&mut rest, signed_len, unit)?.to_vec()));
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(malformed("bytes after the last document"));
    }
    Ok(parts)
}

/// The next `n` bytes of `rest`.
fn take_slice<'a>(rest: &mut &'a [u8], n: usize, unit: &str) -> Result<&'a [u8]> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or_else(|| Error::UnitMalformed { unit: unit.to_owned(), detail: "truncated payload".into() })?;
    *rest = tail;
    Ok(head)
}

/// The next `N` bytes of `rest`, as an array.
fn take<const N: usize>(rest: &mut &[u8], unit: &str) -> Result<[u8; N]> {
    let bytes = take_slice(rest, N, unit)?;
    bytes.try_into().map_err(|_| Error::UnitMalformed { unit: unit.to_owned(), detail: "truncated payload".into() })
}

#[cfg(test)]
mod tests {
    // Tests fail loudly: unwrapping is how they assert.
    #![allow(clippy::unwrap_used)]

    use adiuva_model::{Collection, ErrorCode};
    use zeroize::Zeroizing;

    use super::*;
    use crate::workspace::sync::tests::{PASSPHRASE, changes_by, create_plan, protection, signed_by, two_devices};

    const RELAY: &str = "https://relay.test";

    /// A unit sealed by `sender` holding `parts` as they are.
    fn unit_of(sender: &Workspace, parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let parts: Vec<_> = parts.iter().map(|(document, signed)| (document.to_string(), signed.clone())).collect();
        sender.seal_unit(&parts).unwrap()
    }

    /// A unit by `b` holding a part no device can take in (b's second change without its first:
    /// see `sync`'s tests), then a good one, a new plan; with the good part's changes.
    fn refused_beside_good(b: &mut Workspace) -> (Vec<u8>, Vec<u8>) {
        let [_, second] = changes_by(b.device_id());
        let mut expanded = second.decode();
        expanded.deps.clear();
        let unappliable = signed_by(b, &Change::from(expanded));
        create_plan(b);
        let plans = b.export_changes("plans", &[]).unwrap();
        (unit_of(b, &[("plans", unappliable), ("plans", plans.clone())]), plans)
    }

    #[test]
    fn a_unit_its_sender_sealed_but_no_device_can_take_in_is_kept_aside_and_the_sequence_goes_on() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let (mut a, mut b, _) = two_devices(&dirs);
        let (refused_beside_good, plans) = refused_beside_good(&mut b);
        // #1 holds the bad part beside a good one; #2's payload does not decode; #3 does not open.
        let units = [
            refused_beside_good,
            UNIT_FRAME
                .seal(&b.log.workspace_id, b.log.keyring.workspace_key().unwrap(), &b.log.identity, &[7; 40])
                .unwrap(),
        ];
        let mut altered = unit_of(&b, &[("plans", plans.clone())]);
        let middle = altered.len() / 2;
        altered[middle] ^= 1;

        let first = a.open_unit(RELAY, 1, &units[0]).unwrap();
        assert_eq!(first.refusals.iter().map(Error::code).collect::<Vec<_>>(), [ErrorCode::BundleMalformed]);
        assert_eq!(first.imported.applied, 1, "the unit's good part is taken in");
        assert_eq!(a.list(Collection::Plans).unwrap().len(), 2);
        let second = a.open_unit(RELAY, 2, &units[1]).unwrap();
        assert_eq!(second.refusals.iter().map(Error::code).collect::<Vec<_>>(), [ErrorCode::SyncUnitMalformed]);
        // A unit that does not open is an error: the sync holds it back, the cursor passing it.
        let error = a.open_unit(RELAY, 3, &altered).unwrap_err();
        assert_eq!(error.code(), ErrorCode::SyncUnitCorrupt, "{error}");
        assert!(error.leaves_unit_unopened());
        assert_eq!(a.relay_state(RELAY).unwrap().cursor, 2);
        a.hold_unit(RELAY, 3, &error).unwrap();
        a.hold_unit(RELAY, 3, &error).unwrap();
        let held = a.unsettled_units(RELAY).unwrap().held;
        assert_eq!(a.relay_state(RELAY).unwrap().cursor, 3);
        assert_eq!((held[&3].code, held[&3].tries), (ErrorCode::SyncUnitCorrupt, 1));
        let coverage = a.relay_coverage(RELAY).unwrap();
        assert_eq!((coverage.cursor, &coverage.held), (0, &BTreeMap::new()), "the refused #1 comes first");
        // Fetched again as it was sealed, it opens, and is held back no more.
        a.open_unit(RELAY, 3, &unit_of(&b, &[("plans", plans)])).unwrap();
        let unsettled = a.unsettled_units(RELAY).unwrap();
        assert!(unsettled.held.is_empty());
        assert_eq!(a.relay_state(RELAY).unwrap().cursor, 3);
        assert_eq!(unsettled.refused.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(unsettled.refused[&1].refusals[0].0.as_deref(), Some("plans"));
        assert_eq!(unsettled.refused[&2].refusals[0].0, None);
        // Dismissed, a held unit is tried no more; a unit not held is not dismissed.
        a.hold_unit(RELAY, 4, &error).unwrap();
        assert_eq!(a.dismiss_held_unit(RELAY, 4).unwrap().code, ErrorCode::SyncUnitCorrupt);
        assert!(a.unsettled_units(RELAY).unwrap().held.is_empty());
        assert_eq!(a.dismiss_held_unit(RELAY, 4).unwrap_err().code(), ErrorCode::InputInvalid);
        assert_eq!(a.dismiss_held_unit(RELAY, 1).unwrap_err().code(), ErrorCode::InputInvalid, "#1 is refused");

        // Kept across a restart, and tried again only once the root document moves.
        drop(a);
        let mut a = Workspace::open(dirs[0].path(), || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
        assert_eq!(a.retry_refused_units(RELAY).unwrap().applied, 0);
        assert_eq!(a.unsettled_units(RELAY).unwrap().refused.len(), 2);
        assert_eq!(a.list(Collection::Plans).unwrap().len(), 2);
    }

    #[test]
    fn a_unit_refused_for_an_unknown_sender_is_taken_in_once_the_device_list_admits_it() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (mut a, mut b, _) = two_devices(&dirs);
        // c joins through b; its unit reaches a before b's root change that adds it.
        let ticket = b.invite(chrono::Duration::minutes(10)).unwrap();
        let (pending, request) = Workspace::request_join(&ticket.encode(), "c").unwrap();
        let acceptance = b.accept_join(&request).unwrap();
        let mut c = pending.complete(dirs[2].path(), protection(), &acceptance).unwrap();
        create_plan(&mut c);
        let plans = c.export_changes("plans", &[]).unwrap();
        let from_c = unit_of(&c, &[("plans", plans)]);
        let refused = a.open_unit(RELAY, 1, &from_c).unwrap();
        assert_eq!(refused.refusals.iter().map(Error::code).collect::<Vec<_>>(), [ErrorCode::DeviceUnknown]);
        assert_eq!(a.list(Collection::Plans).unwrap().len(), 1);

        for (seq, unit) in b.relay_outbox(RELAY).unwrap().iter().enumerate() {
            assert!(a.open_unit(RELAY, 2 + seq as u64, unit).unwrap().refusals.is_empty());
        }
        assert_eq!(a.retry_refused_units(RELAY).unwrap().applied, 1);
        assert_eq!(a.list(Collection::Plans).unwrap().len(), 2);
        assert!(a.unsettled_units(RELAY).unwrap().refused.is_empty());
        assert!(a.log.store.get(&layout::relay_refused(RELAY, 1)).unwrap().is_none(), "its kept copy is gone");
    }

    #[test]
    fn a_restore_and_an_audit_copy_go_on_past_a_unit_every_device_refuses_and_an_audit_copy_past_one_that_does_not_open()
     {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let (mut a, mut b, _) = two_devices(&dirs);
        let phrase = a.create_recovery().unwrap();
        let wrapped = a.wrapped_recovery_key().unwrap().unwrap();
        let mut units: Vec<(u64, Vec<u8>)> =
            a.relay_outbox(RELAY).unwrap().into_iter().enumerate().map(|(n, unit)| (n as u64 + 1, unit)).collect();
        let bad = units.len() as u64 + 1;
        units.push((bad, refused_beside_good(&mut b).0));
        let mut altered = units[0].1.clone();
        let middle = altered.len() / 2;
        altered[middle] ^= 1;
        let with_altered: Vec<_> = units.iter().cloned().chain([(bad + 1, altered)]).collect();

        let unwrapped = crate::recovery::unwrap(&phrase, &wrapped).unwrap();
        let identity = DeviceIdentity::generate().unwrap();
        let (mut copy, refused) =
            Workspace::copy_from_units(&dirs[2].path().join("copy"), protection(), identity, unwrapped, &with_altered)
                .unwrap();
        assert_eq!(
            refused.iter().map(|(seq, e)| (*seq, e.code())).collect::<Vec<_>>(),
            [(bad, ErrorCode::BundleMalformed), (bad + 1, ErrorCode::SyncUnitCorrupt)]
        );
        assert_eq!(copy.list(Collection::Plans).unwrap().len(), 2, "the unit's good part is in the copy");

        // A restore stops at the unit that does not open, before it writes anything.
        let unwrapped = crate::recovery::unwrap(&phrase, &wrapped).unwrap();
        let identity = DeviceIdentity::generate().unwrap();
        let stopped = dirs[3].path().join("stopped");
        let restore =
            Workspace::restore_from_units(&stopped, protection(), identity, unwrapped, RELAY, None, &with_altered, "c");
        assert_eq!(restore.err().map(|e| e.code()), Some(ErrorCode::SyncUnitCorrupt));
        assert!(!stopped.exists());

        let unwrapped = crate::recovery::unwrap(&phrase, &wrapped).unwrap();
        let identity = DeviceIdentity::generate().unwrap();
        let restored_dir = dirs[3].path().join("restored");
        let mut restored =
            Workspace::restore_from_units(&restored_dir, protection(), identity, unwrapped, RELAY, None, &units, "c")
                .unwrap();
        assert_eq!(restored.list(Collection::Plans).unwrap().len(), 2);
        let refused = restored.unsettled_units(RELAY).unwrap().refused;
        assert_eq!((restored.relay_state(RELAY).unwrap().cursor, refused.keys().copied().collect()), (bad, vec![bad]));
    }
}
