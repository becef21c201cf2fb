//! Restore points: the whole workspace as compacted snapshots, each with the attestations of
//! every change it holds, sealed under the **snapshot key** of the current epoch and signed by
//! the device that made it — what the relay keeps as a backup, opaque to it.
//!
//! ```text
//! blob    = "ADVR" | version u8 (=1) | workspace id 16 | frame
//! frame   = a bundle frame sealed under the snapshot key, blob id "relay/restore-point"
//! payload = point id 16 | index u32 LE | count u32 LE | parts (as a relay unit's)
//!           | zeros up to the blob's size bucket
//! part    = a document's name and its `SignedSnapshot`
//! ```
//!
//! A restore point is `count` blobs (each at most 16 MiB; a document is never split), numbered
//! within the point: one missing, repeated, from another point or another workspace, altered
//! or cut is a typed error before anything is imported. Applying one imports every document
//! (the root first) through [`Workspace::import_changes`], each change checked as any import:
//! it brings back whatever this device lacks, and changes nothing it already has.

use adiuva_model::DeviceId;
use automerge::Automerge;

use super::relay::{RELAY_FRAME_PREFIX, RelayFrame, decode_parts, encode_parts};
use super::sync::Imported;
use super::{ROOT_DOCUMENT, Workspace};
use crate::authorship::{Decoded, SignedChanges, SignedSnapshot};
use crate::crypto::{KeyPurpose, WorkspaceKey, random_bytes};
use crate::error::{Error, Result};

/// How a restore point's blob starts.
const RESTORE_POINT_MAGIC: &[u8; 4] = b"ADVR";
pub(super) const RESTORE_POINT_FRAME: RelayFrame = RelayFrame {
    magic: RESTORE_POINT_MAGIC,
    version: 1,
    blob_id: b"relay/restore-point",
    purpose: KeyPurpose::Snapshots,
    noun: "restore point",
};
/// What a blob adds to its payload: prefix, frame header, nonce, tag, signer and signature.
const OVERHEAD: usize = RELAY_FRAME_PREFIX + 10 + 24 + 16 + 32 + 64;
/// The payload's point id, index and count, and the parts' count.
const HEADER: usize = 16 + 4 + 4 + 4;
const SMALLEST: usize = 1024;
const LARGEST: usize = 16 * 1024 * 1024;

/// A restore point made by [`Workspace::restore_point`].
pub struct RestorePoint {
    /// Its blobs, in order.
    pub blobs: Vec<Vec<u8>>,
    pub documents: usize,
}

/// One blob of a restore point, opened and checked.
pub struct OpenedBlob {
    pub signer: DeviceId,
    pub point: [u8; 16],
    pub index: u32,
    pub count: u32,
    pub parts: Vec<(String, Vec<u8>)>,
}

/// Whether `bytes` is a blob of a restore point (rather than a relay unit).
pub fn is_restore_point(bytes: &[u8]) -> bool {
    bytes.starts_with(RESTORE_POINT_MAGIC)
}

impl Workspace {
    /// The workspace as a restore point: every document compacted, with its attestations.
    pub fn restore_point(&mut self) -> Result<RestorePoint> {
        let mut names = self.document_names()?;
        // The root first: importing it first admits the devices the rest was written by.
        names.sort_by_key(|name| name.as_str() != ROOT_DOCUMENT);
        let mut parts = Vec::new();
        for name in names {
            let signed = match SignedChanges::decode(&self.export_changes(&name, &[])?) {
                Ok(Decoded::Attested(signed)) => signed,
                _ => return Err(Error::Encode { what: "restore point" }),
            };
            let document = self.document(&name)?.doc.save();
            let snapshot = SignedSnapshot { attestations: signed.attestations, document }.encode()?;
            parts.push((name, snapshot));
        }
        let documents = parts.len();
        let mut groups: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new()];
        let mut group_bytes = 0;
        for (name, snapshot) in parts {
            let bytes = name.len() + snapshot.len() + 6;
            if bytes + HEADER + OVERHEAD > LARGEST {
                return Err(Error::UnitTooLarge { document: name, bytes });
            }
            if group_bytes + bytes + HEADER + OVERHEAD > LARGEST && groups.last().is_some_and(|group| !group.is_empty())
            {
                groups.push(Vec::new());
                group_bytes = 0;
            }
            group_bytes += bytes;
            if let Some(group) = groups.last_mut() {
                group.push((name, snapshot));
            }
        }
        let point_id: [u8; 16] = random_bytes()?;
        let count = groups.len() as u32;
        let blobs = groups
            .iter()
            .enumerate()
            .map(|(index, group)| self.seal_restore_blob(&point_id, index as u32, count, group))
            .collect::<Result<_>>()?;
        Ok(RestorePoint { blobs, documents })
    }

    fn seal_restore_blob(
        &self,
        point: &[u8; 16],
        index: u32,
        count: u32,
        parts: &[(String, Vec<u8>)],
    ) -> Result<Vec<u8>> {
        let mut payload = Vec::new();
        payload.extend_from_slice(point);
        payload.extend_from_slice(&index.to_le_bytes());
        payload.extend_from_slice(&count.to_le_bytes());
        payload.extend(encode_parts(parts, "restore point")?);
        let bucket = (payload.len() + OVERHEAD).max(SMALLEST).next_power_of_two();
        payload.resize(bucket - OVERHEAD, 0);
        let current =
            self.log.keyring.workspace_key().ok_or(Error::WorkspaceFormat { detail: "no workspace key".into() })?;
        RESTORE_POINT_FRAME.seal(&self.log.workspace_id, current, &self.log.identity, &payload)
    }

    /// Checks every blob of a restore point (format, workspace, epoch, authentication,
    /// signature by a device of the list, numbering within one point), then imports its
    /// documents, the root first, each change checked as any import. Nothing is imported
    /// unless every blob passed.
    pub fn apply_restore_point(&mut self, blobs: &[Vec<u8>]) -> Result<Imported> {
        let mut point = None;
        let mut parts = Vec::new();
        for (index, blob) in blobs.iter().enumerate() {
            let name = format!("restore point part {}", index + 1);
            let malformed = |detail: &str| Error::UnitMalformed { unit: name.clone(), detail: detail.to_owned() };
            let opened = self.open_restore_blob(&name, blob)?;
            if *point.get_or_insert(opened.point) != opened.point {
                return Err(malformed("a part of another restore point"));
            }
            if opened.index as usize != index || opened.count as usize != blobs.len() {
                return Err(malformed(&format!(
                    "part {} of {} where part {} of {} was due",
                    opened.index + 1,
                    opened.count,
                    index + 1,
                    blobs.len()
                )));
            }
            parts.extend(opened.parts);
        }
        let mut snapshots = Vec::new();
        for (document, bytes) in parts {
            let malformed = |detail: &str| Error::UnitMalformed {
                unit: format!("restore point, {document}"),
                detail: detail.to_owned(),
            };
            let Ok(Decoded::Attested(snapshot)) = SignedSnapshot::decode(&bytes) else {
                return Err(malformed("not a signed snapshot"));
            };
            let doc = Automerge::load(&snapshot.document).map_err(|_| malformed("not an Automerge document"))?;
            let changes = doc.get_changes(&[]).iter().map(|change| change.raw_bytes().to_vec()).collect();
            snapshots.push((document, SignedChanges { attestations: snapshot.attestations, changes }.encode()?));
        }
        let mut imported = Imported::default();
        for (document, signed) in snapshots {
            let one = self.import_changes(&document, &signed)?;
            imported.applied += one.applied;
            imported.pending += one.pending;
            imported.refused.extend(one.refused);
        }
        Ok(imported)
    }

    /// One blob opened (see [`open_restore_blob_bytes`]), sealed by a device of the list.
    fn open_restore_blob(&mut self, name: &str, blob: &[u8]) -> Result<OpenedBlob> {
        let opened = open_restore_blob_bytes(name, &self.log.workspace_id, self.log.keyring.workspace_keys(), blob)?;
        if !self.device_list()?.devices.contains_key(&opened.signer) {
            return Err(Error::DeviceUnknown { device: opened.signer.to_string(), document: None, change: None });
        }
        Ok(opened)
    }
}

/// One blob of a restore point opened with the snapshot keys of `keys` (workspace, epoch,
/// authentication and signature checked): its signer, point id, index, count and parts. Pure;
/// never panics.
pub(super) fn open_restore_blob_bytes(
    name: &str,
    workspace_id: &[u8; 16],
    keys: &[WorkspaceKey],
    blob: &[u8],
) -> Result<OpenedBlob> {
    let malformed = |detail: &str| Error::UnitMalformed { unit: name.to_owned(), detail: detail.to_owned() };
    let opened = RESTORE_POINT_FRAME.open(name, workspace_id, &RESTORE_POINT_FRAME.keys(keys), blob)?;
    let payload = opened.payload.as_slice();
    let (point, rest) = payload.split_at_checked(16).ok_or_else(|| malformed("truncated"))?;
    let (index, rest) = rest.split_at_checked(4).ok_or_else(|| malformed("truncated"))?;
    let (count, rest) = rest.split_at_checked(4).ok_or_else(|| malformed("truncated"))?;
    let point: [u8; 16] = point.try_into().map_err(|_| malformed("truncated"))?;
    let index = u32::from_le_bytes(index.try_into().map_err(|_| malformed("truncated"))?);
    let count = u32::from_le_bytes(count.try_into().map_err(|_| malformed("truncated"))?);
    Ok(OpenedBlob { signer: opened.signer, point, index, count, parts: decode_parts(rest, name)? })
}
