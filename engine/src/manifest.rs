//! A document's manifest: the authenticated list of what the store must hold for it.
//!
//! Without it, a lost chunk would be indistinguishable from one never written, and Automerge
//! would load the rest without complaint. The manifest is rewritten in the same atomic batch as
//! every chunk it accounts for, and sealed like any chunk, so the store "knows how many chunks it
//! must hold": a missing, truncated or stray chunk is an error on load, never silently skipped.

use serde::{Deserialize, Serialize};

/// Version 2 added `events`. Version 1 manifests still read (without it).
const MANIFEST_VERSION: u32 = 2;
const OLDEST_READABLE_VERSION: u32 = 1;

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
    /// How many events (changes) the document holds, so counting them needs no Automerge load.
    /// `None` in a version 1 manifest until the document's next commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
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
        Self { v: MANIFEST_VERSION, events: Some(0), ..Self::default() }
    }

    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        crate::encode::json(self, "manifest")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(OLDEST_READABLE_VERSION..=MANIFEST_VERSION).contains(&manifest.v) {
            return Err(format!("manifest version {} (this build reads up to {MANIFEST_VERSION})", manifest.v));
        }
        // Rewritten as the current version, with whatever the older one lacked filled in.
        manifest.v = MANIFEST_VERSION;
        if manifest.tail_start > manifest.next_seq {
            return Err("tail starts after its end".into());
        }
        Ok(manifest)
    }

    pub fn tail_len(&self) -> u64 {
        self.next_seq - self.tail_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_reads_without_a_count_and_a_newer_version_is_refused() {
        let v1 = br#"{"v":1,"tail_start":0,"next_seq":3,"tail_bytes":900}"#;
        let manifest = Manifest::decode(v1).unwrap();
        assert_eq!((manifest.next_seq, manifest.events), (3, None));
        assert!(Manifest::decode(&manifest.encode().unwrap()).is_ok());
        let v3 = br#"{"v":3,"tail_start":0,"next_seq":3,"tail_bytes":900}"#;
        assert!(Manifest::decode(v3).unwrap_err().contains("version 3"));
    }
}
