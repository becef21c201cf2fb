//! Authorship: which device wrote each change, provable for the life of the workspace.
//!
//! A device **attests** the changes it authors: an [`Attestation`] is its Ed25519 signature
//! over the workspace id, the document, the key epoch it wrote under and the hashes of the
//! changes (an Automerge change hash covers its bytes: actor, sequence number, dependencies,
//! operations and the envelope in its message). One signature covers every change of one
//! chunk, so a group commit of a thousand events signs a handful of times, not a thousand;
//! each change is still proven on its own (its hash is in a list its author signed).
//!
//! Attestations travel with their changes everywhere, verbatim: in the tail chunks of the
//! local store, in snapshots (which keep the attestations of every change they fold in), and
//! in the [`SignedChanges`] units that export hands to other devices. Nobody re-signs another
//! device's changes, so the author of any change can be checked by anyone holding it.
//!
//! ```text
//! attestation = signer 32 | epoch u32 LE | signature 64 | count u32 LE | hash 32 × count
//! signed      = "adiuva attestation v1\0" | workspace id 16 | epoch u32 LE
//!               | document length u16 LE | document | count u32 LE | hash 32 × count
//! changes     = "ADSC" | version u8 (=1) | attestations u32 LE | attestation*
//!               | changes u32 LE | (length u32 LE | change bytes)*
//! snapshot    = "ADSS" | version u8 (=2) | actors u32 LE | (length u32 LE | actor)*
//!               | attestations u32 LE | named* | document
//! named       = signer 32 | epoch u32 LE | signature 64 | items u32 LE | item*
//! item        = 0 u8 | actor u32 LE | first seq u64 LE | count u32 LE    (a run of one actor's changes)
//!             | 1 u8 | hash 32                                           (a change the document does not name)
//! ```
//!
//! A snapshot names the changes its attestations cover by actor and sequence number, which the
//! document it carries gives back on load with every change's hash ([`ChangeNames`]): a run of a
//! chunk's changes takes 17 bytes where their hashes took 32 each, a third of a snapshot's
//! size. Each name stands at most once in a snapshot, so what a name resolves to is bounded by
//! the document's own changes. The signature is still checked over the full hashes, recomputed
//! from the document, so a wrong name can only make an attestation fail. Snapshots of version 1
//! list the hashes (`snapshot v1 = "ADSS" | 1 | attestations u32 LE | attestation* | document`)
//! and still decode.
//!
//! Payloads written before this format are bare Automerge bytes (they begin with Automerge's
//! own magic); they decode with no attestations, and compaction or `adiuva upgrade` attests
//! this device's own changes among them.
//!
//! Decoding is pure functions over bytes; they never panic.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use adiuva_model::DeviceId;
use automerge::{ActorId, Automerge, Change, ChangeHash};

use crate::identity::{self, DeviceIdentity, SIGNATURE_LEN};
use crate::{Result, encode};

const DOMAIN: &[u8] = b"adiuva attestation v1\0";
const CHANGES_MAGIC: &[u8; 4] = b"ADSC";
const SNAPSHOT_MAGIC: &[u8; 4] = b"ADSS";
const VERSION: u8 = 1;
/// Snapshots whose attested changes are named by actor and sequence number.
const SNAPSHOT_VERSION: u8 = 2;
const HASH_LEN: usize = 32;
const RUN: u8 = 0;
const LISTED_HASH: u8 = 1;
/// The smallest item of a named attestation: a tag and a hash is larger, a run is this.
const RUN_LEN: usize = 1 + 4 + 8 + 4;

/// A device's signature over a set of changes of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    pub signer: DeviceId,
    /// The workspace key epoch the signer wrote under.
    pub epoch: u32,
    pub signature: [u8; SIGNATURE_LEN],
    pub hashes: Vec<ChangeHash>,
}

/// Where an attestation belongs: its workspace and document.
#[derive(Clone, Copy, Debug)]
pub struct AttestationPlace<'a> {
    pub workspace_id: &'a [u8; 16],
    pub document: &'a str,
}

impl Attestation {
    /// `identity`'s attestation of `hashes`, written under key `epoch`.
    pub fn sign(identity: &DeviceIdentity, place: AttestationPlace<'_>, epoch: u32, hashes: Vec<ChangeHash>) -> Self {
        let signature = identity.sign(&signed_message(place, epoch, &hashes));
        Self { signer: identity.device_id(), epoch, signature, hashes }
    }

    /// Whether the signature is the signer's over these hashes in `place` (strictly checked).
    pub fn verify(&self, place: AttestationPlace<'_>) -> bool {
        identity::verify(&self.signer, &signed_message(place, self.epoch, &self.hashes), &self.signature)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        self.encode_head(out);
        out.extend_from_slice(&encode::length_u32(self.hashes.len(), "attestation")?);
        for hash in &self.hashes {
            out.extend_from_slice(&hash.0);
        }
        Ok(())
    }

    /// Signer, epoch and signature: what both encodings of an attestation begin with.
    fn encode_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signer.0);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.signature);
    }

    /// Signer, epoch and signature, with no hashes yet.
    fn decode_head(reader: &mut Reader<'_>) -> Result<Self, PayloadError> {
        let signer = DeviceId(reader.array()?);
        let epoch = reader.u32()?;
        let signature = reader.array()?;
        Ok(Self { signer, epoch, signature, hashes: Vec::new() })
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, PayloadError> {
        let Self { signer, epoch, signature, .. } = Self::decode_head(reader)?;
        let count = reader.u32()? as usize;
        // Bounded by the bytes present before anything is allocated.
        if count > reader.remaining() / HASH_LEN {
            return Err(PayloadError("attestation lists more hashes than it holds"));
        }
        let hashes = (0..count).map(|_| reader.array().map(ChangeHash)).collect::<Result<_, _>>()?;
        Ok(Self { signer, epoch, signature, hashes })
    }
}

fn signed_message(place: AttestationPlace<'_>, epoch: u32, hashes: &[ChangeHash]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 30 + place.document.len() + hashes.len() * HASH_LEN);
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(place.workspace_id);
    message.extend_from_slice(&epoch.to_le_bytes());
    // Document names are checked to be at most 128 bytes long, and an attestation covers one
    // chunk's changes: both lengths fit their fields, so they are written as they are.
    message.extend_from_slice(&(place.document.len() as u16).to_le_bytes());
    message.extend_from_slice(place.document.as_bytes());
    message.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
    for hash in hashes {
        message.extend_from_slice(&hash.0);
    }
    message
}

/// Bytes that are not a valid attested payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid attested payload: {0}")]
pub struct PayloadError(pub &'static str);

/// Changes of one document with the attestations of their authors: what a change chunk holds
/// and what export hands to another device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignedChanges {
    pub attestations: Vec<Attestation>,
    /// Raw Automerge change bytes, one change each.
    pub changes: Vec<Vec<u8>>,
}

impl SignedChanges {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let size = self.changes.iter().map(|c| c.len() + 4).sum::<usize>()
            + self.attestations.iter().map(|a| 104 + a.hashes.len() * HASH_LEN).sum::<usize>();
        let mut out = Vec::with_capacity(size + 16);
        out.extend_from_slice(CHANGES_MAGIC);
        out.push(VERSION);
        encode_attestations(&self.attestations, &mut out)?;
        out.extend_from_slice(&encode::length_u32(self.changes.len(), "signed changes")?);
        for change in &self.changes {
            out.extend_from_slice(&encode::length_u32(change.len(), "signed changes")?);
            out.extend_from_slice(change);
        }
        Ok(out)
    }

    /// Decodes an attested changes payload. Bare Automerge bytes (the format before
    /// attestations) are `Legacy`.
    pub fn decode(bytes: &[u8]) -> Result<Decoded<Self>, PayloadError> {
        let Some((mut reader, _)) = versioned(bytes, CHANGES_MAGIC, VERSION)? else {
            return Ok(Decoded::Legacy);
        };
        let attestations = decode_attestations(&mut reader)?;
        let count = reader.u32()? as usize;
        if count > reader.remaining() / 4 {
            return Err(PayloadError("more changes listed than bytes present"));
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            let length = reader.u32()? as usize;
            changes.push(reader.take(length)?.to_vec());
        }
        reader.end()?;
        Ok(Decoded::Attested(Self { attestations, changes }))
    }
}

/// A compacted document with the attestations of every change it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSnapshot {
    pub attestations: Vec<Attestation>,
    /// `Automerge::save` output.
    pub document: Vec<u8>,
}

impl SignedSnapshot {
    /// Whether `bytes` claim to be a signed snapshot (rather than signed changes): what to
    /// decode them as.
    pub fn is_one(bytes: &[u8]) -> bool {
        bytes.starts_with(SNAPSHOT_MAGIC)
    }

    /// Encodes the snapshot, `names` being the names of `document`'s changes: each attested
    /// change is named there by actor and sequence number, or listed by hash if it has no name
    /// of its own there (not in the document, its name shared, or already named once).
    pub fn encode(&self, names: &ChangeNames) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.document.len() + self.attestations.len() * 140 + 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&encode::length_u32(names.actors.len(), "snapshot actors")?);
        for actor in &names.actors {
            out.extend_from_slice(&encode::length_u32(actor.to_bytes().len(), "snapshot actor")?);
            out.extend_from_slice(actor.to_bytes());
        }
        let mut unnamed = names.by_hash();
        out.extend_from_slice(&encode::length_u32(self.attestations.len(), "attestations")?);
        for attestation in &self.attestations {
            attestation.encode_head(&mut out);
            let mut items = Vec::new();
            for hash in &attestation.hashes {
                // Removed once named: a name stands once in a snapshot.
                match (unnamed.remove(hash), items.last_mut()) {
                    (Some((actor, seq)), Some(Item::Run { actor: last_actor, first, count }))
                        if *last_actor == actor && first.checked_add(u64::from(*count)) == Some(seq) =>
                    {
                        *count += 1;
                    }
                    (Some((actor, seq)), _) => items.push(Item::Run { actor, first: seq, count: 1 }),
                    (None, _) => items.push(Item::Hash(*hash)),
                }
            }
            out.extend_from_slice(&encode::length_u32(items.len(), "attestation")?);
            for item in items {
                item.encode_into(&mut out);
            }
        }
        out.extend_from_slice(&self.document);
        Ok(out)
    }

    /// Decodes a snapshot payload; bare Automerge bytes are `Legacy`. The attestations are
    /// whole only once the document is loaded ([`SnapshotPayload::attestations`]).
    pub fn decode(bytes: &[u8]) -> Result<Decoded<SnapshotPayload<'_>>, PayloadError> {
        let Some((mut reader, version)) = versioned(bytes, SNAPSHOT_MAGIC, SNAPSHOT_VERSION)? else {
            return Ok(Decoded::Legacy);
        };
        let covered = match version {
            VERSION => Covered::Listed(decode_attestations(&mut reader)?),
            _ => decode_named(&mut reader)?,
        };
        Ok(Decoded::Attested(SnapshotPayload { covered, document: reader.rest() }))
    }
}

/// A decoded snapshot: its document, and its attestations as they were encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPayload<'a> {
    covered: Covered,
    /// `Automerge::save` output.
    pub document: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Covered {
    /// Version 1: every hash listed.
    Listed(Vec<Attestation>),
    /// Version 2: the snapshot's actors, and each attestation (with no hashes yet) with the
    /// items naming its changes.
    Named { actors: Vec<ActorId>, attestations: Vec<(Attestation, Vec<Item>)> },
}

/// What a named attestation says it covers, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// `count` changes of the snapshot's actor number `actor`, from sequence number `first`.
    Run {
        actor: u32,
        first: u64,
        count: u32,
    },
    Hash(ChangeHash),
}

impl Item {
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Run { actor, first, count } => {
                out.push(RUN);
                out.extend_from_slice(&actor.to_le_bytes());
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Self::Hash(hash) => {
                out.push(LISTED_HASH);
                out.extend_from_slice(&hash.0);
            }
        }
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, PayloadError> {
        match reader.take(1)?[0] {
            RUN => Ok(Self::Run { actor: reader.u32()?, first: reader.u64()?, count: reader.u32()? }),
            LISTED_HASH => Ok(Self::Hash(ChangeHash(reader.array()?))),
            _ => Err(PayloadError("an attestation item of an unknown kind")),
        }
    }
}

fn decode_named(reader: &mut Reader<'_>) -> Result<Covered, PayloadError> {
    let count = reader.u32()? as usize;
    if count > reader.remaining() / 4 {
        return Err(PayloadError("more actors listed than bytes present"));
    }
    let actors = (0..count)
        .map(|_| {
            let length = reader.u32()? as usize;
            Ok(ActorId::from(reader.take(length)?))
        })
        .collect::<Result<Vec<_>, PayloadError>>()?;
    let count = reader.u32()? as usize;
    // The smallest named attestation is 104 bytes with no items.
    if count > reader.remaining() / 104 {
        return Err(PayloadError("more attestations listed than bytes present"));
    }
    let mut attestations = Vec::with_capacity(count);
    for _ in 0..count {
        let head = Attestation::decode_head(reader)?;
        let items = reader.u32()? as usize;
        if items > reader.remaining() / RUN_LEN {
            return Err(PayloadError("an attestation lists more items than it holds"));
        }
        let items = (0..items).map(|_| Item::decode_from(reader)).collect::<Result<_, _>>()?;
        attestations.push((head, items));
    }
    Ok(Covered::Named { actors, attestations })
}

impl SnapshotPayload<'_> {
    /// The attestations with the hashes of the changes they cover, each named change looked
    /// up in `doc`, the document loaded from [`Self::document`]. A name the document does not
    /// hold, holds twice, or that the snapshot uses twice is an error.
    pub fn attestations(self, doc: &Automerge) -> Result<Vec<Attestation>, PayloadError> {
        let (actors, named) = match self.covered {
            Covered::Listed(attestations) => return Ok(attestations),
            Covered::Named { actors, attestations } => (actors, attestations),
        };
        let mut names = ChangeNames::of(doc);
        let numbers: Vec<Option<u32>> = actors.iter().map(|actor| names.numbers.get(actor).copied()).collect();
        let mut attestations = Vec::with_capacity(named.len());
        for (mut attestation, items) in named {
            for item in items {
                match item {
                    Item::Hash(hash) => attestation.hashes.push(hash),
                    Item::Run { actor, first, count } => {
                        let actor = numbers
                            .get(actor as usize)
                            .copied()
                            .flatten()
                            .ok_or(PayloadError("an attestation names an actor the document does not hold"))?;
                        for seq in (0..u64::from(count)).map(|offset| first.checked_add(offset)) {
                            let seq = seq.ok_or(PayloadError("an attestation names a change past the last"))?;
                            attestation.hashes.push(names.take(actor, seq)?);
                        }
                    }
                }
            }
            attestations.push(attestation);
        }
        Ok(attestations)
    }
}

/// Every change of a document by its name: its actor (numbered in the order first met) and
/// sequence number.
#[derive(Debug, Default)]
pub struct ChangeNames {
    actors: Vec<ActorId>,
    numbers: HashMap<ActorId, u32>,
    by_name: HashMap<(u32, u64), Name>,
}

#[derive(Debug, Clone, Copy)]
enum Name {
    Of(ChangeHash),
    /// Two changes under one name: Automerge refuses to apply such a pair, but a document
    /// loaded whole from elsewhere may hold it. Neither is named.
    Shared,
    /// Named once already in the snapshot being read.
    Taken,
}

impl ChangeNames {
    /// The names of `doc`'s changes.
    pub fn of(doc: &Automerge) -> Self {
        let mut names = Self::default();
        for meta in doc.get_changes_meta(&[]) {
            let actor = match names.numbers.get(meta.actor.as_ref()) {
                Some(number) => *number,
                None => {
                    // Not reached: a document holds fewer actors than a u32 counts.
                    let Ok(number) = u32::try_from(names.actors.len()) else { continue };
                    names.actors.push(meta.actor.clone().into_owned());
                    names.numbers.insert(meta.actor.into_owned(), number);
                    number
                }
            };
            names
                .by_name
                .entry((actor, meta.seq))
                .and_modify(|name| *name = Name::Shared)
                .or_insert(Name::Of(meta.hash));
        }
        names
    }

    /// The name of each change that has one of its own.
    fn by_hash(&self) -> HashMap<ChangeHash, (u32, u64)> {
        self.by_name
            .iter()
            .filter_map(|(name, hash)| match hash {
                Name::Of(hash) => Some((*hash, *name)),
                Name::Shared | Name::Taken => None,
            })
            .collect()
    }

    /// The change named (`actor`, `seq`), which no later lookup finds again.
    fn take(&mut self, actor: u32, seq: u64) -> Result<ChangeHash, PayloadError> {
        let name = self
            .by_name
            .get_mut(&(actor, seq))
            .ok_or(PayloadError("an attestation names a change the document does not hold"))?;
        match std::mem::replace(name, Name::Taken) {
            Name::Of(hash) => Ok(hash),
            Name::Shared => Err(PayloadError("an attestation names a change the document holds twice")),
            Name::Taken => Err(PayloadError("an attestation names a change named before")),
        }
    }
}

/// A payload in the current format, or one written before attestations existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    Attested(T),
    Legacy,
}

/// Automerge's magic bytes, which every payload written before attestations begins with.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// The payload after its magic and version, if it has them (`None`: bare Automerge bytes), if
/// its version is at most `newest`.
fn versioned<'a>(bytes: &'a [u8], magic: &[u8; 4], newest: u8) -> Result<Option<(Reader<'a>, u8)>, PayloadError> {
    if bytes.starts_with(&AUTOMERGE_MAGIC) {
        return Ok(None);
    }
    let mut reader = Reader(bytes);
    if reader.take(4)? != magic {
        return Err(PayloadError("bad magic"));
    }
    match reader.take(1)?[0] {
        version if (VERSION..=newest).contains(&version) => Ok(Some((reader, version))),
        _ => Err(PayloadError("a newer payload version than this build reads")),
    }
}

fn encode_attestations(attestations: &[Attestation], out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&encode::length_u32(attestations.len(), "attestations")?);
    for attestation in attestations {
        attestation.encode_into(out)?;
    }
    Ok(())
}

fn decode_attestations(reader: &mut Reader<'_>) -> Result<Vec<Attestation>, PayloadError> {
    let count = reader.u32()? as usize;
    // The smallest attestation is 104 bytes.
    if count > reader.remaining() / 104 {
        return Err(PayloadError("more attestations listed than bytes present"));
    }
    (0..count).map(|_| Attestation::decode_from(reader)).collect()
}

/// The attestations of a document, by the changes they cover.
#[derive(Clone, Debug, Default)]
pub struct Attestations {
    all: Vec<Attestation>,
    /// Each covered change as (attestation, place of its hash there), the first attestation
    /// covering it: a map from the hash held a second copy of every hash, 4 MB more per 100k
    /// changes of a loaded document. Keyed (random per process), as changes come from peers.
    by_hash: hashbrown::HashTable<(u32, u32)>,
    hasher: RandomState,
    /// The first attestation with each signature: finding a duplicate must not scan them all
    /// (a document of single-event commits holds one attestation per event).
    by_signature: HashMap<[u8; SIGNATURE_LEN], usize>,
}

/// The hash at `place` (attestation, place in it).
fn hash_at(all: &[Attestation], (attestation, at): (u32, u32)) -> Option<&ChangeHash> {
    all.get(attestation as usize)?.hashes.get(at as usize)
}

impl Attestations {
    pub fn add(&mut self, attestation: Attestation) {
        let index = self.all.len();
        // Not reached: each attestation and each hash take more bytes than a u32 counts.
        let Ok(number) = u32::try_from(index) else { return };
        match self.by_signature.entry(attestation.signature) {
            Entry::Occupied(first) if self.all.get(*first.get()) == Some(&attestation) => return,
            // Another attestation under a copied signature is kept: its verification fails.
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        self.all.push(attestation);
        let Self { all, by_hash, hasher, .. } = self;
        let rehash = |place: &(u32, u32)| hash_at(all, *place).map_or(0, |hash| hasher.hash_one(hash));
        for (at, hash) in all[index].hashes.iter().enumerate() {
            let Ok(at) = u32::try_from(at) else { break };
            let same = |place: &(u32, u32)| hash_at(all, *place) == Some(hash);
            if let hashbrown::hash_table::Entry::Vacant(slot) = by_hash.entry(hasher.hash_one(hash), same, rehash) {
                slot.insert((number, at));
            }
        }
    }

    /// The attestation covering `hash`, by its number.
    fn find(&self, hash: &ChangeHash) -> Option<usize> {
        let same = |place: &(u32, u32)| hash_at(&self.all, *place) == Some(hash);
        self.by_hash.find(self.hasher.hash_one(hash), same).map(|(attestation, _)| *attestation as usize)
    }

    pub fn extend(&mut self, attestations: impl IntoIterator<Item = Attestation>) {
        for attestation in attestations {
            self.add(attestation);
        }
    }

    pub fn covering(&self, hash: &ChangeHash) -> Option<&Attestation> {
        self.find(hash).and_then(|index| self.all.get(index))
    }

    pub fn all(&self) -> &[Attestation] {
        &self.all
    }

    /// The attestations covering any of `changes`, each once.
    pub fn for_changes<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> Vec<Attestation> {
        let mut indices: Vec<usize> = changes.into_iter().filter_map(|change| self.find(&change.hash())).collect();
        indices.sort_unstable();
        indices.dedup();
        indices.into_iter().filter_map(|index| self.all.get(index).cloned()).collect()
    }

    /// How many distinct changes are covered.
    pub fn covered(&self) -> usize {
        self.by_hash.len()
    }

    /// The covered hashes.
    pub fn hashes(&self) -> HashSet<ChangeHash> {
        self.by_hash.iter().filter_map(|place| hash_at(&self.all, *place).copied()).collect()
    }
}

/// Reads fields in order; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        if self.0.len() < n {
            return Err(PayloadError("truncated"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        self.take(N)?.try_into().map_err(|_| PayloadError("truncated"))
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, PayloadError> {
        self.array().map(u64::from_le_bytes)
    }

    fn remaining(&self) -> usize {
        self.0.len()
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }

    fn end(&self) -> Result<(), PayloadError> {
        if self.0.is_empty() { Ok(()) } else { Err(PayloadError("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> AttestationPlace<'static> {
        AttestationPlace { workspace_id: &[7; 16], document: "tasks" }
    }

    #[test]
    fn attestations_verify_only_in_their_place_and_round_trip() {
        let device = DeviceIdentity::generate().unwrap();
        let attestation = Attestation::sign(&device, place(), 1, vec![ChangeHash([1; 32]), ChangeHash([2; 32])]);
        assert!(attestation.verify(place()));
        assert!(!attestation.verify(AttestationPlace { workspace_id: &[8; 16], document: "tasks" }));
        assert!(!attestation.verify(AttestationPlace { workspace_id: &[7; 16], document: "notes" }));
        let mut other_epoch = attestation.clone();
        other_epoch.epoch = 2;
        assert!(!other_epoch.verify(place()));
        let mut fewer = attestation.clone();
        fewer.hashes.pop();
        assert!(!fewer.verify(place()));

        let signed = SignedChanges { attestations: vec![attestation.clone()], changes: vec![b"one".to_vec(), vec![]] };
        let bytes = signed.encode().unwrap();
        assert_eq!(SignedChanges::decode(&bytes).unwrap(), Decoded::Attested(signed));
        for length in 0..bytes.len() {
            assert!(SignedChanges::decode(&bytes[..length]).is_err(), "length {length}");
        }
        assert_eq!(SignedChanges::decode(&AUTOMERGE_MAGIC).unwrap(), Decoded::Legacy);
    }

    /// A document of `count` changes by each of two actors, and its changes.
    fn two_authors(count: usize) -> (Automerge, Vec<Change>) {
        use automerge::transaction::Transactable;
        let mut doc = Automerge::new();
        for (actor, round) in [([1u8; 16], 0), ([2; 16], 1)] {
            doc.set_actor(ActorId::from(actor));
            for index in 0..count {
                let mut tx = doc.transaction();
                tx.put(automerge::ROOT, format!("{round}-{index}"), index as i64).unwrap();
                tx.commit();
            }
        }
        let changes = doc.get_changes(&[]).into_iter().collect();
        (doc, changes)
    }

    /// `snapshot` in version 1, every hash listed.
    fn listed(snapshot: &SignedSnapshot) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.push(VERSION);
        encode_attestations(&snapshot.attestations, &mut out).unwrap();
        out.extend_from_slice(&snapshot.document);
        out
    }

    fn resolved(bytes: &[u8], doc: &Automerge) -> Result<Vec<Attestation>, PayloadError> {
        match SignedSnapshot::decode(bytes)? {
            Decoded::Attested(snapshot) => snapshot.attestations(doc),
            Decoded::Legacy => Err(PayloadError("legacy")),
        }
    }

    #[test]
    fn snapshots_name_their_changes_and_get_every_hash_back() {
        let device = DeviceIdentity::generate().unwrap();
        let (doc, changes) = two_authors(5);
        let hashes: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
        let stranger = ChangeHash([9; 32]);
        // A run per actor, one change attested twice, and a hash the document does not hold.
        let first = Attestation::sign(&device, place(), 1, hashes[..7].to_vec());
        let second = Attestation::sign(&device, place(), 1, vec![hashes[7], hashes[2], stranger, hashes[8], hashes[9]]);
        let attestations = vec![first, second];
        let snapshot = SignedSnapshot { attestations: attestations.clone(), document: doc.clone().save() };
        let names = ChangeNames::of(&doc);
        let bytes = snapshot.encode(&names).unwrap();
        let listed = listed(&snapshot);
        assert!(bytes.len() < listed.len(), "{} named, {} listed", bytes.len(), listed.len());
        let loaded = Automerge::load(&snapshot.document).unwrap();
        assert_eq!(resolved(&bytes, &loaded).unwrap(), attestations);
        assert!(attestations.iter().all(|attestation| attestation.verify(place())));
        // Version 1 (hashes listed) still decodes.
        assert_eq!(resolved(&listed, &loaded).unwrap(), attestations);
        for length in 0..bytes.len() - snapshot.document.len() {
            assert!(SignedSnapshot::decode(&bytes[..length]).is_err(), "length {length}");
        }

        // Named against another document, the names find other changes or none.
        let (other, _) = two_authors(3);
        assert!(resolved(&bytes, &other).is_err());
        let (longer, _) = two_authors(6);
        let wrong = resolved(&bytes, &longer).unwrap();
        assert!(!wrong[0].verify(place()), "the signature covers the hashes, not the names");
    }

    #[test]
    fn a_name_stands_once_and_must_be_the_documents() {
        let device = DeviceIdentity::generate().unwrap();
        let (doc, changes) = two_authors(3);
        let hashes: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
        let snapshot = SignedSnapshot {
            attestations: vec![Attestation::sign(&device, place(), 1, hashes.clone())],
            document: doc.clone().save(),
        };
        let bytes = snapshot.encode(&ChangeNames::of(&doc)).unwrap();
        let head = bytes.len() - snapshot.document.len();
        // The items: the first run's count (3 changes of actor 0) and the second run's start.
        let runs = head - 2 * RUN_LEN;
        let count_at = runs + 1 + 4 + 8;
        let mut longer_run = bytes.clone();
        longer_run[count_at] = 4;
        assert_eq!(
            resolved(&longer_run, &doc),
            Err(PayloadError("an attestation names a change the document does not hold"))
        );
        let mut twice = bytes.clone();
        twice[count_at + 4 + 1..count_at + 4 + 5].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(resolved(&twice, &doc), Err(PayloadError("an attestation names a change named before")));
        let mut unknown_actor = bytes.clone();
        unknown_actor[runs + 1..runs + 5].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            resolved(&unknown_actor, &doc),
            Err(PayloadError("an attestation names an actor the document does not hold"))
        );
        let mut past_the_last = bytes.clone();
        past_the_last[runs + 5..runs + 13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(resolved(&past_the_last, &doc).is_err());
        let mut kind = bytes;
        kind[runs] = 7;
        assert_eq!(SignedSnapshot::decode(&kind), Err(PayloadError("an attestation item of an unknown kind")));
    }
}
