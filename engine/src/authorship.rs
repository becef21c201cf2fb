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
//! snapshot    = "ADSS" | version u8 (=1) | attestations u32 LE | attestation* | document
//! ```
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
use automerge::{Change, ChangeHash};

use crate::identity::{self, DeviceIdentity, SIGNATURE_LEN};
use crate::{Result, encode};

const DOMAIN: &[u8] = b"adiuva attestation v1\0";
const CHANGES_MAGIC: &[u8; 4] = b"ADSC";
const SNAPSHOT_MAGIC: &[u8; 4] = b"ADSS";
const VERSION: u8 = 1;
const HASH_LEN: usize = 32;

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
        out.extend_from_slice(&self.signer.0);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&encode::length_u32(self.hashes.len(), "attestation")?);
        for hash in &self.hashes {
            out.extend_from_slice(&hash.0);
        }
        Ok(())
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, PayloadError> {
        let signer = DeviceId(reader.array()?);
        let epoch = reader.u32()?;
        let signature = reader.array()?;
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
        let Some(mut reader) = versioned(bytes, CHANGES_MAGIC)? else {
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

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.document.len() + self.attestations.len() * 136 + 16);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(VERSION);
        encode_attestations(&self.attestations, &mut out)?;
        out.extend_from_slice(&self.document);
        Ok(out)
    }

    /// Decodes a snapshot payload; bare Automerge bytes are `Legacy`.
    pub fn decode(bytes: &[u8]) -> Result<Decoded<Self>, PayloadError> {
        let Some(mut reader) = versioned(bytes, SNAPSHOT_MAGIC)? else {
            return Ok(Decoded::Legacy);
        };
        let attestations = decode_attestations(&mut reader)?;
        Ok(Decoded::Attested(Self { attestations, document: reader.rest().to_vec() }))
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

fn versioned<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Result<Option<Reader<'a>>, PayloadError> {
    if bytes.starts_with(&AUTOMERGE_MAGIC) {
        return Ok(None);
    }
    let mut reader = Reader(bytes);
    if reader.take(4)? != magic {
        return Err(PayloadError("bad magic"));
    }
    match reader.take(1)?[0] {
        VERSION => Ok(Some(reader)),
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
        let snapshot = SignedSnapshot { attestations: vec![attestation], document: AUTOMERGE_MAGIC.to_vec() };
        assert_eq!(SignedSnapshot::decode(&snapshot.encode().unwrap()).unwrap(), Decoded::Attested(snapshot));
        assert_eq!(SignedChanges::decode(&AUTOMERGE_MAGIC).unwrap(), Decoded::Legacy);
    }
}
