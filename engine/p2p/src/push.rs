//! Pushes: how a change reaches a live peer without a session.
//!
//! A session costs a hello, two phases of rounds and a digest exchange, and Automerge's sync
//! message for a document reads that document's whole history: against a 100k-change document
//! each message costs tens of milliseconds. On a live link each side already knows which heads
//! the other held when they last agreed (the persisted peer state), so the side that gained a
//! few changes sends exactly those, as signed units, with its heads digest ([`Frame::Push`]).
//! The receiver takes them in with every check an import makes (signature, authorized signer,
//! envelope; the root first, then the peer checked again against the device list it brought),
//! durably, and answers with its own digest. Equal digests mean both hold the same changes:
//! each side records that in its peer state, as a converged session does. Anything else (a
//! change waiting for dependencies, a document the receiver does not know yet) leaves the
//! digests different, and a session follows (the dialer's, whichever side pushed), which
//! settles whatever is left.

use std::sync::Arc;

use adiuva_engine::Workspace;
use adiuva_engine::workspace::{PeerHeads, PeerPush, ROOT_DOCUMENT};
use adiuva_model::DeviceId;

use crate::SharedWorkspace;
use crate::error::{PeerError, Result};
use crate::frame::{Frame, ROUND_BUDGET};
use crate::session::{SessionReport, with_workspace};

/// The most changes a push carries; beyond it the peer is told to run a session.
pub const PUSH_LIMIT: usize = 1000;

/// What this device sends `peer` about its changes: nothing when its heads digest is one the
/// peer is known to hold (`known`), a push of the new changes when the peer state says which
/// they are and they are few, else a notice. A push comes with the heads it brings the peer to.
pub(crate) fn news_for(
    workspace: &mut Workspace,
    peer: DeviceId,
    known: [Option<[u8; 32]>; 2],
) -> adiuva_engine::Result<Option<(Frame, Option<PeerHeads>)>> {
    let digest = workspace.peer_heads()?.digest();
    if known.contains(&Some(digest)) {
        return Ok(None);
    }
    let states = workspace.peer_states(&peer)?;
    let news = match workspace.peer_push(&states, PUSH_LIMIT)? {
        Some(PeerPush { units, heads }) if units.iter().map(|(_, unit)| unit.len()).sum::<usize>() <= ROUND_BUDGET => {
            (Frame::Push { digest: heads.digest(), units }, Some(heads))
        }
        _ => (Frame::Notice, None),
    };
    Ok(Some(news))
}

/// Records that `peer` holds exactly `heads`: the digests of a push and its answer matched.
pub(crate) async fn settle(shared: &Arc<dyn SharedWorkspace>, peer: DeviceId, heads: PeerHeads) -> Result<()> {
    with_workspace(shared, peer, move |w| {
        let mut states = w.peer_states(&peer)?;
        states.settled(&heads);
        states.last_sync = Some(chrono::Utc::now());
        w.set_peer_states(&peer, &states)
    })
    .await
}

/// Takes in a push from `peer` (see the module docs), every import durable. The report's
/// `digest` is this side's heads digest, the answer to send; when it is the peer's
/// (`converged`), the heads come too, for [`settle`] once the answer is sent.
pub(crate) async fn take(
    shared: &Arc<dyn SharedWorkspace>,
    peer: DeviceId,
    digest: [u8; 32],
    mut units: Vec<(String, Vec<u8>)>,
) -> Result<(SessionReport, Option<PeerHeads>)> {
    // The root first: it says who may write and which documents exist.
    units.sort_by_key(|(document, _)| document != ROOT_DOCUMENT);
    let (report, heads, removed) = with_workspace(shared, peer, move |w| {
        let mut report = SessionReport { peer: Some(peer), ..SessionReport::default() };
        report.bytes_received = units.iter().map(|(name, unit)| (name.len() + unit.len()) as u64).sum();
        for (document, unit) in &units {
            if document == ROOT_DOCUMENT {
                take_unit(w, document, unit, &mut report)?;
                if let Err(error) = w.check_peer(&peer) {
                    return Ok((report, None, Some(error)));
                }
            } else if w.document_names()?.contains(document) {
                take_unit(w, document, unit, &mut report)?;
            }
            // A document unknown here waits for the session the different digests start.
        }
        let heads = w.peer_heads()?;
        report.digest = heads.digest();
        report.converged = report.digest == digest;
        let settled = report.converged.then_some(heads);
        Ok((report, settled, None))
    })
    .await?;
    match removed {
        Some(error) => {
            Err(PeerError::Refused { peer: peer.to_string(), reason: format!("{error} (learned from its push)") })
        }
        None => Ok((report, heads)),
    }
}

fn take_unit(
    workspace: &mut Workspace,
    document: &str,
    unit: &[u8],
    report: &mut SessionReport,
) -> adiuva_engine::Result<()> {
    let imported = workspace.import_changes(document, unit)?;
    report.applied += imported.applied;
    report.pending += imported.pending + imported.refused.len();
    Ok(())
}
