//! One sync with the account's relay ([`sync_once`]): everything after the cursor pulled and
//! imported, the relay's device list and key envelopes brought in line with the workspace's,
//! then the outbox pushed.

use adiuva_engine::{Error as EngineError, UnitImport, Workspace};
use chrono::Utc;
use tracing::{info, warn};

use crate::account::Relay;
use crate::client::BlobEntry;
use crate::error::{Result, SyncError};

/// What a long sync reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Units uploaded of those to push.
    Pushing { done: u64, total: u64 },
    /// Relay numbers pulled of those after the cursor.
    Pulling { done: u64, total: u64 },
}

/// What one sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Units uploaded.
    pub pushed: u64,
    /// Units pulled.
    pub pulled: u64,
    /// Changes applied from them.
    pub applied: usize,
    /// Changes kept aside until their dependencies arrive.
    pub pending: usize,
    /// Changes refused as a removed device's.
    pub refused: usize,
    /// Units of the relay's sequence this device refused and keeps to try again (all of them,
    /// not only this sync's).
    pub refused_units: usize,
    /// Units of the relay's sequence that did not open here, by number: held back, tried again
    /// at each sync (all of them, not only this sync's; see [`adiuva_engine::HeldUnit`]).
    pub held_units: Vec<(u64, adiuva_engine::HeldUnit)>,
    /// The relay's sequence number this device has pulled up to.
    pub cursor: u64,
    /// This device's changes the relay has not acknowledged (0 after a complete sync).
    pub waiting: u64,
}

/// Syncs once with the account's relay. Transient failures are retried with backoff; a relay
/// that stays unreachable is [`SyncError::Offline`], and nothing is lost: the outbox and the
/// cursor are durable, so the next sync carries on where this one stopped.
pub fn sync_once(workspace: &mut Workspace, progress: &mut dyn FnMut(Progress)) -> Result<SyncReport> {
    let mut relay = Relay::of(workspace)?;
    let mut report = SyncReport::default();
    // Pulling first: what the relay holds is not pushed back to it (a device that just joined
    // holds the root as the relay does, without knowing it yet), and the relay's device list
    // is reconciled with a current one (a device back from away must not authorize again a
    // device removed meanwhile).
    pull(workspace, &mut relay, progress, &mut report)?;
    crate::invite::accept_joins(workspace, &mut relay)?;
    reconcile(workspace, &mut relay)?;
    push(workspace, &mut relay, progress, &mut report)?;
    let server = relay.account.server.clone();
    let mut state = workspace.relay_state(&server)?;
    state.last_sync = Some(Utc::now());
    workspace.set_relay_state(&server, &state)?;
    report.cursor = state.cursor;
    report.waiting = workspace.relay_waiting(&server)?;
    info!(pushed = report.pushed, pulled = report.pulled, applied = report.applied, "synced");
    Ok(report)
}

/// Brings the relay's authorized devices, key envelopes and recovery key in line with the
/// workspace: every device of the workspace authorized, every removed one revoked, each later
/// epoch's key sealed to each remaining device kept as its envelope (so a device away during a
/// rotation opens what was sealed under the new epoch), the recovery key wrapped with every
/// epoch. Each is done once; the state remembers it.
fn reconcile(workspace: &mut Workspace, relay: &mut Relay) -> Result<()> {
    let server = relay.account.server.clone();
    let ws = workspace.workspace_id().to_string();
    let mut state = workspace.relay_state(&server)?;
    let before = (state.authorized.len(), state.revoked.len(), state.envelopes.len(), state.recovery_epoch);
    let (active, removed) = workspace.relay_devices()?;
    for device in removed {
        if state.revoked.insert(device) {
            relay.call(workspace, |client, token| client.revoke_device(token, &ws, &device))?;
            info!(device = %device.short(), "revoked on the relay");
        }
    }
    let me = workspace.device_id();
    for device in active.into_iter().filter(|device| *device != me) {
        if state.authorized.insert(device) {
            relay.call(workspace, |client, token| client.authorize_device(token, &ws, &device))?;
        }
    }
    for (epoch, device, envelope) in workspace.key_envelopes()? {
        if state.envelopes.contains(&(epoch, device)) {
            continue;
        }
        relay.call(workspace, |client, token| client.put_envelope(token, &ws, &device, epoch, &envelope))?;
        state.envelopes.insert((epoch, device));
    }
    let epoch = workspace.key_epoch();
    if state.recovery_epoch != Some(epoch)
        && let Some((wrapped, verifier)) = workspace.recovery_record()?
    {
        relay.call(workspace, |client, token| client.put_recovery(token, &ws, &wrapped, &verifier))?;
        state.recovery_epoch = Some(epoch);
    }
    if before != (state.authorized.len(), state.revoked.len(), state.envelopes.len(), state.recovery_epoch) {
        workspace.set_relay_state(&server, &state)?;
    }
    Ok(())
}

/// Uploads the outbox (what a push cut short left, the same bytes), then, if anything new was
/// written meanwhile, a new one.
fn push(
    workspace: &mut Workspace,
    relay: &mut Relay,
    progress: &mut dyn FnMut(Progress),
    report: &mut SyncReport,
) -> Result<()> {
    let server = relay.account.server.clone();
    let ws = workspace.workspace_id().to_string();
    for _ in 0..2 {
        let units = workspace.relay_outbox(&server)?;
        if units.is_empty() {
            return Ok(());
        }
        let total = units.len() as u64;
        let mut numbers = Vec::with_capacity(units.len());
        for (done, unit) in units.iter().enumerate() {
            progress(Progress::Pushing { done: done as u64, total });
            numbers.push(relay.call(workspace, |client, token| client.put_blob(token, &ws, unit))?.seq);
        }
        progress(Progress::Pushing { done: total, total });
        workspace.relay_outbox_acknowledged(&server)?;
        report.pushed += total;
        // The device holds what its own units carry: where they follow the cursor with no one
        // else's in between, the cursor passes them and the next pull does not fetch them back.
        let mut cursor = workspace.relay_state(&server)?.cursor;
        numbers.sort_unstable();
        numbers.dedup();
        for number in numbers {
            if number == cursor + 1 {
                cursor = number;
            } else if number > cursor {
                break;
            }
        }
        workspace.relay_passed(&server, cursor)?;
    }
    Ok(())
}

/// Pulls every unit after the cursor, in order, and imports each; the cursor moves with each
/// import. A unit under an epoch this device lacks is opened once its key envelope is taken in;
/// one that does not open is held back, and every unit held back is fetched and tried again.
fn pull(
    workspace: &mut Workspace,
    relay: &mut Relay,
    progress: &mut dyn FnMut(Progress),
    report: &mut SyncReport,
) -> Result<()> {
    let server = relay.account.server.clone();
    let ws = workspace.workspace_id().to_string();
    let start = workspace.relay_state(&server)?.cursor;
    let mut cursor = start;
    loop {
        let page = relay.call(workspace, |client, token| client.changes(token, &ws, cursor))?;
        let total = page.head.saturating_sub(start);
        if page.changes.is_empty() {
            retry_held_units(workspace, relay, report)?;
            let retried = workspace.retry_refused_units(&server)?;
            report.applied += retried.applied;
            report.pending += retried.pending;
            report.refused += retried.refused.len();
            let unsettled = workspace.unsettled_units(&server)?;
            report.refused_units = unsettled.refused.len();
            report.held_units = unsettled.held.into_iter().collect();
            return Ok(());
        }
        for entry in &page.changes {
            progress(Progress::Pulling { done: entry.seq - 1 - start, total });
            pull_entry(workspace, relay, entry, report)?;
            cursor = entry.seq;
        }
        progress(Progress::Pulling { done: cursor - start, total });
    }
}

/// Fetches and takes in one entry of the sequence: a unit imported, a blob devices pass over
/// passed, a unit that does not open held back (the cursor passes each).
fn pull_entry(workspace: &mut Workspace, relay: &mut Relay, entry: &BlobEntry, report: &mut SyncReport) -> Result<()> {
    let server = relay.account.server.clone();
    let ws = workspace.workspace_id().to_string();
    let bytes = relay.call(workspace, |client, token| client.get_blob(token, &ws, &entry.id))?;
    if passed_over(&bytes) {
        return Ok(workspace.relay_passed(&server, entry.seq)?);
    }
    let imported = match open_unit(workspace, relay, entry.seq, &bytes) {
        Err(SyncError::Engine(error)) if error.leaves_unit_unopened() => {
            return Ok(workspace.hold_unit(&server, entry.seq, &error)?);
        }
        other => other?,
    };
    for refused in &imported.imported.refused {
        warn!(error = %refused, "a change was refused");
    }
    report.pulled += 1;
    report.applied += imported.imported.applied;
    report.pending += imported.imported.pending;
    report.refused += imported.imported.refused.len();
    Ok(())
}

/// Opens and imports unit `seq`; one under an epoch this device lacks is opened once the
/// epoch's key envelope on the relay is taken in.
fn open_unit(workspace: &mut Workspace, relay: &mut Relay, seq: u64, bytes: &[u8]) -> Result<UnitImport> {
    let server = relay.account.server.clone();
    match workspace.open_unit(&server, seq, bytes) {
        Err(EngineError::UnitEpochUnknown { epoch, .. }) => {
            let (ws, me) = (workspace.workspace_id().to_string(), workspace.device_id());
            let envelope = relay
                .call(workspace, |client, token| client.get_envelope(token, &ws, &me, epoch))?
                .ok_or(SyncError::Engine(EngineError::UnitEpochUnknown { unit: format!("#{seq}"), epoch }))?;
            workspace.accept_key_envelope(epoch, &envelope)?;
            info!(epoch, "learned a key epoch from its envelope on the relay");
            Ok(workspace.open_unit(&server, seq, bytes)?)
        }
        other => Ok(other?),
    }
}

/// The most units held back that one sync tries again, those tried least first: a device that
/// uploaded many would otherwise make every sync of every device fetch them all.
const HELD_RETRIES_PER_SYNC: usize = 16;

/// Fetches units held back again (up to [`HELD_RETRIES_PER_SYNC`]), each by its number (the
/// relay may have been at fault, and may list another blob there now), and takes each in as
/// [`pull_entry`] does.
fn retry_held_units(workspace: &mut Workspace, relay: &mut Relay, report: &mut SyncReport) -> Result<()> {
    let (server, ws) = (relay.account.server.clone(), workspace.workspace_id().to_string());
    let mut held: Vec<(u32, u64)> =
        workspace.unsettled_units(&server)?.held.iter().map(|(seq, held)| (held.tries, *seq)).collect();
    held.sort_unstable();
    for (_, seq) in held.into_iter().take(HELD_RETRIES_PER_SYNC) {
        if let Some(entry) = relay.call(workspace, |client, token| client.entry_at(token, &ws, seq))? {
            pull_entry(workspace, relay, &entry, report)?;
        }
    }
    Ok(())
}

/// Whether a blob of the sequence is not a unit but something devices pass over: a join
/// acceptance (sealed to the joining device alone) or a restore point's part.
pub(crate) fn passed_over(bytes: &[u8]) -> bool {
    bytes.starts_with(crate::invite::ACCEPTANCE_MAGIC) || adiuva_engine::is_restore_point(bytes)
}
