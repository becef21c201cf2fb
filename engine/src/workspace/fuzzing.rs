//! The decoders of what a relay hands a device, reachable without a workspace, for the fuzz
//! targets (`fuzz/`): each opens with keys its caller gives, so a target that knows them reaches
//! the decoders behind the AEAD, and each sealer is the one the workspace uses, on any payload.
//! Not an API: nothing else calls these.

use crate::crypto::WorkspaceKey;
use crate::error::Result;
use crate::identity::DeviceIdentity;

pub use super::relay::OpenedUnit;
pub use super::restore_point::OpenedBlob;

/// The identity whose secret halves are these.
pub fn identity(signing: [u8; 32], box_secret: [u8; 32]) -> DeviceIdentity {
    DeviceIdentity::from_secret_bytes(zeroize::Zeroizing::new(signing), zeroize::Zeroizing::new(box_secret))
}

/// A relay unit opened as [`crate::Workspace::open_unit`] opens it, with `keys`' bundle keys.
pub fn open_relay_unit(workspace_id: &[u8; 16], keys: &[WorkspaceKey], bytes: &[u8]) -> Result<OpenedUnit> {
    super::relay::open_unit_bytes("fuzz", workspace_id, &super::relay::bundle_keys(keys), bytes)
}

/// `payload` sealed as a relay unit's payload under `current`, signed by `identity`.
pub fn seal_relay_unit(
    workspace_id: &[u8; 16],
    current: &WorkspaceKey,
    identity: &DeviceIdentity,
    payload: &[u8],
) -> Result<Vec<u8>> {
    super::relay::UNIT_FRAME.seal(workspace_id, current, identity, payload)
}

/// A restore point's blob opened as [`crate::Workspace::apply_restore_point`] opens it, with
/// `keys`' snapshot keys (the signer is not checked against a device list).
pub fn open_restore_point_blob(workspace_id: &[u8; 16], keys: &[WorkspaceKey], bytes: &[u8]) -> Result<OpenedBlob> {
    super::restore_point::open_restore_blob_bytes("fuzz", workspace_id, keys, bytes)
}

/// `payload` sealed as a restore point blob's payload under `current`, signed by `identity`.
pub fn seal_restore_point_blob(
    workspace_id: &[u8; 16],
    current: &WorkspaceKey,
    identity: &DeviceIdentity,
    payload: &[u8],
) -> Result<Vec<u8>> {
    super::restore_point::RESTORE_POINT_FRAME.seal(workspace_id, current, identity, payload)
}

/// A key envelope (an epoch's key sealed to a device's box key, as the relay keeps it) opened as
/// [`crate::Workspace::accept_key_envelope`] opens it.
pub fn open_key_envelope(
    identity: &DeviceIdentity,
    workspace_id: &[u8; 16],
    epoch: u32,
    envelope: &[u8],
) -> Option<WorkspaceKey> {
    super::devices::open_epoch_key(identity, workspace_id, epoch, envelope)
}

/// `key` sealed to `box_key` as a key envelope, hex (as the root document holds it).
pub fn seal_key_envelope(workspace_id: &[u8; 16], key: &WorkspaceKey, box_key: &[u8; 32]) -> Result<String> {
    super::devices::seal_epoch_key(workspace_id, key, box_key)
}
