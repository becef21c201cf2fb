//! Restore points on the relay: the engine's restore point (every document compacted, sealed
//! under the snapshot key) uploaded as blobs of the workspace's sequence (which devices pass
//! over when they pull) and described on the relay's backup routes; listed; and applied back.

use adiuva_engine::{Error as EngineError, Workspace};
use adiuva_model::api::BackupMetadata;
use tracing::info;

use crate::account::Relay;
use crate::error::{Result, SyncError};
use crate::sync::Progress;

/// What applying a restore point did.
#[derive(Clone, Debug, Default)]
pub struct PointRestored {
    /// Changes this device lacked, applied.
    pub applied: usize,
    /// Changes kept aside until what they build on arrives.
    pub pending: usize,
    /// Changes refused as a removed device's.
    pub refused: usize,
}

/// Makes a restore point of the workspace now and keeps it on the relay.
pub fn backup_now(workspace: &mut Workspace, progress: &mut dyn FnMut(Progress)) -> Result<BackupMetadata> {
    let mut relay = Relay::of(workspace)?;
    let ws = workspace.workspace_id().to_string();
    let point = workspace.restore_point(&relay.account.server)?;
    let mut hasher = blake3::Hasher::new();
    let mut ids = Vec::new();
    let total = point.blobs.len() as u64;
    for (done, blob) in point.blobs.iter().enumerate() {
        progress(Progress::Pushing { done: done as u64, total });
        hasher.update(blob);
        ids.push(relay.call(workspace, |client, token| client.put_blob(token, &ws, blob))?.id);
    }
    progress(Progress::Pushing { done: total, total });
    let size: u64 = point.blobs.iter().map(|blob| blob.len() as u64).sum();
    let checksum = hasher.finalize().to_hex().to_string();
    let metadata = relay.call(workspace, |client, token| client.put_backup(token, &ws, &checksum, size, &ids))?;
    info!(id = %metadata.id, documents = point.documents, bytes = size, "restore point kept on the relay");
    Ok(metadata)
}

/// The workspace's restore points on the relay, oldest first.
pub fn backup_list(workspace: &mut Workspace) -> Result<Vec<BackupMetadata>> {
    let mut relay = Relay::of(workspace)?;
    let ws = workspace.workspace_id().to_string();
    relay.call(workspace, |client, token| client.backup_history(token, &ws))
}

/// Fetches restore point `id` and applies it: every blob checked (against its id, its
/// checksum, and by the engine: workspace, key, signature, numbering) before anything is
/// imported, so a tampered, foreign or truncated point is a typed error and leaves the
/// workspace as it was.
pub fn restore_point(workspace: &mut Workspace, id: &str, progress: &mut dyn FnMut(Progress)) -> Result<PointRestored> {
    if id.len() != 26 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SyncError::Engine(EngineError::InvalidInput {
            detail: format!("{id:?} is not a restore point id"),
        }));
    }
    let mut relay = Relay::of(workspace)?;
    let ws = workspace.workspace_id().to_string();
    let metadata = relay.call(workspace, |client, token| client.backup(token, id))?;
    if metadata.workspace.as_deref() != Some(ws.as_str()) {
        return Err(SyncError::Engine(EngineError::UnitForeign {
            unit: format!("restore point {id}"),
            expected: ws,
            found: metadata.workspace.unwrap_or_default(),
        }));
    }
    let blobs = fetch_point(&metadata, progress, |blob_id| {
        relay.call(workspace, |client, token| client.get_blob(token, &ws, blob_id))
    })?;
    let imported = workspace.apply_restore_point(&blobs)?;
    info!(id, applied = imported.applied, "restore point applied");
    Ok(PointRestored { applied: imported.applied, pending: imported.pending, refused: imported.refused.len() })
}

/// The blobs of the restore point `metadata` describes, fetched with `get_blob` in order, their
/// checksum checked against the metadata's (the engine checks the rest as it opens them).
pub(crate) fn fetch_point(
    metadata: &BackupMetadata,
    progress: &mut dyn FnMut(Progress),
    mut get_blob: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Vec<Vec<u8>>> {
    let mut hasher = blake3::Hasher::new();
    let mut blobs = Vec::new();
    let total = metadata.blob_ids.len() as u64;
    for (done, blob_id) in metadata.blob_ids.iter().enumerate() {
        progress(Progress::Pulling { done: done as u64, total });
        let blob = get_blob(blob_id)?;
        hasher.update(&blob);
        blobs.push(blob);
    }
    progress(Progress::Pulling { done: total, total });
    if hasher.finalize().to_hex().as_str() != metadata.checksum {
        return Err(SyncError::Engine(EngineError::UnitCorrupt { unit: format!("restore point {}", metadata.id) }));
    }
    Ok(blobs)
}
