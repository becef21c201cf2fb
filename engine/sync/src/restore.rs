//! Restoring a workspace on a machine that holds nothing of it: sign in as a new device, open
//! the relay's wrapped recovery key with the phrase, prove the phrase to the relay (which then
//! authorizes the device), fetch the latest restore point, pull every unit after it, and
//! rebuild the workspace from them.

use std::path::Path;

use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::{KeyProtection, OpenedPoint, Workspace, open_restore_point, recovery};

use crate::account::Relay;
use crate::client::{RecoveryView, RelayClient};
use crate::error::{Result, SyncError};
use crate::sync::{self, Progress};

/// What a recovery proof signs (the relay's `RECOVERY_PROOF_CONTEXT`), then the workspace,
/// the device and the challenge, each on a line.
const RECOVERY_PROOF_CONTEXT: &str = "adiuva relay recovery proof v1";

/// Where to restore from.
pub struct RestoreFrom<'a> {
    pub server: &'a str,
    pub email: &'a str,
    pub password: &'a str,
    /// The workspace's id on the relay.
    pub workspace: &'a str,
    pub phrase: &'a str,
}

/// The relay's recovery record opened with the phrase: a wrong phrase, or a record of another
/// workspace, is a typed error.
pub(crate) fn unwrap_record(record: &RecoveryView, from: &RestoreFrom<'_>) -> Result<recovery::Unwrapped> {
    let wrapped = adiuva_model::hex::decode(&record.wrapped_key)
        .ok_or_else(|| SyncError::Malformed { what: "recovery".into(), detail: "wrapped_key is not hex".into() })?;
    let unwrapped = recovery::unwrap(from.phrase, &wrapped)?;
    if unwrapped.workspace_id.to_string() != from.workspace {
        return Err(SyncError::Engine(adiuva_engine::Error::UnitForeign {
            unit: "recovery key".into(),
            expected: from.workspace.to_owned(),
            found: unwrapped.workspace_id.to_string(),
        }));
    }
    Ok(unwrapped)
}

/// Restores workspace `from.workspace` into `dir` (empty or missing) as a new device named
/// `name`, then syncs once so the relay holds the device's addition. A wrong phrase, a unit
/// altered or of another workspace, or a page of the sequence replayed or cut short is a typed
/// error, and `dir` gets no workspace. The units numbered in `hold` are taken in last, and
/// held back if they do not open, as a sync holds them (see `HeldUnit`), instead of stopping
/// the restore: the way past a unit the person judged junk (a device uploaded what no device
/// can open) that no restore point covers yet.
pub fn restore(
    dir: &Path,
    protection: KeyProtection,
    from: &RestoreFrom<'_>,
    name: &str,
    hold: &[u64],
    progress: &mut dyn FnMut(Progress),
) -> Result<Workspace> {
    // The new key store's passphrase key (Argon2id) is derived while the relay checks the
    // account's password (Argon2id too): otherwise it competes with the restore's loading.
    let protection = std::thread::Builder::new()
        .name("passphrase-key".into())
        .spawn(move || protection.derived())
        .map_err(|e| adiuva_engine::Error::Store(e.into()))?;
    let identity = DeviceIdentity::generate().map_err(adiuva_engine::Error::from)?;
    let device = identity.device_id();
    let client = RelayClient::new(from.server);
    let session = client.sign_in(false, from.email, from.password, device)?;
    let token = session.access_token.clone();
    let record = client.get_recovery(&token, from.workspace)?;
    let unwrapped = unwrap_record(&record, from)?;
    let message = format!("{RECOVERY_PROOF_CONTEXT}\n{}\n{device}\n{}", from.workspace, record.challenge);
    let signature = unwrapped.keys.identity.sign(message.as_bytes());
    client.authorize_by_recovery(&token, from.workspace, &record.challenge, &signature)?;
    // The latest restore point, if any, holds every unit up to its cursor: only the units after
    // it are pulled.
    let point = match client.backup_history(&token, from.workspace)?.last() {
        Some(latest) => {
            // The history lists points without their blobs.
            let metadata = client.backup(&token, &latest.id.to_string())?;
            let blobs =
                crate::backup::fetch_point(&metadata, progress, |id| client.get_blob(&token, from.workspace, id))?;
            Some((
                open_restore_point(&unwrapped.workspace_id.to_bytes(), &unwrapped.epochs, &blobs)?,
                metadata.blob_ids,
            ))
        }
        None => None,
    };
    let (point, point_blobs) = point.unzip();
    let point_blobs = point_blobs.unwrap_or_default();
    let mut cursor = point.as_ref().map_or(0, OpenedPoint::relay_cursor);
    let start = cursor;
    let (mut units, mut held) = (Vec::new(), Vec::new());
    loop {
        let page = client.changes(&token, from.workspace, cursor)?;
        if page.changes.is_empty() {
            break;
        }
        for entry in page.changes {
            progress(Progress::Pulling { done: cursor - start, total: page.head.saturating_sub(start) });
            if point_blobs.contains(&entry.id) {
                cursor = entry.seq;
                continue;
            }
            let bytes = client.get_blob(&token, from.workspace, &entry.id)?;
            if !sync::passed_over(&bytes) {
                let list = if hold.contains(&entry.seq) { &mut held } else { &mut units };
                list.push((entry.seq, bytes));
            }
            cursor = entry.seq;
        }
    }
    progress(Progress::Pulling { done: cursor - start, total: cursor - start });
    let relay = Relay::unstored(client, from.email, session);
    let protection = protection.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let mut workspace = Workspace::restore_from_units(
        dir,
        protection,
        identity,
        unwrapped,
        &relay.account.server,
        point,
        &units,
        name,
    )?;
    for (seq, bytes) in held {
        let server = &relay.account.server;
        match workspace.open_unit(server, seq, &bytes) {
            Ok(_) => {}
            Err(error) if error.leaves_unit_unopened() => workspace.hold_unit(server, seq, &error)?,
            Err(error) => return Err(error.into()),
        }
    }
    relay.store(&mut workspace)?;
    // Past what was passed over too (the point's own blobs among it), so the first sync does
    // not fetch it again.
    workspace.relay_passed(&relay.account.server, cursor)?;
    // Whole from here: the first sync is a sync like any other, which the next one resumes.
    workspace.finish_restore()?;
    sync::sync_once(&mut workspace, progress)?;
    Ok(workspace)
}
