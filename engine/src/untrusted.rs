//! Automerge's entry points for what other devices send (and for the disk, which holds what
//! they sent): each guarded against what Automerge 0.12 does not check. Where it panics on
//! malformed bytes, the panic is a refusal here; where it would take in something it then
//! cannot save, walk or answer without bound, that is refused before it sees it. Most were
//! found by the `apply` fuzz target (FUZZING.md); each is described where it is guarded.

use automerge::{Automerge, Change, ChangeHash, LoadOptions, VerificationMode};

/// Automerge's load of `document` (a snapshot's, or bare Automerge bytes), with `verification`;
/// what fails is described. Automerge 0.12 panics on some malformed documents (an `unwrap` in
/// its column decoder, `hexane`), and documents come from other devices: such a panic is what
/// it says, bytes that are not a document.
pub fn load_document(document: &[u8], verification: VerificationMode) -> Result<Automerge, String> {
    // What `Automerge::save` writes: a document chunk, and changes as they came.
    only_chunks_of(document, &[DOCUMENT_CHUNK, CHANGE_CHUNK])?;
    let load = || Automerge::load_with_options(document, LoadOptions::new().verification_mode(verification));
    match std::panic::catch_unwind(load) {
        Ok(loaded) => loaded.map_err(|error| error.to_string()),
        Err(_) => Err("not an Automerge document (its decoder gave up)".into()),
    }
}

/// Automerge's parse of one change's bytes; what fails is described. Changes come from other
/// devices (and from the disk, where they came from other devices), and Automerge 0.12's
/// column decoder panics on some malformed changes (an `unwrap` in `hexane`, found by the
/// `apply` fuzz target): such a panic is what it says, bytes that are not a change.
pub fn parse_change(bytes: Vec<u8>) -> Result<Change, String> {
    // Every device sends a change's raw (uncompressed) bytes.
    only_chunks_of(&bytes, &[CHANGE_CHUNK])?;
    match std::panic::catch_unwind(|| Change::from_bytes(bytes)) {
        Ok(parsed) => parsed.map_err(|error| error.to_string()),
        Err(_) => Err("not an Automerge change (its decoder gave up)".into()),
    }
}

/// Automerge's chunk types that devices send: a document (`Automerge::save`) and a change.
const DOCUMENT_CHUNK: u8 = 0;
const CHANGE_CHUNK: u8 = 1;

/// Refuses `bytes` unless each of its chunks (`magic 4 | checksum 4 | type 1 | length uleb |
/// data`) is of one of the `allowed` types. Automerge parses whatever chunk it is given in full
/// before it looks at the type: a bundle chunk of 603 bytes made it allocate 24 GiB (found by
/// the `apply` fuzz target), and a compressed one is inflated without bound. Devices send
/// neither. Framing faults are left for Automerge to describe.
fn only_chunks_of(mut bytes: &[u8], allowed: &[u8]) -> Result<(), String> {
    while let Some((header, mut rest)) = bytes.split_at_checked(9) {
        let kind = header[8];
        if !allowed.contains(&kind) {
            return Err(format!("an Automerge chunk of type {kind}, which no device sends"));
        }
        let Some(length) = read_leb128(&mut rest).and_then(|length| usize::try_from(length).ok()) else {
            return Ok(());
        };
        let Some((_, next)) = rest.split_at_checked(length) else { return Ok(()) };
        bytes = next;
    }
    Ok(())
}

/// Automerge's `apply_changes` of `changes` to `doc`; what fails is described. Changes come from
/// other devices, and Automerge 0.12 panics on some that parse (an `unwrap` of an actor lookup
/// while it imports their operations, found by the `apply` fuzz target): a device that passed
/// every check, its signature included, could otherwise end the process that takes them in.
/// Such a panic is a refusal here. It can stop Automerge halfway through changing `doc`, which
/// is then left empty; on any error the caller drops `doc` or reads it again from the store.
pub fn apply_changes(doc: &mut Automerge, changes: impl IntoIterator<Item = Change> + Clone) -> Result<(), String> {
    let apply = std::panic::AssertUnwindSafe(|| doc.apply_changes(changes));
    match std::panic::catch_unwind(apply) {
        Ok(applied) => applied.map_err(|error| error.to_string()),
        Err(_) => {
            *doc = Automerge::new();
            Err("changes Automerge cannot apply (its importer gave up)".into())
        }
    }
}

/// Automerge's `get_changes(heads)`: the changes of `doc` since `heads`, as Automerge encodes
/// them. Built with debug assertions, Automerge checks that encoding against another and
/// panics where a change it took in does not encode to its own hash, which a change from
/// another device can make happen: that panic is a refusal here too.
pub fn changes_since(doc: &Automerge, heads: &[ChangeHash]) -> Result<Vec<Change>, String> {
    std::panic::catch_unwind(|| doc.get_changes(heads))
        .map_err(|_| "a change Automerge does not encode again as it came".to_owned())
}

/// The number a change depending on `deps` numbers its operations from, as Automerge numbers
/// them: one past the last its dependencies hold (`max_op` gives each one's last), or 1 with
/// none; `None` while a dependency is missing. Automerge takes in a change numbered otherwise,
/// and can then hold a document whose save does not load.
pub fn expected_start_op(deps: &[ChangeHash], max_op: impl Fn(&ChangeHash) -> Option<u64>) -> Option<u64> {
    let mut last = 0;
    for dep in deps {
        last = last.max(max_op(dep)?);
    }
    Some(last + 1)
}

/// The most probes a Bloom filter in a sync message from another device may ask for per hash
/// (Automerge makes its own with 7).
pub const BLOOM_PROBES_LIMIT: u64 = 64;

/// The most `have` entries a sync message may carry. Automerge makes one at most; answering,
/// it probes every change it weighs sending against every entry's Bloom filter, so a message
/// of a thousand entries (131 KB) cost it 0.38 s on a document of 6,250 changes here, and one
/// filling a frame would hold a core for minutes.
pub const SYNC_HAVES_LIMIT: usize = 4;

/// Whether Automerge can take in `message`, a sync message from another device, and answer
/// it. Automerge 0.12 uses the Bloom filters the message carries as they come: for every
/// change it weighs sending, it allocates a vector of as many probes as a filter names (up to
/// 2^32, which ends the process) and divides by the filter's size in bits (zero panics). A
/// filter with entries must have bits and at most [`BLOOM_PROBES_LIMIT`] probes, and a message
/// at most [`SYNC_HAVES_LIMIT`] filters.
pub fn check_sync_message(message: &automerge::sync::Message) -> Result<(), String> {
    if message.have.len() > SYNC_HAVES_LIMIT {
        return Err(format!("{} Bloom filters in one message", message.have.len()));
    }
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        let mut rest = bytes.as_slice();
        // No entries: written as nothing, and never probed.
        if rest.is_empty() {
            continue;
        }
        let (Some(_entries), Some(_bits_per_entry), Some(probes)) =
            (read_leb128(&mut rest), read_leb128(&mut rest), read_leb128(&mut rest))
        else {
            return Err("a Bloom filter's parameters do not read".into());
        };
        if rest.is_empty() || rest.len() > (u32::MAX / 8) as usize {
            return Err(format!("a Bloom filter of {} bytes", rest.len()));
        }
        if !(1..=BLOOM_PROBES_LIMIT).contains(&probes) {
            return Err(format!("a Bloom filter of {probes} probes"));
        }
    }
    Ok(())
}

/// An unsigned LEB128 number of at most 64 bits from the front of `bytes`.
fn read_leb128(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_no_device_sends_are_refused_before_automerge_parses_them() {
        use automerge::transaction::Transactable;
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "text", "a long value that compresses well ".repeat(40)).unwrap();
        tx.commit();
        let mut change = doc.get_changes(&[]).remove(0);
        assert!(parse_change(change.raw_bytes().to_vec()).is_ok());
        let mut saved = doc.save();
        assert!(load_document(&saved, VerificationMode::Check).is_ok());
        // The same change compressed (Automerge inflates it without bound), after a document
        // or on its own; and a bundle, found by the `apply` fuzz target (24 GiB to parse).
        let compressed = change.bytes().into_owned();
        assert_eq!(compressed[8], 2, "a compressed chunk");
        assert!(parse_change(compressed.clone()).is_err());
        saved.extend(&compressed);
        assert!(load_document(&saved, VerificationMode::DontCheck).is_err());
        let bundle = &include_bytes!("../../fuzz/regressions/apply/a-bundle-chunk-automerge-parses-without-bound")[1..];
        assert_eq!(bundle[8], 3, "a bundle chunk");
        assert!(parse_change(bundle.to_vec()).is_err());
        assert!(load_document(bundle, VerificationMode::DontCheck).is_err());
    }
}
