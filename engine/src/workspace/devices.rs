//! The devices of a workspace and who may write to it.
//!
//! The root document holds the device list and the sealed workspace keys:
//!
//! ```text
//! devices/ID   { name, box_key, added_at, added_by, removal: { removed_by, removed_at, epoch,
//!                accepted: { DOCUMENT: last accepted seq of the device's actor } } }
//! keys/EPOCH   { ID: the epoch's key sealed to device ID's box key }
//! ```
//!
//! It changes only through events: `workspace.created` (the first device), `device.added`,
//! `device.renamed`, `device.removed` followed by `key.rotated` (a new key epoch, sealed to
//! the devices that remain), `device.removal_amended`, each a change attested by a device the
//! list authorizes when it is imported.
//!
//! **The rule** every device applies to every change it imports, from the list as its root
//! document holds it (so two devices holding the same root reach the same verdict, whatever
//! order they learned things in):
//! - the signer must be in the list (added by an authorized device, or the first device);
//! - if it was removed, only its changes the removals accepted pass: per document, up to the
//!   last sequence number of its actor that the remover had seen. Concurrent removals of one
//!   device are all kept (as Automerge conflicts) and the most any of them accepted counts,
//!   since each remover already holds what it accepted. One exception: a removal of the very
//!   device that removed it, made before it saw that removal, passes (two devices removing
//!   each other are both removed; see ARCHITECTURE.md, "Devices removing each other");
//! - a device listed only through an add by a removed device beyond what its removal accepts
//!   (unless a device listed despite the removal amended it) is treated as removed;
//! - the epoch it wrote under must be one it was given: epoch 1 (every device added gets it)
//!   or one whose key was sealed to it.
//!
//! A removed device keeps what it held: every record and event it could read before its
//! removal, and the workspace keys of the epochs up to then. It gets no later epoch, so it
//! cannot read anything sealed after its removal, and its later changes are refused.

use std::collections::{BTreeMap, BTreeSet};

use adiuva_model::DeviceId;
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::commit::Operation;
use super::sync::ChangeFacts;
use super::{ROOT_DOCUMENT, Workspace};
use crate::authorship::Attestation;
use crate::crypto::{SecretKey, WorkspaceKey};
use crate::error::{Error, Result};
use crate::identity;
use crate::store::WriteBatch;

const EPOCH_KEY_DOMAIN: &[u8] = b"adiuva epoch key v1\0";

/// A device as the list shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub name: String,
    /// Its X25519 box key, hex.
    pub box_key: String,
    pub added_at: Option<String>,
    /// The device that added it (`None` for the workspace's first device).
    pub added_by: Option<DeviceId>,
    /// Its removals (several when devices removed it concurrently).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<Removal>,
    /// Whether it is the device this workspace is open on.
    #[serde(default)]
    pub this_device: bool,
}

impl DeviceInfo {
    pub fn is_removed(&self) -> bool {
        !self.removals.is_empty()
    }

    /// The last sequence number of this device's changes in `document` that is accepted, or
    /// `None` if every one is (not removed).
    fn accepted_until(&self, document: &str) -> Option<u64> {
        if self.removals.is_empty() {
            return None;
        }
        Some(self.removals.iter().filter_map(|removal| removal.accepted.get(document)).copied().max().unwrap_or(0))
    }
}

/// One removal of a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub removed_by: Option<DeviceId>,
    pub removed_at: Option<String>,
    /// Per document, the last sequence number of the removed device's actor accepted.
    pub accepted: BTreeMap<String, u64>,
    /// The device that extended this removal to what it held, when it is an amendment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amended_by: Option<DeviceId>,
    /// For an amendment, the least root sequence number the removals it replaced accepted
    /// (what an amendment by a device the removed one added is measured against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal_root: Option<u64>,
}

impl Removal {
    /// Who wrote this entry: the amending device, or the remover.
    fn author(&self) -> Option<DeviceId> {
        self.amended_by.or(self.removed_by)
    }

    fn root_accepted(&self) -> u64 {
        self.accepted.get(ROOT_DOCUMENT).copied().unwrap_or(0)
    }

    /// What the removal itself accepted of the root, before any amendment (0 for an
    /// amendment written before amendments kept it).
    fn removal_root(&self) -> u64 {
        match self.amended_by {
            None => self.root_accepted(),
            Some(_) => self.removal_root.unwrap_or(0),
        }
    }
}

/// The device list and which epochs were sealed to whom, read from the root document.
#[derive(Clone, Debug, Default)]
pub(super) struct DeviceList {
    pub devices: BTreeMap<DeviceId, DeviceInfo>,
    /// Per epoch, the devices it was sealed to (with the sealed key).
    pub sealed: BTreeMap<u32, BTreeMap<DeviceId, Vec<u8>>>,
    /// Per removed device, the root changes (sequence numbers) in which it removed a device
    /// that was removing it at the same time: they stand whatever its removal accepted.
    counter_removals: BTreeMap<DeviceId, BTreeSet<u64>>,
    /// The devices listed only through an add by a removed device beyond what its removal
    /// accepts: their changes are refused like a removed device's, until an amendment by a
    /// device listed despite the removal accepts the add.
    unvouched: BTreeSet<DeviceId>,
}

/// Why a change is refused.
pub(super) enum Refusal {
    Unknown,
    Removed,
    Epoch(u32),
}

impl DeviceList {
    pub fn read(root: &Automerge) -> Self {
        let mut list = DeviceList::default();
        // Where each removal entry was written: (removed device, index among its removals, object).
        let mut written = Vec::new();
        if let Some(devices) = map_at(root, &automerge::ROOT, "devices") {
            for key in root.keys(&devices) {
                let (Ok(id), Some(entry)) = (key.parse::<DeviceId>(), map_at(root, &devices, &key)) else {
                    continue;
                };
                let objects = maps_at(root, &entry, "removal");
                let removals = objects
                    .iter()
                    .map(|removal| Removal {
                        removed_by: text(root, removal, "removed_by").and_then(|id| id.parse().ok()),
                        removed_at: text(root, removal, "removed_at"),
                        amended_by: text(root, removal, "amended_by").and_then(|id| id.parse().ok()),
                        removal_root: number(root, removal, "removal_root"),
                        accepted: map_at(root, removal, "accepted")
                            .map(|accepted| {
                                root.keys(&accepted)
                                    .filter_map(|doc| Some((doc.clone(), number(root, &accepted, &doc)?)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect();
                written.extend(objects.into_iter().enumerate().map(|(index, object)| (id, index, object)));
                let info = DeviceInfo {
                    id,
                    name: text(root, &entry, "name").unwrap_or_default(),
                    box_key: text(root, &entry, "box_key").unwrap_or_default(),
                    added_at: text(root, &entry, "added_at"),
                    added_by: text(root, &entry, "added_by").and_then(|id| id.parse().ok()),
                    removals,
                    this_device: false,
                };
                list.devices.insert(id, info);
            }
        }
        if let Some(keys) = map_at(root, &automerge::ROOT, "keys") {
            for epoch in root.keys(&keys) {
                let Ok(number) = epoch.parse::<u32>() else { continue };
                let entry = list.sealed.entry(number).or_default();
                // Rotations made concurrently each wrote this epoch: a device any of them sealed
                // it to was given it.
                for sealed in maps_at(root, &keys, &epoch) {
                    for device in root.keys(&sealed) {
                        let bytes = text(root, &sealed, &device).and_then(|hex| adiuva_model::hex::decode(&hex));
                        if let (Ok(id), Some(bytes)) = (device.parse::<DeviceId>(), bytes) {
                            entry.entry(id).or_insert(bytes);
                        }
                    }
                }
            }
        }
        list.counter_removals = list.find_counter_removals(root, &written);
        list.unvouched = list.find_unvouched(root);
        list
    }

    /// The devices not listed despite some removal (see `unvouched`). Each removed device's
    /// chain of adds is walked only for the devices it reaches, so a list with no removal, or
    /// whose removed devices added no one, costs nothing more.
    fn find_unvouched(&self, root: &Automerge) -> BTreeSet<DeviceId> {
        let mut unvouched = BTreeSet::new();
        for removed in self.devices.values().filter(|device| device.is_removed()) {
            let reached: Vec<DeviceId> = self
                .devices
                .keys()
                .filter(|id| **id != removed.id && !unvouched.contains(*id) && self.reaches(**id, removed.id))
                .copied()
                .collect();
            if reached.is_empty() {
                continue;
            }
            let root_until = self.vouched_acceptance(root, removed.id).get(ROOT_DOCUMENT).copied().unwrap_or(0);
            unvouched.extend(reached.into_iter().filter(|id| !self.listed_despite(root, *id, removed.id, root_until)));
        }
        unvouched
    }

    /// Whether `adder` is on `device`'s chain of adders.
    fn reaches(&self, device: DeviceId, adder: DeviceId) -> bool {
        let mut current = device;
        // Each step moves to an adder; a chain longer than the list is a cycle.
        for _ in 0..=self.devices.len() {
            match self.devices.get(&current).and_then(|info| info.added_by) {
                Some(next) if next == adder => return true,
                Some(next) => current = next,
                None => return false,
            }
        }
        false
    }

    /// The removals made by a device that the device it removed was removing at the same time
    /// (neither had seen the other's removal): see [`Self::authorize`]. Looked for only when
    /// two devices each hold a removal by the other, so the root's changes are rarely listed.
    fn find_counter_removals(
        &self,
        root: &Automerge,
        written: &[(DeviceId, usize, ObjId)],
    ) -> BTreeMap<DeviceId, BTreeSet<u64>> {
        // The indices of `removed`'s removals made by `remover` (amendments aside).
        let by = |removed: &DeviceId, remover: &DeviceId| -> Vec<usize> {
            self.devices.get(removed).map_or_else(Vec::new, |info| {
                let by_remover =
                    |removal: &Removal| removal.amended_by.is_none() && removal.removed_by == Some(*remover);
                (0..info.removals.len()).filter(|&index| by_remover(&info.removals[index])).collect()
            })
        };
        let seq_of = |removed: &DeviceId, index: usize| {
            let object = written.iter().find(|(id, i, _)| id == removed && *i == index).map(|(_, _, object)| object);
            object.and_then(|object| written_in(root, object))
        };
        let mut found: BTreeMap<DeviceId, BTreeSet<u64>> = BTreeMap::new();
        for (target, info) in &self.devices {
            for (index, removal) in info.removals.iter().enumerate().filter(|(_, r)| r.amended_by.is_none()) {
                let Some(remover) = removal.removed_by else { continue };
                // `remover` removed `target`: that stands beyond `remover`'s own removal if
                // `target` removed `remover` by a change `remover` had not seen.
                let unseen = by(&remover, target)
                    .into_iter()
                    .any(|other| seq_of(&remover, other).is_some_and(|seq| removal.root_accepted() < seq));
                if unseen && let Some(seq) = seq_of(target, index) {
                    found.entry(remover).or_default().insert(seq);
                }
            }
        }
        found
    }

    /// Whether `signer` may have written the change of `document` with sequence number `seq`
    /// under key epoch `epoch` (see the module docs).
    pub fn authorize(&self, signer: &DeviceId, document: &str, seq: u64, epoch: u32) -> Result<(), Refusal> {
        let Some(device) = self.devices.get(signer) else {
            return Err(Refusal::Unknown);
        };
        let counter_removal =
            || document == ROOT_DOCUMENT && self.counter_removals.get(signer).is_some_and(|seqs| seqs.contains(&seq));
        let beyond_removal = device.accepted_until(document).is_some_and(|until| seq > until) && !counter_removal();
        if beyond_removal || self.unvouched.contains(signer) {
            return Err(Refusal::Removed);
        }
        if epoch != 1 && !self.sealed.get(&epoch).is_some_and(|sealed| sealed.contains_key(signer)) {
            return Err(Refusal::Epoch(epoch));
        }
        Ok(())
    }

    /// The devices not removed.
    pub fn active(&self) -> impl Iterator<Item = &DeviceInfo> {
        self.devices.values().filter(|device| !device.is_removed())
    }

    /// Whether `device` is in the list whatever becomes of `removed`'s changes beyond
    /// `root_until` (the last root sequence number of `removed` accepted): it is the first
    /// device, or its chain of adders reaches it without passing through an add by `removed`
    /// that the removal did not accept.
    fn listed_despite(&self, root: &Automerge, device: DeviceId, removed: DeviceId, root_until: u64) -> bool {
        let mut current = device;
        // Each step moves to an adder; a chain longer than the list is a cycle.
        for _ in 0..=self.devices.len() {
            if current == removed {
                return false;
            }
            let Some(info) = self.devices.get(&current) else { return false };
            match info.added_by {
                None => return true,
                Some(adder) if adder == removed => {
                    return added_in(root, &current).is_some_and(|seq| seq <= root_until);
                }
                Some(adder) => current = adder,
            }
        }
        false
    }

    /// What the removals of `removed` accept, per document, counting only entries whose author
    /// every device lists: an amendment by a device that `removed` added after its removal is
    /// refused by the devices that never saw the add, so it cannot stand in for an amendment
    /// they would accept. Authors vouched for may raise the accepted root sequence, which may
    /// vouch for more authors: iterated to a fixed point from the least any removal accepted.
    fn vouched_acceptance(&self, root: &Automerge, removed: DeviceId) -> BTreeMap<String, u64> {
        let Some(info) = self.devices.get(&removed) else { return BTreeMap::new() };
        let mut root_until = info.removals.iter().map(Removal::removal_root).min().unwrap_or(0);
        loop {
            let vouched: Vec<&Removal> = info
                .removals
                .iter()
                .filter(|removal| {
                    removal.author().is_some_and(|author| self.listed_despite(root, author, removed, root_until))
                })
                .collect();
            let raised = vouched.iter().map(|removal| removal.root_accepted()).max().unwrap_or(0);
            if raised <= root_until {
                let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
                for (document, seq) in vouched.iter().flat_map(|removal| &removal.accepted) {
                    let entry = accepted.entry(document.clone()).or_default();
                    *entry = (*entry).max(*seq);
                }
                return accepted;
            }
            root_until = raised;
        }
    }
}

/// The sequence number of the root change that created `device`'s entry (its `device.added`),
/// within the changes of its adder's actor.
fn added_in(root: &Automerge, device: &DeviceId) -> Option<u64> {
    let devices = map_at(root, &automerge::ROOT, "devices")?;
    written_in(root, &map_at(root, &devices, &device.to_string())?)
}

/// The sequence number of the root change that created `object`, within its author's changes.
fn written_in(root: &Automerge, object: &ObjId) -> Option<u64> {
    let ObjId::Id(counter, actor, _) = object else { return None };
    root.get_changes_meta(&[])
        .iter()
        .find(|meta| *meta.actor == *actor && (meta.start_op..=meta.max_op).contains(counter))
        .map(|meta| meta.seq)
}

fn map_at(doc: &Automerge, object: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(object, key).ok()?? {
        (Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

/// Every map at `key` of `object`, concurrent ones (Automerge conflicts) included.
fn maps_at(doc: &Automerge, object: &ObjId, key: &str) -> Vec<ObjId> {
    doc.get_all(object, key)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(value, id)| matches!(value, Value::Object(ObjType::Map)).then_some(id))
        .collect()
}

fn text(doc: &Automerge, object: &ObjId, key: &str) -> Option<String> {
    match doc.get(object, key).ok()?? {
        (Value::Scalar(scalar), _) => scalar.as_str().map(str::to_owned),
        _ => None,
    }
}

fn number(doc: &Automerge, object: &ObjId, key: &str) -> Option<u64> {
    match doc.get(object, key).ok()?? {
        (Value::Scalar(scalar), _) => scalar.as_u64(),
        _ => None,
    }
}

/// What an epoch's key sealed to a device says: the workspace and epoch are inside the box,
/// so a sealed key copied to another workspace or epoch is refused.
pub(super) fn seal_epoch_key(workspace_id: &[u8; 16], key: &WorkspaceKey, box_key: &[u8; 32]) -> Result<String> {
    let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(EPOCH_KEY_DOMAIN.len() + 52));
    plaintext.extend_from_slice(EPOCH_KEY_DOMAIN);
    plaintext.extend_from_slice(workspace_id);
    plaintext.extend_from_slice(&key.epoch.to_le_bytes());
    plaintext.extend_from_slice(key.key.as_bytes());
    Ok(adiuva_model::hex::encode(&identity::seal_to(box_key, &plaintext)?))
}

pub(super) fn open_epoch_key(
    identity: &identity::DeviceIdentity,
    workspace_id: &[u8; 16],
    epoch: u32,
    sealed: &[u8],
) -> Option<WorkspaceKey> {
    let plaintext = identity.unseal(sealed)?;
    let rest = plaintext.strip_prefix(EPOCH_KEY_DOMAIN)?.strip_prefix(workspace_id.as_slice())?;
    let key = rest.strip_prefix(epoch.to_le_bytes().as_slice())?;
    Some(WorkspaceKey { epoch, key: SecretKey::from_slice(key)? })
}

/// The root-document edits of the device events.
pub(super) fn apply_device_event(
    tx: &mut impl Transactable,
    operation: &Operation,
    author: &DeviceId,
    time: &DateTime<Utc>,
) -> Result<()> {
    let root_error =
        |e: automerge::AutomergeError| Error::DocumentCorrupt { document: ROOT_DOCUMENT.into(), detail: e.to_string() };
    let time = time.to_rfc3339();
    match operation {
        Operation::AddDevice { device, name, box_key, sealed } => {
            let devices = existing_or_new_map(tx, &automerge::ROOT, "devices").map_err(root_error)?;
            let entry = tx.put_object(&devices, device.to_string(), ObjType::Map).map_err(root_error)?;
            tx.put(&entry, "name", name.as_str()).map_err(root_error)?;
            tx.put(&entry, "box_key", box_key.as_str()).map_err(root_error)?;
            tx.put(&entry, "added_at", time.as_str()).map_err(root_error)?;
            tx.put(&entry, "added_by", author.to_string()).map_err(root_error)?;
            let keys = existing_or_new_map(tx, &automerge::ROOT, "keys").map_err(root_error)?;
            for (epoch, sealed) in sealed {
                let epoch = existing_or_new_map(tx, &keys, &epoch.to_string()).map_err(root_error)?;
                tx.put(&epoch, device.to_string(), sealed.as_str()).map_err(root_error)?;
            }
        }
        Operation::RenameDevice { device, name } => {
            let devices = existing_or_new_map(tx, &automerge::ROOT, "devices").map_err(root_error)?;
            let entry = existing_or_new_map(tx, &devices, &device.to_string()).map_err(root_error)?;
            tx.put(&entry, "name", name.as_str()).map_err(root_error)?;
        }
        Operation::RemoveDevice { device, accepted, epoch } => {
            let removal = put_removal(tx, device, accepted).map_err(root_error)?;
            tx.put(&removal, "removed_by", author.to_string()).map_err(root_error)?;
            tx.put(&removal, "removed_at", time.as_str()).map_err(root_error)?;
            tx.put(&removal, "epoch", u64::from(*epoch)).map_err(root_error)?;
        }
        Operation::RotateKey { epoch, sealed } => {
            let keys = existing_or_new_map(tx, &automerge::ROOT, "keys").map_err(root_error)?;
            let epoch_map = tx.put_object(&keys, epoch.to_string(), ObjType::Map).map_err(root_error)?;
            for (to, sealed) in sealed {
                tx.put(&epoch_map, to.to_string(), sealed.as_str()).map_err(root_error)?;
            }
        }
        Operation::AmendRemoval { device, accepted, removed_by, removed_at, removal_root } => {
            let removal = put_removal(tx, device, accepted).map_err(root_error)?;
            tx.put(&removal, "removal_root", *removal_root).map_err(root_error)?;
            if let Some(removed_by) = removed_by {
                tx.put(&removal, "removed_by", removed_by.to_string()).map_err(root_error)?;
            }
            if let Some(removed_at) = removed_at {
                tx.put(&removal, "removed_at", removed_at.as_str()).map_err(root_error)?;
            }
            tx.put(&removal, "amended_by", author.to_string()).map_err(root_error)?;
        }
        _ => {}
    }
    Ok(())
}

/// A new removal entry of `device` accepting `accepted`. It replaces the removals this device
/// has seen (each accepted no more, see `amend_removal`); removals made concurrently stay
/// beside it as Automerge conflicts, all of which count.
fn put_removal(
    tx: &mut impl Transactable,
    device: &DeviceId,
    accepted: &[(String, u64)],
) -> Result<ObjId, automerge::AutomergeError> {
    let devices = existing_or_new_map(tx, &automerge::ROOT, "devices")?;
    let entry = existing_or_new_map(tx, &devices, &device.to_string())?;
    let removal = tx.put_object(&entry, "removal", ObjType::Map)?;
    let accepted_map = tx.put_object(&removal, "accepted", ObjType::Map)?;
    for (document, seq) in accepted {
        tx.put(&accepted_map, document.as_str(), *seq)?;
    }
    Ok(removal)
}

/// The map at `key` of `parent`, made if there is none (a workspace from before the key list).
fn existing_or_new_map(
    tx: &mut impl Transactable,
    parent: &ObjId,
    key: &str,
) -> Result<ObjId, automerge::AutomergeError> {
    match tx.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => tx.put_object(parent, key, ObjType::Map),
    }
}

impl Workspace {
    /// The device list as the root document holds it.
    pub(super) fn device_list(&mut self) -> Result<DeviceList> {
        Ok(DeviceList::read(&self.document(ROOT_DOCUMENT)?.doc))
    }

    /// Every device of the workspace, removed ones included.
    pub fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        let me = self.device_id();
        Ok(self
            .device_list()?
            .devices
            .into_values()
            .map(|device| DeviceInfo { this_device: device.id == me, ..device })
            .collect())
    }

    /// The device whose id is `text` or starts with it (at least 4 hex digits).
    pub fn resolve_device(&mut self, text: &str) -> Result<DeviceInfo> {
        let text = text.trim().to_ascii_lowercase();
        let matches: Vec<DeviceInfo> = self
            .devices()?
            .into_iter()
            .filter(|device| text.len() >= 4 && device.id.to_string().starts_with(&text))
            .collect();
        match <[DeviceInfo; 1]>::try_from(matches) {
            Ok([device]) => Ok(device),
            Err(matches) if matches.is_empty() => Err(Error::DeviceNotFound { id: text }),
            Err(matches) => Err(Error::InvalidInput {
                detail: format!("{} devices match {text:?}; give more of the id", matches.len()),
            }),
        }
    }

    /// Renames a device (any device of the list, this one included).
    pub fn rename_device(&mut self, device: DeviceId, name: &str) -> Result<()> {
        let name = device_name(name)?;
        if !self.device_list()?.devices.contains_key(&device) {
            return Err(Error::DeviceNotFound { id: device.to_string() });
        }
        let event = self.root_event("device.renamed", None, Operation::RenameDevice { device, name }, true);
        self.commit_prepared(vec![event], WriteBatch::default())?;
        Ok(())
    }

    /// Removes a device: its changes up to what this device has seen stay accepted, later ones
    /// are refused everywhere, and a new key epoch is sealed to every device that remains, so
    /// the removed one cannot read anything written from now on. Returns the new epoch.
    pub fn remove_device(&mut self, device: DeviceId) -> Result<u32> {
        if device == self.device_id() {
            return Err(Error::InvalidInput {
                detail: "a device cannot remove itself; remove it from another one".into(),
            });
        }
        let list = self.device_list()?;
        match list.devices.get(&device) {
            None => return Err(Error::DeviceNotFound { id: device.to_string() }),
            Some(info) if info.is_removed() => {
                return Err(Error::DeviceRemoved { device: device.to_string(), document: None, change: None });
            }
            Some(_) => {}
        }
        // What of its changes this device holds, per document: those stay accepted.
        let accepted = self.held_of(device)?;
        // Past every epoch the root holds too, sealed to this device or not: a rotation it saw
        // but was not given must not be overwritten by one of the same number.
        let held = self.log.keyring.workspace_keys().iter().map(|key| key.epoch).max().unwrap_or(0);
        let epoch = held.max(list.sealed.keys().copied().max().unwrap_or(0)) + 1;
        let key = WorkspaceKey { epoch, key: SecretKey::random()? };
        let mut sealed = Vec::new();
        for remaining in list.active().filter(|d| d.id != device) {
            let Some(box_key) = adiuva_model::hex::decode_array::<32>(&remaining.box_key) else {
                continue; // a device whose box key does not decode can get no key
            };
            sealed.push((remaining.id, seal_epoch_key(&self.log.workspace_id, &key, &box_key)?));
        }
        // The new epoch enters the stored keyring in the same batch as the event that
        // announces it. The event itself is written under the epoch before (the one others can
        // check it against), so memory takes the new epoch only once the batch is durable.
        self.log.keyring.add_epoch(key.clone());
        let sealed_keyring = self.log.keyring.seal(&self.log.identity);
        self.log.keyring.remove_epoch(epoch);
        let mut batch = WriteBatch::default();
        batch.put(super::layout::KEYRING, sealed_keyring?);
        let removal =
            self.root_event("device.removed", None, Operation::RemoveDevice { device, accepted, epoch }, true);
        let rotation =
            self.root_event("key.rotated", None, Operation::RotateKey { epoch, sealed }, true).caused_by(removal.id());
        self.commit_prepared(vec![removal, rotation], batch)?;
        self.log.keyring.add_epoch(key);
        info!(device = %device.short(), epoch, "device removed; new key epoch");
        Ok(epoch)
    }

    /// Takes into the keyring every epoch sealed to this device that it does not hold yet
    /// (after a rotation it was offline for). Returns how many it learned.
    pub(super) fn learn_epochs(&mut self) -> Result<usize> {
        let me = self.device_id();
        let list = self.device_list()?;
        let mut learned = 0;
        for (epoch, sealed) in &list.sealed {
            if self.log.keyring.epoch_key(*epoch).is_some() {
                continue;
            }
            let Some(bytes) = sealed.get(&me) else { continue };
            match open_epoch_key(&self.log.identity, &self.log.workspace_id, *epoch, bytes) {
                Some(key) => {
                    self.log.keyring.add_epoch(key);
                    learned += 1;
                }
                None => tracing::warn!(epoch, "a key sealed to this device does not open"),
            }
        }
        if learned > 0 && !self.log.read_only {
            self.log.store_keyring()?;
            info!(learned, "learned new key epochs");
        }
        Ok(learned)
    }

    /// After root changes were imported: takes in the epochs sealed to this device, amends the
    /// removals that accepted less of a removed device than this device holds (it applied
    /// them before it learned of the removal, or took in a removal the device made while it
    /// was being removed itself, and every device must end up accepting the same changes), and
    /// retries what waits in the pending area. `applied_by`: the signers of the root changes
    /// just applied.
    pub(super) fn root_imported(&mut self, before: &DeviceList, applied_by: &BTreeSet<DeviceId>) -> Result<()> {
        self.learn_epochs()?;
        let after = self.device_list()?;
        let changed: Vec<DeviceId> = after
            .devices
            .values()
            .filter(|device| device.is_removed())
            .filter(|device| {
                applied_by.contains(&device.id)
                    || before.devices.get(&device.id).is_none_or(|known| known.removals != device.removals)
            })
            .map(|device| device.id)
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        for device in changed {
            self.amend_removal(&after, device)?;
        }
        // The root first: a change kept aside there may add a device whose changes wait in
        // the others.
        let mut documents = self.pending_documents()?;
        documents.sort_by_key(|document| document != ROOT_DOCUMENT);
        for document in documents {
            self.retry_pending(&document)?;
        }
        Ok(())
    }

    /// The last sequence number of `device`'s actor in each document this device holds.
    fn held_of(&mut self, device: DeviceId) -> Result<Vec<(String, u64)>> {
        let actor = automerge::ActorId::from(&device.0[..16]);
        let mut held = Vec::new();
        for document in self.document_names()? {
            let doc = &self.document(&document)?.doc;
            let last = doc.get_changes_meta(&[]).iter().filter(|meta| *meta.actor == actor).map(|m| m.seq).max();
            if let Some(last) = last {
                held.push((document, last));
            }
        }
        Ok(held)
    }

    fn amend_removal(&mut self, list: &DeviceList, device: DeviceId) -> Result<()> {
        let Some(info) = list.devices.get(&device) else { return Ok(()) };
        let me = self.device_id();
        let (vouched, listed) = {
            let root = &self.document(ROOT_DOCUMENT)?.doc;
            let vouched = list.vouched_acceptance(root, device);
            let root_until = vouched.get(ROOT_DOCUMENT).copied().unwrap_or(0);
            (vouched, list.listed_despite(root, me, device, root_until))
        };
        // Listed only through an add the removal did not accept: the devices that refuse that
        // add would refuse this amendment too; one of those that hold the add amends instead.
        if !listed {
            return Ok(());
        }
        let held = self.held_of(device)?;
        if held.iter().all(|(document, seq)| vouched.get(document).is_some_and(|until| seq <= until)) {
            return Ok(());
        }
        let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
        for removal in &info.removals {
            for (document, seq) in &removal.accepted {
                let entry = accepted.entry(document.clone()).or_default();
                *entry = (*entry).max(*seq);
            }
        }
        for (document, seq) in held {
            let entry = accepted.entry(document).or_default();
            *entry = (*entry).max(seq);
        }
        let first = info.removals.first();
        let operation = Operation::AmendRemoval {
            device,
            accepted: accepted.into_iter().collect(),
            removed_by: first.and_then(|removal| removal.removed_by),
            removed_at: first.and_then(|removal| removal.removed_at.clone()),
            removal_root: info.removals.iter().map(Removal::removal_root).min().unwrap_or(0),
        };
        let event = self.root_event("device.removal_amended", None, operation, false);
        self.commit_prepared(vec![event], WriteBatch::default())?;
        info!(device = %device.short(), "removal amended: this device held more of its changes");
        Ok(())
    }

    /// Checks one received change against the device list.
    pub(super) fn check_authorized(
        list: &DeviceList,
        document: &str,
        change: &impl ChangeFacts,
        attestation: &Attestation,
    ) -> Result<()> {
        let refusal = match list.authorize(&attestation.signer, document, change.seq(), attestation.epoch) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        let (device, change, document) =
            (attestation.signer.to_string(), Some(change.hash().to_string()), Some(document.to_owned()));
        Err(match refusal {
            Refusal::Unknown => Error::DeviceUnknown { device, document, change },
            Refusal::Removed => Error::DeviceRemoved { device, document, change },
            Refusal::Epoch(epoch) => Error::EpochNotMember { device, epoch, document, change },
        })
    }

    /// The epochs sealed for a new device: every epoch this device holds, sealed to `box_key`.
    pub(super) fn seal_all_epochs(&self, box_key: &[u8; 32]) -> Result<Vec<(u32, String)>> {
        self.log
            .keyring
            .workspace_keys()
            .iter()
            .map(|key| Ok((key.epoch, seal_epoch_key(&self.log.workspace_id, key, box_key)?)))
            .collect()
    }
}

/// A device name as stored: trimmed, non-empty, at most 64 characters.
pub(super) fn device_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput { detail: "a device name is 1 to 64 printable characters".into() });
    }
    Ok(name.to_owned())
}
