//! A document's manifest: the authenticated list of what the store must hold for it.
//!
//! Without it, a lost chunk would be indistinguishable from one never written, and Automerge
//! would load the rest without complaint. The manifest is rewritten in the same atomic batch as
//! every chunk it accounts for, and sealed like any chunk, so the store "knows how many chunks it
//! must hold": a missing, truncated or stray chunk is an error on load, never silently skipped.

use serde::{Deserialize, Serialize};

const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    v: u32,
    /// The first change chunk not folded into the snapshot.
    pub tail_start: u64,
    /// The sequence number the next change chunk gets; the tail is `tail_start..next_seq`.
    pub next_seq: u64,
    /// Bytes of change chunks in the tail.
    pub tail_bytes: u64,
    /// The compacted snapshot the tail applies on top of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    /// Increases with every compaction, so a new snapshot never overwrites the one it replaces.
    pub generation: u64,
    /// Its sealed size.
    pub bytes: u64,
}

impl Manifest {
    pub fn empty() -> Self {
        Self { v: MANIFEST_VERSION, ..Self::default() }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if manifest.v != MANIFEST_VERSION {
            return Err(format!("manifest version {} (this build reads {MANIFEST_VERSION})", manifest.v));
        }
        if manifest.tail_start > manifest.next_seq {
            return Err("tail starts after its end".into());
        }
        Ok(manifest)
    }

    pub fn tail_len(&self) -> u64 {
        self.next_seq - self.tail_start
    }
}
