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
    columns_inflate_within(document, DOCUMENT_INFLATED_LIMIT)?;
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

/// Refuses `bytes` unless each of its chunks is of one of the `allowed` types. Automerge parses
/// whatever chunk it is given in full before it looks at the type: a bundle chunk of 603 bytes
/// made it allocate 24 GiB (found by the `apply` fuzz target), and a compressed one is inflated
/// without bound. Devices send neither.
fn only_chunks_of(bytes: &[u8], allowed: &[u8]) -> Result<(), String> {
    match chunks(bytes).find(|(kind, _)| !allowed.contains(kind)) {
        Some((kind, _)) => Err(format!("an Automerge chunk of type {kind}, which no device sends")),
        None => Ok(()),
    }
}

/// The most bytes the deflated columns of one document may inflate to, all together: 256 MiB,
/// some hundred times what the largest document of a 100k-event workspace holds, and past what
/// Automerge could hold in memory as operations on a device.
pub const DOCUMENT_INFLATED_LIMIT: u64 = 256 << 20;

/// Refuses `document` if the deflated columns of its document chunks inflate to more than
/// `limit` bytes. `Automerge::save` deflates a document's large columns and Automerge's load
/// inflates them without a bound; deflate reaches 1,000:1, so a hostile snapshot of 16 MiB
/// would otherwise ask for 16 GiB. Each column is inflated here into nothing, as far as the
/// limit, before Automerge sees it. A legitimate column can deflate as well as a bomb (a note
/// of one repeated line), so the limit is on the size, not the ratio. Columns that do not
/// parse or inflate are left for Automerge to describe.
fn columns_inflate_within(document: &[u8], limit: u64) -> Result<(), String> {
    use std::io::Read;
    let mut left = limit;
    let documents = chunks(document).filter(|(kind, _)| *kind == DOCUMENT_CHUNK);
    for column in documents.flat_map(|(_, data)| deflated_columns(data).unwrap_or_default()) {
        let mut inflated = flate2::bufread::DeflateDecoder::new(column).take(left + 1);
        let Ok(size) = std::io::copy(&mut inflated, &mut std::io::sink()) else { continue };
        left = left
            .checked_sub(size)
            .ok_or_else(|| format!("a document whose columns inflate past {} MiB", limit >> 20))?;
    }
    Ok(())
}

/// Set in a column's specification when the column is deflated.
const DEFLATED_COLUMN: u64 = 0b1000;

/// The deflated columns in `data`, a document chunk's data (`actors | heads | change column
/// specifications | operation column specifications | their columns | …`); `None` where it
/// does not parse that far.
fn deflated_columns(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    for _ in 0..read_leb128(&mut data)? {
        let actor = usize::try_from(read_leb128(&mut data)?).ok()?;
        data = data.get(actor..)?;
    }
    let heads = usize::try_from(read_leb128(&mut data)?).ok()?;
    data = data.get(heads.checked_mul(32)?..)?;
    let mut columns = Vec::new();
    for _changes_then_operations in 0..2 {
        for _ in 0..read_leb128(&mut data)? {
            let specification = read_leb128(&mut data)?;
            let length = usize::try_from(read_leb128(&mut data)?).ok()?;
            columns.push((specification & DEFLATED_COLUMN != 0, length));
        }
    }
    let mut deflated = Vec::new();
    for (is_deflated, length) in columns {
        let (column, rest) = data.split_at_checked(length)?;
        data = rest;
        if is_deflated {
            deflated.push(column);
        }
    }
    Some(deflated)
}

/// The chunks of `bytes` (`magic 4 | checksum 4 | type 1 | length uleb | data`) as their types
/// and data, as far as they are framed; the last may be cut short. Framing faults are left for
/// Automerge to describe.
fn chunks(mut bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (header, mut rest) = bytes.split_at_checked(9)?;
        let kind = header[8];
        let length = read_leb128(&mut rest).and_then(|length| usize::try_from(length).ok()).unwrap_or(usize::MAX);
        let (data, next) = rest.split_at_checked(length).unwrap_or((rest, &[]));
        bytes = next;
        Some((kind, data))
    })
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

/// `value` as an unsigned LEB128 number onto `out`: what tests build Automerge's bytes with.
#[cfg(test)]
pub(crate) fn write_leb128(mut value: usize, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document whose root holds `text` under `key`, in one change.
    fn document_of(key: &str, text: String) -> Automerge {
        use automerge::transaction::Transactable;
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, key, text).unwrap();
        tx.commit();
        doc
    }

    #[test]
    fn chunks_no_device_sends_are_refused_before_automerge_parses_them() {
        let doc = document_of("text", "a long value that compresses well ".repeat(40));
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

    #[test]
    fn a_document_whose_columns_inflate_past_the_limit_is_refused_before_automerge_inflates_them() {
        use std::io::Write;
        // A legitimate document can deflate as well as a bomb: 2 MiB of one repeated line.
        let saved = document_of("note", "the same line again\n".repeat(100_000)).save();
        assert!(saved.len() < 64 * 1024, "its values column is deflated");
        assert!(load_document(&saved, VerificationMode::Check).is_ok());
        assert!(columns_inflate_within(&saved, 4 << 20).is_ok());
        assert!(columns_inflate_within(&saved, 1 << 20).unwrap_err().contains("inflate past 1 MiB"));

        // A document chunk of one operation column, deflated: past the limit once inflated.
        let mut bomb = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..=DOCUMENT_INFLATED_LIMIT >> 20 {
            bomb.write_all(&[0; 1 << 20]).unwrap();
        }
        let bomb = bomb.finish().unwrap();
        // No actors, no heads, no change columns; one operation column (id 1, a value column).
        let mut data = vec![0, 0, 0, 1];
        write_leb128((1 << 4) | DEFLATED_COLUMN as usize | 6, &mut data);
        write_leb128(bomb.len(), &mut data);
        data.extend(&bomb);
        let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, DOCUMENT_CHUNK];
        write_leb128(data.len(), &mut chunk);
        chunk.extend(&data);
        let refused = load_document(&chunk, VerificationMode::DontCheck).unwrap_err();
        assert!(refused.contains("inflate past 256 MiB"), "{refused}");
    }
}
