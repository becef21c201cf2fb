//! The chunk format: how one blob of Automerge bytes is sealed, signed and framed for storage.
//!
//! ```text
//! frame     = "ADVC" | format u8 (=2) | kind u8 | key u32 LE | nonce 24 | ciphertext | tag 16
//! aad       = frame header (10 bytes) | workspace id (16) | blob id length u16 LE | blob id
//! plaintext = signer device id (32) | Ed25519 signature (64) | payload
//! signed    = "adiuva chunk v2\0" | workspace id | kind | key | blob id length | blob id | payload
//! ```
//!
//! **Which key.** Format 2 seals under this device's own storage key (`key` is its number), a
//! random key kept in the device's local keyring that no other device ever holds, so a device
//! removed from the workspace cannot read this one's store. Format 1 sealed under a key derived
//! from the shared workspace key (`key` was the workspace-key epoch, and the signed domain
//! `"adiuva chunk v1\0"`): such frames still open, until the workspace is upgraded
//! ([`SealingKey`]).
//!
//! The signature sits inside the ciphertext: the audit tool can prove which device wrote a chunk,
//! and whoever stores the ciphertext (the relay) learns nothing about who wrote it. The blob id is
//! where the chunk lives (its store key); binding it in the associated data means a chunk copied
//! to another slot or workspace fails authentication instead of being replayed there.
//!
//! The payload of a change chunk is a [`SignedChanges`](crate::authorship::SignedChanges), of a
//! snapshot a [`SignedSnapshot`](crate::authorship::SignedSnapshot): the frame's signature says
//! which device stored the chunk, the attestations inside say which device wrote each change.
//!
//! A **bundle** (changes sent to another device) is the same frame sealed under the bundle key
//! of a workspace key epoch ([`seal_bundle`]): it names the epoch as format 1 did, with the
//! blob id `bundle/DOCUMENT`, so it opens only for a device holding that epoch.
//!
//! What never leaves this device (manifests, read views) is a **local blob**: the same frame
//! with its own magic, sealed and bound the same way, but with no signer and no signature in
//! the plaintext. Nothing but this device reads it, and a signature costs a commit 27 µs.
//!
//! ```text
//! local     = "ADVL" | format u8 (=2) | kind u8 | key u32 LE | nonce 24 | ciphertext | tag 16
//! aad       = local header (10 bytes) | workspace id (16) | blob id length u16 LE | blob id
//! ```
//!
//! Decoding is pure functions over bytes ([`parse_frame`], [`open_chunk`], [`open_local`]):
//! they are what the fuzz target drives, and they never panic.

use adiuva_model::DeviceId;

use crate::crypto::{self, SealError, SecretKey};
use crate::identity::{self, DeviceIdentity, SIGNATURE_LEN};

const MAGIC: &[u8; 4] = b"ADVC";
const LOCAL_MAGIC: &[u8; 4] = b"ADVL";
/// Sealed under the device's own storage key.
const FORMAT_VERSION: u8 = 2;
/// Sealed under the storage key derived from the workspace key of an epoch; read, never written.
const FORMAT_WORKSPACE_KEY: u8 = 1;
const HEADER_LEN: usize = 10;
/// The number of the device's storage key that format 2 frames name (the one it has today).
pub const DEVICE_KEY: u32 = 1;

/// The key a frame says it is sealed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealingKey {
    /// Format 1: the storage key derived from the workspace key of this epoch (every device of
    /// the workspace can derive it).
    WorkspaceEpoch(u32),
    /// Format 2: this device's own storage key of this number.
    Device(u32),
}

impl std::fmt::Display for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealingKey::WorkspaceEpoch(epoch) => write!(f, "the workspace key of epoch {epoch}"),
            SealingKey::Device(number) => write!(f, "device storage key {number}"),
        }
    }
}

impl SealingKey {
    fn format(self) -> u8 {
        match self {
            SealingKey::WorkspaceEpoch(_) => FORMAT_WORKSPACE_KEY,
            SealingKey::Device(_) => FORMAT_VERSION,
        }
    }

    fn number(self) -> u32 {
        match self {
            SealingKey::WorkspaceEpoch(number) | SealingKey::Device(number) => number,
        }
    }

    fn signature_domain(self) -> &'static [u8] {
        match self {
            SealingKey::WorkspaceEpoch(_) => b"adiuva chunk v1\0",
            SealingKey::Device(_) => b"adiuva chunk v2\0",
        }
    }
}

/// What a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// One or more Automerge changes, concatenated (each one event).
    Changes = 1,
    /// One part of a compacted document (`Automerge::save` output, split).
    Snapshot = 2,
    /// A document's manifest: which chunks it must have.
    Manifest = 3,
    /// A collection document's read view: every record as of a chunk sequence (local only).
    ReadView = 4,
    /// The records one commit group touched, continuing a read view (local only).
    ReadViewDelta = 5,
    /// A document's events (change hash and envelope), a base or a part (local only).
    EventIndex = 6,
    /// A received change waiting for its dependencies, with its attestation (local only).
    Pending = 7,
    /// An open invitation's secret and expiry (local only).
    Invite = 8,
    /// The key that wraps the workspace keys for recovery, and its salt (local only).
    Recovery = 9,
    /// A setting of this device only, e.g. its language model providers (local only).
    DeviceSetting = 10,
    /// What this device knows of a relay: its cursor, what it acknowledged (local only).
    RelayState = 11,
    /// A sealed relay unit made and not yet acknowledged by the relay (local only).
    RelayOutbox = 12,
    /// What this device and one peer hold in common, per document (local only).
    PeerState = 13,
    /// A relay unit this device refused, kept to be tried again (local only).
    RelayRefused = 14,
    /// Why a unit of a relay's sequence is held back or refused here (local only).
    RelayUnsettled = 15,
}

impl BlobKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(BlobKind::Changes),
            2 => Some(BlobKind::Snapshot),
            3 => Some(BlobKind::Manifest),
            4 => Some(BlobKind::ReadView),
            5 => Some(BlobKind::ReadViewDelta),
            6 => Some(BlobKind::EventIndex),
            7 => Some(BlobKind::Pending),
            8 => Some(BlobKind::Invite),
            9 => Some(BlobKind::Recovery),
            10 => Some(BlobKind::DeviceSetting),
            11 => Some(BlobKind::RelayState),
            12 => Some(BlobKind::RelayOutbox),
            13 => Some(BlobKind::PeerState),
            14 => Some(BlobKind::RelayRefused),
            15 => Some(BlobKind::RelayUnsettled),
            _ => None,
        }
    }
}

/// Where a chunk belongs: its workspace and its blob id.
#[derive(Clone, Copy, Debug)]
pub struct ChunkPlace<'a> {
    pub workspace_id: &'a [u8; 16],
    pub blob_id: &'a [u8],
}

impl ChunkPlace<'_> {
    fn bind(&self, prefix: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(prefix);
        out.extend_from_slice(self.workspace_id);
        // Blob ids are store keys, far below 64 KiB.
        let length = u16::try_from(self.blob_id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(self.blob_id);
    }
}

/// The cleartext header of a chunk or local blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// A signed chunk (rather than a local blob).
    pub signed: bool,
    pub kind: BlobKind,
    pub key: SealingKey,
    header: &'a [u8],
    sealed: &'a [u8],
}

/// A chunk whose tag and signature have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChunk {
    pub kind: BlobKind,
    pub key: SealingKey,
    pub signer: DeviceId,
    pub payload: Vec<u8>,
}

/// Why bytes are not a valid chunk for their place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error("not a chunk: {0}")]
    Malformed(&'static str),
    #[error("chunk format {0} is newer than this build supports")]
    UnsupportedFormat(u8),
    #[error("unknown chunk kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected:?} chunk, found {found:?}")]
    WrongKind { expected: BlobKind, found: BlobKind },
    #[error("sealed with {0}, which this device does not hold")]
    UnknownKey(SealingKey),
    #[error("failed authentication: the chunk was altered, damaged or moved")]
    Unauthentic,
    #[error("device signature does not verify")]
    BadSignature,
}

/// Reads the cleartext header of a chunk or a local blob. Pure; never panics.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame<'_>, ChunkError> {
    if is_chunk(bytes) { parse_header(bytes, MAGIC, 32 + SIGNATURE_LEN) } else { parse_header(bytes, LOCAL_MAGIC, 0) }
}

/// Whether `bytes` are framed as a signed chunk (rather than a local blob).
pub fn is_chunk(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn parse_header<'a>(bytes: &'a [u8], magic: &[u8; 4], signed_len: usize) -> Result<Frame<'a>, ChunkError> {
    if bytes.len() < HEADER_LEN {
        return Err(ChunkError::Malformed("shorter than the chunk header"));
    }
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    if &header[..4] != magic {
        return Err(ChunkError::Malformed("bad magic"));
    }
    let number = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    let key = match header[4] {
        FORMAT_VERSION => SealingKey::Device(number),
        FORMAT_WORKSPACE_KEY => SealingKey::WorkspaceEpoch(number),
        other => return Err(ChunkError::UnsupportedFormat(other)),
    };
    let kind = BlobKind::from_byte(header[5]).ok_or(ChunkError::UnknownKind(header[5]))?;
    if sealed.len() < crypto::NONCE_LEN + crypto::TAG_LEN + signed_len {
        return Err(ChunkError::Malformed("shorter than nonce, tag and signature"));
    }
    Ok(Frame { signed: magic == MAGIC, kind, key, header, sealed })
}

fn header(magic: &[u8; 4], kind: BlobKind, key: SealingKey) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(magic);
    header.push(key.format());
    header.push(kind as u8);
    header.extend_from_slice(&key.number().to_le_bytes());
    header
}

/// Seals and signs `payload` for `place` under the device's storage key.
pub fn seal_chunk(
    place: ChunkPlace<'_>,
    kind: BlobKind,
    key: &SecretKey,
    signer: &DeviceIdentity,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_chunk_as(place, kind, SealingKey::Device(DEVICE_KEY), key, signer, payload)
}

fn seal_chunk_as(
    place: ChunkPlace<'_>,
    kind: BlobKind,
    sealing: SealingKey,
    key: &SecretKey,
    signer: &DeviceIdentity,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut header = header(MAGIC, kind, sealing);
    let signature = signer.sign(&signed_message(place, kind, sealing, payload));
    let mut plaintext = Vec::with_capacity(32 + SIGNATURE_LEN + payload.len());
    plaintext.extend_from_slice(&signer.device_id().0);
    plaintext.extend_from_slice(&signature);
    plaintext.extend_from_slice(payload);

    let mut aad = Vec::new();
    place.bind(&header, &mut aad);
    let sealed = crypto::seal(key, &aad, &plaintext)?;
    header.extend_from_slice(&sealed);
    Ok(header)
}

/// Seals a bundle of changes for another device: under the bundle key of workspace key
/// `epoch` (named in the frame), signed by the sending device inside the ciphertext. It opens
/// with [`open_chunk`] given that epoch's bundle key.
pub fn seal_bundle(
    place: ChunkPlace<'_>,
    epoch: u32,
    key: &SecretKey,
    signer: &DeviceIdentity,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_chunk_as(place, BlobKind::Changes, SealingKey::WorkspaceEpoch(epoch), key, signer, payload)
}

/// Seals `payload` for `place` as a local blob under the device's storage key: no signature,
/// see the module docs.
pub fn seal_local(
    place: ChunkPlace<'_>,
    kind: BlobKind,
    key: &SecretKey,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_local_as(place, kind, SealingKey::Device(DEVICE_KEY), key, payload)
}

fn seal_local_as(
    place: ChunkPlace<'_>,
    kind: BlobKind,
    sealing: SealingKey,
    key: &SecretKey,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut header = header(LOCAL_MAGIC, kind, sealing);
    let mut aad = Vec::new();
    place.bind(&header, &mut aad);
    let sealed = crypto::seal(key, &aad, payload)?;
    header.extend_from_slice(&sealed);
    Ok(header)
}

/// Checks and opens a local blob read from `place`. Pure; never panics.
pub fn open_local<'k>(
    bytes: &[u8],
    place: ChunkPlace<'_>,
    expected: BlobKind,
    key_for: impl Fn(SealingKey) -> Option<&'k SecretKey>,
) -> Result<Vec<u8>, ChunkError> {
    let frame = parse_header(bytes, LOCAL_MAGIC, 0)?;
    if frame.kind != expected {
        return Err(ChunkError::WrongKind { expected, found: frame.kind });
    }
    let key = key_for(frame.key).ok_or(ChunkError::UnknownKey(frame.key))?;
    let mut aad = Vec::new();
    place.bind(frame.header, &mut aad);
    crypto::open(key, &aad, frame.sealed).map_err(|_| ChunkError::Unauthentic)
}

/// Checks and opens a chunk read from `place`. `key_for` gives the key a frame names, if this
/// device holds it. Pure; never panics.
pub fn open_chunk<'k>(
    bytes: &[u8],
    place: ChunkPlace<'_>,
    expected: BlobKind,
    key_for: impl Fn(SealingKey) -> Option<&'k SecretKey>,
) -> Result<VerifiedChunk, ChunkError> {
    let frame = parse_header(bytes, MAGIC, 32 + SIGNATURE_LEN)?;
    if frame.kind != expected {
        return Err(ChunkError::WrongKind { expected, found: frame.kind });
    }
    let key = key_for(frame.key).ok_or(ChunkError::UnknownKey(frame.key))?;
    let mut aad = Vec::new();
    place.bind(frame.header, &mut aad);
    let mut plaintext = crypto::open(key, &aad, frame.sealed).map_err(|_| ChunkError::Unauthentic)?;
    if plaintext.len() < 32 + SIGNATURE_LEN {
        return Err(ChunkError::Malformed("no room for signer and signature"));
    }
    let payload = plaintext.split_off(32 + SIGNATURE_LEN);
    let (signer, signature) = plaintext.split_at(32);
    let signer = DeviceId(signer.try_into().map_err(|_| ChunkError::Malformed("signer"))?);
    let signature: [u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| ChunkError::Malformed("signature"))?;
    if !identity::verify(&signer, &signed_message(place, frame.kind, frame.key, &payload), &signature) {
        return Err(ChunkError::BadSignature);
    }
    Ok(VerifiedChunk { kind: frame.kind, key: frame.key, signer, payload })
}

fn signed_message(place: ChunkPlace<'_>, kind: BlobKind, sealing: SealingKey, payload: &[u8]) -> Vec<u8> {
    let domain = sealing.signature_domain();
    let mut prefix = Vec::with_capacity(domain.len() + 5);
    prefix.extend_from_slice(domain);
    prefix.push(kind as u8);
    prefix.extend_from_slice(&sealing.number().to_le_bytes());
    let mut message = Vec::with_capacity(prefix.len() + 18 + place.blob_id.len() + payload.len());
    place.bind(&prefix, &mut message);
    message.extend_from_slice(payload);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (SecretKey, DeviceIdentity, [u8; 16]) {
        (SecretKey::random().unwrap(), DeviceIdentity::generate().unwrap(), [9; 16])
    }

    /// The key lookup of a device whose storage key is `key`, holding no workspace-derived key.
    fn device_key<'k>(key: &'k SecretKey) -> impl Fn(SealingKey) -> Option<&'k SecretKey> + Copy {
        move |sealing| (sealing == SealingKey::Device(DEVICE_KEY)).then_some(key)
    }

    #[test]
    fn round_trip_names_the_signer() {
        let (key, device, workspace_id) = fixture();
        let place = ChunkPlace { workspace_id: &workspace_id, blob_id: b"c/tasks/1" };
        let bytes = seal_chunk(place, BlobKind::Changes, &key, &device, b"payload").unwrap();
        let chunk = open_chunk(&bytes, place, BlobKind::Changes, device_key(&key)).unwrap();
        assert_eq!(chunk.payload, b"payload");
        assert_eq!(chunk.signer, device.device_id());
        assert_eq!(chunk.key, SealingKey::Device(DEVICE_KEY));
    }

    #[test]
    fn any_flipped_byte_or_moved_chunk_is_an_error() {
        let (key, device, workspace_id) = fixture();
        let place = ChunkPlace { workspace_id: &workspace_id, blob_id: b"c/tasks/1" };
        let keys = device_key(&key);
        let bytes = seal_chunk(place, BlobKind::Changes, &key, &device, b"payload").unwrap();
        for index in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[index] ^= 0x80;
            assert!(open_chunk(&flipped, place, BlobKind::Changes, keys).is_err(), "byte {index}");
        }
        for length in 0..bytes.len() {
            assert!(open_chunk(&bytes[..length], place, BlobKind::Changes, keys).is_err());
        }
        let moved = ChunkPlace { workspace_id: &workspace_id, blob_id: b"c/tasks/2" };
        assert_eq!(open_chunk(&bytes, moved, BlobKind::Changes, keys), Err(ChunkError::Unauthentic));
        let other_workspace = ChunkPlace { workspace_id: &[8; 16], blob_id: b"c/tasks/1" };
        assert_eq!(open_chunk(&bytes, other_workspace, BlobKind::Changes, keys), Err(ChunkError::Unauthentic));
        assert_eq!(
            open_chunk(&bytes, place, BlobKind::Changes, |_| None),
            Err(ChunkError::UnknownKey(SealingKey::Device(DEVICE_KEY)))
        );
        assert!(matches!(open_chunk(&bytes, place, BlobKind::Snapshot, keys), Err(ChunkError::WrongKind { .. })));
    }

    #[test]
    fn a_local_blob_opens_only_in_its_place_and_as_its_kind() {
        let (key, _, workspace_id) = fixture();
        let place = ChunkPlace { workspace_id: &workspace_id, blob_id: b"m/tasks" };
        let keys = device_key(&key);
        let bytes = seal_local(place, BlobKind::Manifest, &key, b"payload").unwrap();
        assert!(!is_chunk(&bytes));
        assert_eq!(open_local(&bytes, place, BlobKind::Manifest, keys).unwrap(), b"payload");
        for index in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[index] ^= 0x80;
            assert!(open_local(&flipped, place, BlobKind::Manifest, keys).is_err(), "byte {index}");
        }
        let moved = ChunkPlace { workspace_id: &workspace_id, blob_id: b"m/notes" };
        assert_eq!(open_local(&bytes, moved, BlobKind::Manifest, keys), Err(ChunkError::Unauthentic));
        assert!(matches!(open_local(&bytes, place, BlobKind::ReadView, keys), Err(ChunkError::WrongKind { .. })));
        // A local blob is never mistaken for a signed chunk, nor the reverse.
        assert!(open_chunk(&bytes, place, BlobKind::Manifest, keys).is_err());
        let (_, device, _) = fixture();
        let chunk = seal_chunk(place, BlobKind::Manifest, &key, &device, b"payload").unwrap();
        assert!(is_chunk(&chunk));
        assert!(open_local(&chunk, place, BlobKind::Manifest, keys).is_err());
    }

    #[test]
    fn a_valid_tag_with_a_forged_signature_is_refused() {
        let (key, device, workspace_id) = fixture();
        let place = ChunkPlace { workspace_id: &workspace_id, blob_id: b"c/tasks/1" };
        // Someone holding the storage key but not the device's signing key claims the device wrote it.
        let impostor = DeviceIdentity::generate().unwrap();
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&[FORMAT_VERSION, BlobKind::Changes as u8]);
        header.extend_from_slice(&DEVICE_KEY.to_le_bytes());
        let sealing = SealingKey::Device(DEVICE_KEY);
        let mut plaintext = device.device_id().0.to_vec();
        plaintext.extend_from_slice(&impostor.sign(&signed_message(place, BlobKind::Changes, sealing, b"x")));
        plaintext.extend_from_slice(b"x");
        let mut aad = Vec::new();
        place.bind(&header, &mut aad);
        header.extend_from_slice(&crypto::seal(&key, &aad, &plaintext).unwrap());
        assert_eq!(open_chunk(&header, place, BlobKind::Changes, |_| Some(&key)), Err(ChunkError::BadSignature));
    }

    #[test]
    fn a_format_1_frame_opens_only_with_the_workspace_derived_key_it_names() {
        let (device_storage, device, workspace_id) = fixture();
        let derived = SecretKey::random().unwrap();
        let place = ChunkPlace { workspace_id: &workspace_id, blob_id: b"c/tasks/1" };
        let legacy = SealingKey::WorkspaceEpoch(1);
        let chunk = seal_chunk_as(place, BlobKind::Changes, legacy, &derived, &device, b"old").unwrap();
        let local = seal_local_as(place, BlobKind::Manifest, legacy, &derived, b"old").unwrap();
        assert_eq!(parse_frame(&chunk).unwrap().key, legacy);
        assert!(!parse_frame(&local).unwrap().signed);
        let both = |sealing: SealingKey| match sealing {
            SealingKey::WorkspaceEpoch(1) => Some(&derived),
            SealingKey::Device(DEVICE_KEY) => Some(&device_storage),
            _ => None,
        };
        assert_eq!(open_chunk(&chunk, place, BlobKind::Changes, both).unwrap().payload, b"old");
        assert_eq!(open_local(&local, place, BlobKind::Manifest, both).unwrap(), b"old");
        // A device that no longer accepts the derived key refuses them by their header.
        let refused = Err(ChunkError::UnknownKey(legacy));
        assert_eq!(open_chunk(&chunk, place, BlobKind::Changes, device_key(&device_storage)), refused);
        assert_eq!(
            open_local(&local, place, BlobKind::Manifest, device_key(&device_storage)),
            refused.map(|c| c.payload)
        );
        // Relabelled as the current format, it fails authentication under either key.
        let mut relabelled = chunk.clone();
        relabelled[4] = FORMAT_VERSION;
        assert_eq!(open_chunk(&relabelled, place, BlobKind::Changes, |_| Some(&derived)), Err(ChunkError::Unauthentic));
        // Nor does a current frame open with the derived key, whatever its header names.
        let current = seal_chunk(place, BlobKind::Changes, &device_storage, &device, b"new").unwrap();
        assert_eq!(open_chunk(&current, place, BlobKind::Changes, |_| Some(&derived)), Err(ChunkError::Unauthentic));
    }
}
