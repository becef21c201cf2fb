//! The workspace's side of recovery (see [`crate::recovery`]): making a phrase, wrapping the
//! key epochs for the relay, and restoring onto an empty directory as a new device.

use std::path::Path;

use adiuva_model::{Actor, DeviceId, EventKind};
use automerge::ActorId;
use automerge::transaction::CommitOptions;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::commit::{EventDraft, Operation};
use super::devices::device_name;
use super::log::{self, Attest};
use super::relay::{OpenedUnit, bundle_keys, open_unit_bytes};
use super::restore_point::OpenedPoint;
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::chunk::BlobKind;
use crate::crypto::{SecretKey, WorkspaceKey, random_bytes};
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;
use crate::keystore::{self, KeyProtection};
use crate::recovery::{self, RecoveryKeys};
use crate::store::disk::{Disk, RealDisk};
use crate::store::{StoreError, WriteBatch};

/// The recovery identity's name in the device list.
const RECOVERY_DEVICE_NAME: &str = "recovery phrase";

impl Workspace {
    /// Makes a new recovery phrase: its identity joins the device list (so a machine restored
    /// with it can add itself), and its secret is kept sealed on this device, so the wrapped
    /// key can follow later epochs without the phrase. Returns the phrase, shown once.
    pub fn create_recovery(&mut self) -> Result<Zeroizing<String>> {
        let phrase = recovery::new_phrase()?;
        let keys = RecoveryKeys::from_phrase(&phrase, random_bytes()?)?;
        let recovery_device = keys.identity.device_id();
        // Every epoch is sealed to it like to any device: a restore writes under the current
        // epoch as the recovery identity, which must be one it was given.
        let sealed = self.seal_all_epochs(&keys.identity.box_public_key())?;
        let box_key = adiuva_model::hex::encode(&keys.identity.box_public_key());
        let operation =
            Operation::AddDevice { device: recovery_device, name: RECOVERY_DEVICE_NAME.into(), box_key, sealed };
        let event = self.root_event("device.added", None, operation, true);
        let mut stored = Zeroizing::new(keys.secret.as_bytes().to_vec());
        stored.extend_from_slice(&keys.salt);
        let mut batch = WriteBatch::default();
        batch.put(layout::RECOVERY, self.log.seal_local(layout::RECOVERY, BlobKind::Recovery, &stored)?);
        self.commit_prepared(vec![event], batch)?;
        info!(recovery = %recovery_device.short(), "recovery phrase made");
        Ok(phrase)
    }

    /// Every key epoch this device holds, wrapped under the recovery phrase's key (what the
    /// relay stores); `None` if no phrase was made on this device.
    pub fn wrapped_recovery_key(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.recovery_record()?.map(|(wrapped, _)| wrapped))
    }

    /// [`Self::wrapped_recovery_key`] with the recovery identity's public key: the verifier
    /// the relay checks a restoring device's proof of the phrase against.
    pub fn recovery_record(&self) -> Result<Option<(Vec<u8>, DeviceId)>> {
        let Some(sealed) = self.log.store.get(layout::RECOVERY)? else {
            return Ok(None);
        };
        let stored = Zeroizing::new(self.log.open_local("recovery", layout::RECOVERY, &sealed, BlobKind::Recovery)?);
        let bad = || Error::WorkspaceFormat { detail: "the stored recovery key is truncated".into() };
        let (secret, salt) = stored.split_at_checked(32).ok_or_else(bad)?;
        let keys = RecoveryKeys::from_secret(
            SecretKey::from_slice(secret).ok_or_else(bad)?,
            salt.try_into().map_err(|_| bad())?,
        );
        Ok(Some((keys.wrap(self.workspace_id(), self.log.keyring.workspace_keys())?, keys.identity.device_id())))
    }

    /// Restores a workspace into `dir` (empty or missing) from its recovery phrase, the wrapped
    /// key and the root document's bundle as the relay holds them. The machine becomes a new
    /// device (new keys, a new Automerge actor), added by the recovery identity; the other
    /// documents follow with [`Self::import_bundle`]. A wrong phrase, or a bundle of another
    /// workspace or altered, is a typed error and `dir` gets nothing.
    pub fn restore(
        dir: &Path,
        protection: KeyProtection,
        phrase: &str,
        wrapped: &[u8],
        root_bundle: &[u8],
        name: &str,
    ) -> Result<Workspace> {
        let name = device_name(name)?;
        let unwrapped = recovery::unwrap(phrase, wrapped)?;
        let root = super::sync::open_bundle(
            &unwrapped.workspace_id.to_bytes(),
            &unwrapped.epochs,
            ROOT_DOCUMENT,
            root_bundle,
        )?;
        let identity = DeviceIdentity::generate()?;
        let unlocked = keystore::create_for(unwrapped.workspace_id, protection, identity, unwrapped.epochs)?;
        let (mut workspace, batch) = Workspace::create_empty(dir, unwrapped.workspace_id, unlocked)?;
        workspace.import_into(ROOT_DOCUMENT, &root, batch)?;
        workspace.add_restored_device(&unwrapped.keys.identity, name)?;
        Ok(workspace)
    }

    /// Restores a workspace into `dir` (empty or missing) from a relay: `unwrapped` is the
    /// relay's wrapped recovery key opened with the phrase, `point` the latest restore point
    /// (opened with [`open_restore_point`](super::restore_point::open_restore_point)), if any,
    /// and `units` every unit of the relay's sequence after the point's cursor, with its number,
    /// in order. The machine becomes a new device with `identity` (the one it signed in to the
    /// relay as: new keys, a new Automerge actor), added by the recovery identity. Every unit
    /// is opened and checked (workspace, epoch, authentication, signature) before anything is
    /// written, so a foreign or altered unit leaves `dir` empty; the point's documents are
    /// adopted whole (see `restore_point`), then the units import in order through
    /// [`Self::open_unit`], which records the relay's cursor and keeps a unit every device
    /// refuses as they keep it (see `relay`), tried again at the end.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_from_units(
        dir: &Path,
        protection: KeyProtection,
        identity: DeviceIdentity,
        unwrapped: recovery::Unwrapped,
        relay: &str,
        point: Option<OpenedPoint>,
        units: &[(u64, Vec<u8>)],
        name: &str,
    ) -> Result<Workspace> {
        let name = device_name(name)?;
        let recovery::Unwrapped { workspace_id, keys, epochs } = unwrapped;
        let root = match &point {
            Some(point) => Some(point.root_changes()?),
            None => None,
        };
        let (opened, unopened) = open_units(workspace_id, &epochs, units);
        // Before anything is written: it may be the relay's doing (see `relay`).
        if let Some((_, error)) = unopened.into_iter().next() {
            return Err(error);
        }
        let (mut workspace, _) =
            Self::root_from_units(dir, protection, identity, workspace_id, epochs, root.as_deref(), &opened)?;
        if let Some(point) = point {
            let coverage = point.coverage().clone();
            workspace.apply_opened_point(point)?;
            // Only once the documents are durable: a restore cut short must not leave a cursor
            // past units whose changes it never stored (without one, the next sync pulls all).
            workspace.set_relay_coverage(relay, coverage)?;
        }
        workspace.add_restored_device(&keys.identity, name)?;
        for (seq, bytes) in units {
            workspace.open_unit(relay, *seq, bytes)?;
        }
        // A unit refused before the root change that admits its sender.
        workspace.retry_refused_units(relay)?;
        Ok(workspace)
    }

    /// A private copy, in `dir` (empty or missing), of the log a relay holds, for reading only
    /// (the audit tool's `--server`): every unit opened and checked as
    /// [`Self::restore_from_units`] does, imported through the same checked path, but nothing
    /// committed and nothing of the relay recorded: no `device.added`, no sync state. The copy's
    /// device (`identity`, shown to no one) is not in its device list: the copy holds the
    /// relay's log and nothing more. Returned with what every device refuses of that log
    /// (refused units' parts, by unit number: see `relay`) and the units that do not open
    /// (altered, foreign, under an epoch the phrase's key lacks), which the copy goes on
    /// without: an audit reports them, where a restore stops.
    pub fn copy_from_units(
        dir: &Path,
        protection: KeyProtection,
        identity: DeviceIdentity,
        unwrapped: recovery::Unwrapped,
        units: &[(u64, Vec<u8>)],
    ) -> Result<(Workspace, Vec<(u64, Error)>)> {
        let (opened, mut refused) = open_units(unwrapped.workspace_id, &unwrapped.epochs, units);
        let built =
            Self::root_from_units(dir, protection, identity, unwrapped.workspace_id, unwrapped.epochs, None, &opened);
        let (mut workspace, root_refused) = match built {
            Ok(built) => built,
            // Without the units that did not open, the root may not build (its first change
            // missing): the first of them is why.
            Err(error) => return Err(refused.into_iter().next().map_or(error, |(_, unopened)| unopened)),
        };
        refused.extend(root_refused);
        for (seq, unit) in opened {
            refused.extend(unit.refused.map(|refusal| (seq, refusal)));
            // The root came in whole, in order, before.
            for (document, signed) in unit.parts.iter().filter(|(document, _)| document != ROOT_DOCUMENT) {
                if let Err(refusal) = workspace.import_part(document, &unit.sender, signed)? {
                    refused.push((seq, refusal));
                }
            }
        }
        refused.sort_by_key(|(seq, _)| *seq);
        workspace.finish_restore()?;
        Ok((workspace, refused))
    }

    /// Creates the workspace in `dir` with `identity` and the key `epochs`, holding the root
    /// document of `point_root` (a restore point's root as signed changes), if any, then of
    /// the `opened` units in their order. Returns it with the root parts refused, by unit
    /// number (see `relay`).
    fn root_from_units(
        dir: &Path,
        protection: KeyProtection,
        identity: DeviceIdentity,
        workspace_id: ulid::Ulid,
        epochs: Vec<WorkspaceKey>,
        point_root: Option<&[u8]>,
        opened: &[(u64, OpenedUnit)],
    ) -> Result<(Workspace, Vec<(u64, Error)>)> {
        let mut root_parts =
            point_root.map(|root| (0, root)).into_iter().chain(opened.iter().flat_map(|(seq, unit)| {
                let roots = unit.parts.iter().filter(|(document, _)| document == ROOT_DOCUMENT);
                roots.map(|(_, signed)| (*seq, signed.as_slice()))
            }));
        let (_, first) = root_parts.next().ok_or_else(|| Error::UnitMalformed {
            unit: "relay".into(),
            detail: "the relay holds no root document to restore from".into(),
        })?;
        start_restore(dir)?;
        let unlocked = keystore::create_for(workspace_id, protection, identity, epochs)?;
        let (mut workspace, batch) = Workspace::create_empty(dir, workspace_id, unlocked)?;
        workspace.import_into(ROOT_DOCUMENT, first, batch)?;
        let mut refused = Vec::new();
        for (seq, signed) in root_parts {
            // A part every device refuses (see `relay`): a restore records it when its unit is
            // opened again in order.
            match workspace.import_changes(ROOT_DOCUMENT, signed) {
                Err(refusal) if refusal.refuses_sent() => refused.push((seq, refusal)),
                other => {
                    other?;
                }
            }
        }
        Ok((workspace, refused))
    }

    /// Marks the restore (or copy) that built this workspace finished: until then its directory
    /// does not open ([`Error::RestoreUnfinished`]), and the next restore into it starts over.
    pub fn finish_restore(&self) -> Result<()> {
        absent_is_fine(std::fs::remove_file(self.log.dir.join(UNFINISHED_FILE))).map_err(StoreError::from)?;
        RealDisk.sync_dir(&self.log.dir).map_err(StoreError::from)?;
        Ok(())
    }

    /// Commits `device.added` for this (restored) device, as the recovery identity.
    fn add_restored_device(&mut self, recovery: &DeviceIdentity, name: String) -> Result<()> {
        let me = self.device_id();
        let box_key = self.log.identity.box_public_key();
        let sealed = self.seal_all_epochs(&box_key)?;
        let operation = Operation::AddDevice { device: me, name, box_key: adiuva_model::hex::encode(&box_key), sealed };
        self.commit_root_as(recovery, "device.added", operation)?;
        info!(workspace = %self.workspace_id(), device = %me.short(), "restored as a new device");
        Ok(())
    }

    /// Commits a root event authored and attested by `identity` (the recovery identity), under
    /// its own Automerge actor, which continues from its last change in the root.
    fn commit_root_as(&mut self, identity: &DeviceIdentity, kind: &'static str, operation: Operation) -> Result<()> {
        let result = self.commit_root_as_inner(identity, kind, operation);
        if result.is_err() {
            self.docs.remove(ROOT_DOCUMENT);
        }
        result
    }

    fn commit_root_as_inner(
        &mut self,
        identity: &DeviceIdentity,
        kind: &'static str,
        operation: Operation,
    ) -> Result<()> {
        let draft = EventDraft::new(EventKind::from_static(kind), Actor::System);
        let mut envelope = self.envelope(draft, None);
        envelope.device = identity.device_id();
        let message = envelope.encode().map_err(|_| Error::Encode { what: "event envelope" })?;
        let own_actor = self.actor.clone();
        let loaded = self.document(ROOT_DOCUMENT)?;
        let before = loaded.doc.get_heads();
        loaded.doc.set_actor(ActorId::from(&identity.device_id().0[..16]));
        let options = CommitOptions::default().with_message(message).with_time(envelope.time.timestamp_millis());
        let applied = loaded.doc.transact_with(|_| options, |tx| operation.apply(tx, &envelope));
        loaded.doc.set_actor(own_actor);
        applied.map_err(|failure| failure.error)?;
        let changes = loaded.doc.get_changes(&before);
        let mut batch = WriteBatch::default();
        let staged = self.stage_document(ROOT_DOCUMENT, &changes, Attest::Device(identity), None, &mut batch)?;
        self.log.write_durably(batch)?;
        self.finish_staged(vec![staged]);
        Ok(())
    }
}

/// What was found of units, each with its number in the relay's sequence.
type ByUnit<T> = Vec<(u64, T)>;

/// Opens and checks every unit of `units` with the bundle keys of `epochs`: those that open,
/// and those that do not ([`Error::leaves_unit_unopened`]) with why, each with its number.
fn open_units(
    workspace_id: ulid::Ulid,
    epochs: &[WorkspaceKey],
    units: &[(u64, Vec<u8>)],
) -> (ByUnit<OpenedUnit>, ByUnit<Error>) {
    let keys = bundle_keys(epochs);
    let (mut opened, mut unopened) = (Vec::with_capacity(units.len()), Vec::new());
    for (seq, bytes) in units {
        match open_unit_bytes(&format!("#{seq}"), &workspace_id.to_bytes(), &keys, bytes) {
            Ok(unit) => opened.push((*seq, unit)),
            Err(error) => unopened.push((*seq, error)),
        }
    }
    (opened, unopened)
}

/// While a restore (or an audit's copy) builds a workspace, its directory holds this file: the
/// workspace is whole only once it is gone. A directory left with it (the process was killed,
/// the disk failed half-way) does not open, and the next restore into it starts over.
const UNFINISHED_FILE: &str = "restore-unfinished";

/// Whether `dir` holds a workspace whose restore did not finish.
pub(super) fn restore_unfinished(dir: &Path) -> bool {
    dir.join(UNFINISHED_FILE).exists()
}

/// Readies `dir` for a restore: what an unfinished restore left there (its store and witness)
/// is removed, then the marker is made durable before anything of the new workspace is.
fn start_restore(dir: &Path) -> Result<()> {
    RealDisk.create_dir_all(dir).map_err(StoreError::from)?;
    if restore_unfinished(dir) {
        // Not while another process has it open.
        let _lock = super::lock_dir(dir)?;
        absent_is_fine(std::fs::remove_dir_all(super::store_dir(dir))).map_err(StoreError::from)?;
        absent_is_fine(std::fs::remove_file(log::witness_path(dir))).map_err(StoreError::from)?;
        warn!(dir = %dir.display(), "removed what an unfinished restore left, to start over");
    }
    RealDisk.write_synced(&dir.join(UNFINISHED_FILE), b"").map_err(StoreError::from)?;
    RealDisk.sync_dir(dir).map_err(StoreError::from)?;
    Ok(())
}

/// A removal's outcome, where nothing to remove is as good as removed.
fn absent_is_fine(removed: std::io::Result<()>) -> std::io::Result<()> {
    match removed {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
