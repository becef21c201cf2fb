//! The units of a relay's sequence this device has not taken in whole: **held** units did not
//! open here ([`HeldUnit`]); **refused** units opened, but their sender's payload or a part of
//! it was refused ([`RefusedUnit`]). The cursor passes both, so no such unit stops the sync.
//!
//! Each is a record of its own (`n/RELAY\0N`, sealed JSON: why, and for a refused unit the root
//! heads it was last tried against), and a refused unit's bytes are kept beside it
//! (`u/RELAY\0N`). Holding or refusing one more unit writes that unit's records and the small
//! sync state (`y/RELAY`, its cursor), never the others': a device of the workspace that
//! uploads thousands of units no one can take in costs each device one record per unit, where
//! one map inside the sync state, rewritten at each, cost the square of their number. Builds
//! before kept them so; [`Workspace::move_unsettled_units_out`] moves them out at open.

use std::collections::{BTreeMap, BTreeSet};

use adiuva_model::ErrorCode;
use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::relay::parse_relay_state;
use super::restore_point::RelayCoverage;
use super::sync::Imported;
use super::{ROOT_DOCUMENT, RelayState, Workspace, layout};
use crate::chunk::BlobKind;
use crate::encode;
use crate::error::{Error, Result, json_error};
use crate::store::WriteBatch;

/// A unit of the relay's sequence that did not open here ([`Error::leaves_unit_unopened`]):
/// the relay altered or replaced it, or a device uploaded something no device can open, and
/// nothing tells the two apart. Either way it must not stop the sync: the units after it open
/// on their own, and this device's own units must still go out. The cursor passes it, and each
/// sync fetches it again by its number and tries once more; until it opens, the sync reports
/// it. Nothing of it is kept: its bytes may be the relay's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldUnit {
    /// The stable code of why it did not open, and the message.
    pub code: ErrorCode,
    pub reason: String,
    /// How often it was tried again since (the sync tries those tried least first).
    #[serde(default)]
    pub tries: u32,
}

/// A unit of the relay's sequence that authenticated as sealed by a device of the workspace
/// but that this device could not take in whole. The cursor passes it (a device that sent
/// something no one can take in must not stop everyone's sync); its bytes are kept, and it is
/// tried again once the root document moves, since the device list may then admit it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedUnit {
    /// What was refused: the document (none if the unit's payload itself), the stable code
    /// of the error and its message.
    pub refusals: Vec<(Option<String>, ErrorCode, String)>,
    /// The root document's heads when it was last tried.
    pub(super) root_heads: BTreeSet<String>,
}

/// The units of one relay's sequence this device has not taken in whole, by number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsettledUnits {
    pub held: BTreeMap<u64, HeldUnit>,
    pub refused: BTreeMap<u64, RefusedUnit>,
}

/// What builds before kept of held and refused units inside the sync state: read alone at
/// open, so the rest of the state is not built for it. Writing the state drops them.
#[derive(Deserialize)]
struct KeptInState {
    #[serde(default)]
    held: BTreeMap<u64, HeldUnit>,
    #[serde(default)]
    refused: BTreeMap<u64, RefusedUnit>,
}

/// One unit's record.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Unsettled {
    Held(HeldUnit),
    Refused(RefusedUnit),
}

impl Workspace {
    /// The units of `relay`'s sequence held back or refused here.
    pub fn unsettled_units(&self, relay: &str) -> Result<UnsettledUnits> {
        let prefix = layout::relay_unsettled_prefix(relay);
        let mut units = UnsettledUnits::default();
        for (key, sealed) in self.log.store.scan_prefix(&prefix)? {
            let seq = layout::relay_unsettled_seq(&prefix, &key)
                .ok_or_else(|| Error::WorkspaceFormat { detail: format!("{} is misnamed", layout::describe(&key)) })?;
            match self.open_unsettled(&key, &sealed)? {
                Unsettled::Held(unit) => {
                    units.held.insert(seq, unit);
                }
                Unsettled::Refused(unit) => {
                    units.refused.insert(seq, unit);
                }
            }
        }
        Ok(units)
    }

    /// What a restore point made now holds of `relay`'s sequence (see `restore_point`). Its
    /// cursor stops short of the first unit kept as refused: a device restored from the point
    /// pulls that unit again, and takes it in if this device later does. Units held back are
    /// passed on as held instead: pulled again, one of them would stop the restore itself (a
    /// restore takes in no unit that does not open), and the restored device retries them.
    pub(super) fn relay_coverage(&self, relay: &str) -> Result<RelayCoverage> {
        let state = self.relay_state(relay)?;
        let unsettled = self.unsettled_units(relay)?;
        let first = unsettled.refused.keys().next();
        let cursor = first.map_or(state.cursor, |first| state.cursor.min(first.saturating_sub(1)));
        let held = unsettled.held.range(..=cursor).map(|(seq, unit)| (*seq, unit.clone())).collect();
        Ok(state.coverage(cursor, held))
    }

    /// Records, in a workspace being restored from a restore point with `coverage`, that it
    /// holds what the point's maker held of `relay` and holds back what it held back.
    pub(super) fn set_relay_coverage(&mut self, relay: &str, coverage: RelayCoverage) -> Result<()> {
        let (state, held) = RelayState::covered(coverage);
        let mut batch = WriteBatch::default();
        for (seq, unit) in held {
            self.stage_unsettled(layout::relay_unsettled(relay, seq), &Unsettled::Held(unit), &mut batch)?;
        }
        self.stage_relay_state(relay, &state, &mut batch)?;
        self.log.write_durably(batch)
    }

    /// Stages, for unit `seq` of `relay` just opened, that it is refused for `refusals` (its
    /// bytes kept to be tried again), or, if there are none, that it is held back or refused
    /// no more.
    pub(super) fn stage_unit_outcome(
        &mut self,
        relay: &str,
        seq: u64,
        bytes: &[u8],
        refusals: &[Error],
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let kept = layout::relay_refused(relay, seq);
        if refusals.is_empty() {
            batch.delete(layout::relay_unsettled(relay, seq));
            batch.delete(kept);
            return Ok(());
        }
        let mut reasons = Vec::with_capacity(refusals.len());
        for refusal in refusals {
            warn!(relay, unit = seq, code = refusal.code().as_str(), error = %refusal, "refused a relay unit's part");
            reasons.push((refused_document(refusal), refusal.code(), refusal.to_string()));
        }
        let root_heads = self.heads(ROOT_DOCUMENT)?.iter().map(ChangeHash::to_string).collect();
        self.stage_unsettled(
            layout::relay_unsettled(relay, seq),
            &Unsettled::Refused(RefusedUnit { refusals: reasons, root_heads }),
            batch,
        )?;
        batch.put(kept.clone(), self.log.seal_local(&kept, BlobKind::RelayRefused, bytes)?);
        Ok(())
    }

    /// Tries again each unit of `relay` this device refused, if the root document moved since
    /// it was last tried (the device list may admit it now), until nothing more moves. Returns
    /// what they imported; those still refused stay kept.
    pub fn retry_refused_units(&mut self, relay: &str) -> Result<Imported> {
        let mut imported = Imported::default();
        loop {
            let root_heads: BTreeSet<String> = self.heads(ROOT_DOCUMENT)?.iter().map(ChangeHash::to_string).collect();
            let stale: Vec<u64> = (self.unsettled_units(relay)?.refused.iter())
                .filter(|(_, unit)| unit.root_heads != root_heads)
                .map(|(seq, _)| *seq)
                .collect();
            if stale.is_empty() {
                return Ok(imported);
            }
            for seq in stale {
                let key = layout::relay_refused(relay, seq);
                match self.log.store.get(&key)? {
                    Some(sealed) => {
                        let bytes = self.log.open_local("refused relay unit", &key, &sealed, BlobKind::RelayRefused)?;
                        imported.add(self.open_unit(relay, seq, &bytes)?.imported);
                    }
                    // Both are written in one batch: a record without its unit has nothing to try.
                    None => {
                        let mut batch = WriteBatch::default();
                        batch.delete(layout::relay_unsettled(relay, seq));
                        self.log.write_durably(batch)?;
                    }
                }
            }
        }
    }

    /// Holds back unit `seq` of `relay`, which did not open here for `error` (see
    /// [`HeldUnit`]): the cursor passes it. [`Self::open_unit`] releases it once it opens,
    /// [`Self::relay_passed`] if it turns out to be a blob devices pass over.
    pub fn hold_unit(&mut self, relay: &str, seq: u64, error: &Error) -> Result<()> {
        warn!(relay, unit = seq, code = error.code().as_str(), %error, "held back a relay unit that does not open");
        let tries = match self.unsettled_unit(relay, seq)? {
            Some(Unsettled::Held(held)) => held.tries.saturating_add(1),
            _ => 0,
        };
        let mut batch = WriteBatch::default();
        let held = HeldUnit { code: error.code(), reason: error.to_string(), tries };
        self.stage_unsettled(layout::relay_unsettled(relay, seq), &Unsettled::Held(held), &mut batch)?;
        self.stage_cursor_past(relay, seq, &mut batch)?;
        self.log.write_durably(batch)
    }

    /// Moves the cursor past number `seq` of `relay`: a blob of the sequence that is not a unit
    /// (a join acceptance sealed to a joining device, a restore point), with nothing to import.
    pub fn relay_passed(&mut self, relay: &str, seq: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        if let Some(Unsettled::Held(_)) = self.unsettled_unit(relay, seq)? {
            batch.delete(layout::relay_unsettled(relay, seq));
        }
        self.stage_cursor_past(relay, seq, &mut batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        self.log.write_durably(batch)
    }

    /// Stops trying held unit `seq` of `relay` again: the person judged it junk (see
    /// [`HeldUnit`]). The cursor has passed it already; should it ever open, its changes reach
    /// this device only through a peer that holds them.
    pub fn dismiss_held_unit(&mut self, relay: &str, seq: u64) -> Result<HeldUnit> {
        let Some(Unsettled::Held(unit)) = self.unsettled_unit(relay, seq)? else {
            return Err(Error::InvalidInput { detail: format!("relay unit #{seq} is not held back here") });
        };
        let mut batch = WriteBatch::default();
        batch.delete(layout::relay_unsettled(relay, seq));
        self.log.write_durably(batch)?;
        info!(relay, unit = seq, code = unit.code.as_str(), "dismissed a held relay unit");
        Ok(unit)
    }

    /// Moves the held and refused units a build before kept inside each relay's sync state
    /// into records of their own, each relay in one batch (run at open).
    pub(super) fn move_unsettled_units_out(&mut self) -> Result<()> {
        for (key, sealed) in self.log.store.scan_prefix(layout::RELAY_STATE_PREFIX)? {
            let bytes = self.log.open_local("relay state", &key, &sealed, BlobKind::RelayState)?;
            let KeptInState { held, refused } = parse_relay_state(&bytes)?;
            if held.is_empty() && refused.is_empty() {
                continue;
            }
            let state: RelayState = parse_relay_state(&bytes)?;
            let prefix = layout::relay_unsettled_prefix_of_state(&key)
                .ok_or_else(|| Error::WorkspaceFormat { detail: format!("{} is misnamed", layout::describe(&key)) })?;
            let mut batch = WriteBatch::default();
            let records = (held.into_iter().map(|(seq, unit)| (seq, Unsettled::Held(unit))))
                .chain(refused.into_iter().map(|(seq, unit)| (seq, Unsettled::Refused(unit))));
            for (seq, record) in records {
                self.stage_unsettled(layout::relay_unsettled_in(&prefix, seq), &record, &mut batch)?;
            }
            let relay = layout::describe(&key);
            self.stage_relay_state_at(key, &state, &mut batch)?;
            self.log.write_durably(batch)?;
            info!(relay, "moved held and refused relay units into records of their own");
        }
        Ok(())
    }

    /// Stages the cursor of `relay` moved to `seq`, if it is not past it already.
    fn stage_cursor_past(&self, relay: &str, seq: u64, batch: &mut WriteBatch) -> Result<()> {
        let mut state = self.relay_state(relay)?;
        if state.cursor < seq {
            state.cursor = seq;
            self.stage_relay_state(relay, &state, batch)?;
        }
        Ok(())
    }

    fn unsettled_unit(&self, relay: &str, seq: u64) -> Result<Option<Unsettled>> {
        let key = layout::relay_unsettled(relay, seq);
        match self.log.store.get(&key)? {
            Some(sealed) => Ok(Some(self.open_unsettled(&key, &sealed)?)),
            None => Ok(None),
        }
    }

    fn open_unsettled(&self, key: &[u8], sealed: &[u8]) -> Result<Unsettled> {
        let bytes = self.log.open_local("relay unit record", key, sealed, BlobKind::RelayUnsettled)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::WorkspaceFormat { detail: format!("{} {}", layout::describe(key), json_error(&e)) })
    }

    fn stage_unsettled(&self, key: Vec<u8>, record: &Unsettled, batch: &mut WriteBatch) -> Result<()> {
        let json = encode::json(record, "relay unit record")?;
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::RelayUnsettled, &json)?);
        Ok(())
    }
}

/// The document an error names, if any.
fn refused_document(error: &Error) -> Option<String> {
    match error {
        Error::BundleMalformed { document, .. }
        | Error::Envelope { document, .. }
        | Error::ChangeUnsigned { document, .. }
        | Error::ChangeBadSignature { document, .. }
        | Error::ChangeSignerMismatch { document, .. }
        | Error::ChangeEpochReplayed { document, .. } => Some(document.clone()),
        Error::DeviceUnknown { document, .. }
        | Error::DeviceRemoved { document, .. }
        | Error::EpochNotMember { document, .. } => document.clone(),
        Error::DocumentNameInvalid { name } => Some(name.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    // Tests fail loudly: unwrapping is how they assert.
    #![allow(clippy::unwrap_used)]

    use zeroize::Zeroizing;

    use super::*;
    use crate::workspace::sync::tests::{PASSPHRASE, protection};

    const RELAY: &str = "https://relay.test";

    fn stored_state_bytes(workspace: &Workspace) -> usize {
        workspace.log.store.get(&layout::relay_state(RELAY)).unwrap().unwrap().len()
    }

    #[test]
    fn holding_one_more_unit_writes_its_record_alone_not_every_unit_held_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut workspace = Workspace::init(dir.path(), protection(), "a").unwrap();
        let unopened = Error::UnitCorrupt { unit: "a unit".into() };
        workspace.hold_unit(RELAY, 1_000, &unopened).unwrap();
        let first = stored_state_bytes(&workspace);
        for seq in 1_001..1_200 {
            workspace.hold_unit(RELAY, seq, &unopened).unwrap();
        }
        // The cursor's digits are all that may change.
        assert_eq!(stored_state_bytes(&workspace), first, "the sync state grew with the units held");
        assert_eq!(workspace.unsettled_units(RELAY).unwrap().held.len(), 200);
        assert_eq!(workspace.relay_state(RELAY).unwrap().cursor, 1_199);
    }

    #[test]
    fn units_a_build_before_kept_inside_the_sync_state_move_into_records_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut workspace = Workspace::init(dir.path(), protection(), "a").unwrap();
        workspace.relay_passed(RELAY, 9).unwrap();
        // The sync state as builds before wrote it, units inside.
        let held = HeldUnit { code: ErrorCode::SyncUnitCorrupt, reason: "altered".into(), tries: 2 };
        let refused = RefusedUnit {
            refusals: vec![(Some("plans".into()), ErrorCode::DeviceUnknown, "unknown".into())],
            root_heads: BTreeSet::from(["00".to_owned()]),
        };
        let mut json = serde_json::to_value(workspace.relay_state(RELAY).unwrap()).unwrap();
        json["held"] = serde_json::json!({ "7": held });
        json["refused"] = serde_json::json!({ "4": refused });
        let key = layout::relay_state(RELAY);
        let mut batch = WriteBatch::default();
        let sealed = workspace.log.seal_local(&key, BlobKind::RelayState, json.to_string().as_bytes()).unwrap();
        batch.put(key.clone(), sealed);
        workspace.log.write_durably(batch).unwrap();
        drop(workspace);

        let workspace = Workspace::open(dir.path(), || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
        let expected = UnsettledUnits { held: BTreeMap::from([(7, held)]), refused: BTreeMap::from([(4, refused)]) };
        assert_eq!(workspace.unsettled_units(RELAY).unwrap(), expected);
        assert_eq!(workspace.relay_state(RELAY).unwrap().cursor, 9);
        let sealed = workspace.log.store.get(&key).unwrap().unwrap();
        let stored = workspace.log.open_local("relay state", &key, &sealed, BlobKind::RelayState).unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert!(stored.get("held").is_none() && stored.get("refused").is_none(), "{stored}");
    }
}
