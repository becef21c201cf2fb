//! The event index: the envelopes of a document's changes, kept beside its log, so that `log`
//! and `history` read them without loading the document into Automerge (whose load costs what
//! the document's text costs, where the envelopes are a few hundred bytes each).
//!
//! ```text
//! e/DOC          base: the events of the chunks before `next_seq`
//! x/DOC\0SEQ     part: the events of the chunks [first_seq, next_seq)
//! ```
//!
//! Kept like the read view ([`crate::view`]): each batch that writes chunks writes their part,
//! compaction folds the parts into the base, and an index that does not reach exactly the
//! manifest's `next_seq` is rebuilt from the document. It is a cache of the log, never its
//! source, and local: sealed as a local blob without a signature.
//!
//! Each event is its change hash and its envelope as committed (the change's message, JSON),
//! framed in binary and deflated: `"ADVE" | version 1 | first_seq u64 | next_seq u64 | count u32
//! | count × (hash [32] | length u32 | envelope)`, integers little-endian.

use std::io::Read;

use automerge::ChangeHash;

use crate::encode;

const MAGIC: &[u8; 4] = b"ADVE";
const VERSION: u8 = 1;
const WHAT: &str = "event index";

/// One event: its change and its envelope's JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedEvent {
    pub change: ChangeHash,
    pub envelope: Box<str>,
}

/// The events of the chunks `[first_seq, next_seq)` of one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventIndex {
    pub first_seq: u64,
    pub next_seq: u64,
    pub events: Vec<IndexedEvent>,
}

/// Why stored bytes are not an event index. The workspace rebuilds it from the log.
#[derive(Debug, thiserror::Error)]
pub enum IndexDecodeError {
    #[error("not an event index: {0}")]
    Malformed(&'static str),
    #[error("event index does not inflate: {0}")]
    Inflate(#[from] std::io::Error),
}

impl EventIndex {
    /// Appends the part that continues this index; `false` (and nothing appended) if it does not.
    pub fn append(&mut self, part: EventIndex) -> bool {
        if part.first_seq != self.next_seq || part.next_seq < part.first_seq {
            return false;
        }
        self.events.extend(part.events);
        self.next_seq = part.next_seq;
        true
    }

    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        let size = 25 + self.events.iter().map(|e| 36 + e.envelope.len()).sum::<usize>();
        let mut plain = Vec::with_capacity(size);
        plain.extend_from_slice(MAGIC);
        plain.push(VERSION);
        plain.extend_from_slice(&self.first_seq.to_le_bytes());
        plain.extend_from_slice(&self.next_seq.to_le_bytes());
        plain.extend_from_slice(&encode::length_u32(self.events.len(), WHAT)?);
        for event in &self.events {
            plain.extend_from_slice(&event.change.0);
            plain.extend_from_slice(&encode::length_u32(event.envelope.len(), WHAT)?);
            plain.extend_from_slice(event.envelope.as_bytes());
        }
        encode::deflate(&plain, WHAT)
    }

    /// Decodes a base or a part. Pure; never panics. Envelopes are checked when read.
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexDecodeError> {
        let mut plain = Vec::with_capacity(bytes.len().saturating_mul(4));
        flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut plain)?;
        let mut rest = plain.as_slice();
        let mut take = |n: usize| -> Result<&[u8], IndexDecodeError> {
            let (head, tail) = rest.split_at_checked(n).ok_or(IndexDecodeError::Malformed("truncated"))?;
            rest = tail;
            Ok(head)
        };
        let malformed = |what: &'static str| move |_| IndexDecodeError::Malformed(what);
        if take(4)? != MAGIC {
            return Err(IndexDecodeError::Malformed("bad magic"));
        }
        if take(1)? != [VERSION] {
            return Err(IndexDecodeError::Malformed("unknown version"));
        }
        let first_seq = u64::from_le_bytes(take(8)?.try_into().map_err(malformed("seq"))?);
        let next_seq = u64::from_le_bytes(take(8)?.try_into().map_err(malformed("seq"))?);
        let count = u32::from_le_bytes(take(4)?.try_into().map_err(malformed("count"))?);
        // Each event takes at least 36 bytes: never reserve more than the bytes can hold.
        let mut events = Vec::with_capacity((count as usize).min(plain.len() / 36));
        for _ in 0..count {
            let change = ChangeHash(take(32)?.try_into().map_err(malformed("hash"))?);
            let length = u32::from_le_bytes(take(4)?.try_into().map_err(malformed("length"))?);
            let envelope =
                std::str::from_utf8(take(length as usize)?).map_err(|_| IndexDecodeError::Malformed("utf-8"))?;
            events.push(IndexedEvent { change, envelope: envelope.into() });
        }
        if !rest.is_empty() {
            return Err(IndexDecodeError::Malformed("bytes after the last event"));
        }
        Ok(Self { first_seq, next_seq, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_and_a_gap_is_refused() {
        let event = |n: u8| IndexedEvent { change: ChangeHash([n; 32]), envelope: format!("{{\"n\":{n}}}").into() };
        let mut index = EventIndex { first_seq: 0, next_seq: 2, events: vec![event(1), event(2)] };
        assert_eq!(EventIndex::decode(&index.encode().unwrap()).unwrap(), index);
        assert!(!index.append(EventIndex { first_seq: 3, next_seq: 4, events: vec![event(3)] }));
        assert!(index.append(EventIndex { first_seq: 2, next_seq: 4, events: vec![event(3)] }));
        assert_eq!((index.next_seq, index.events.len()), (4, 3));
        let encoded = index.encode().unwrap();
        assert!(EventIndex::decode(&encoded[..encoded.len() - 1]).is_err());
        assert!(EventIndex::decode(b"not deflate").is_err());
    }
}
