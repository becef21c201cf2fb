//! The peer protocol's frames, and their pure encoder and decoder (the `peer` fuzz target).
//!
//! ```text
//! frame  = length u32 BE | body                  (length ≤ MAX_FRAME)
//! body   = 1 | "ADVP" | version u8 (=2) | workspace id 16          hello
//!        | 2 | count u32 BE | entry × count                          round
//!        | 3 | digest 32                                               heads
//!        | 4                                                           notice
//!        | 5 | digest 32 | count u32 BE | unit × count                  push
//! entry  = name length u16 BE | name | sync length u32 BE | sync | changes length u32 BE | changes
//! unit   = name length u16 BE | name | changes length u32 BE | changes
//! ```
//!
//! A round holds one [`PeerMessage`] per document that had something to say; an empty round
//! says "nothing more from me". A notice and a push go on a live link's stream of news (see
//! [`live`](crate::live)): a push carries new changes as signed units and the sender's heads
//! digest with them, and is answered with the receiver's heads digest after taking them in. Nothing here trusts its input: every length is checked against
//! what is left, and a name must be UTF-8 (the engine checks it further before any key is
//! built from it).

use adiuva_engine::workspace::PeerMessage;

/// The largest frame either side accepts: a round of every document's changes would otherwise
/// let a peer make this device buffer without bound. A round larger than this is split.
pub const MAX_FRAME: usize = 128 * 1024 * 1024;
/// What a round's changes may add up to before the sender starts another round.
pub const ROUND_BUDGET: usize = 16 * 1024 * 1024;

const HELLO: u8 = 1;
const ROUND: u8 = 2;
const HEADS: u8 = 3;
const NOTICE: u8 = 4;
const PUSH: u8 = 5;
const MAGIC: &[u8; 4] = b"ADVP";
/// 3: a live link's news as framed notices and pushes (2: a byte per notice; 1: rounds in
/// lockstep).
pub const VERSION: u8 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u8,
        workspace_id: [u8; 16],
    },
    Round(Vec<(String, PeerMessage)>),
    /// A digest of every document's heads: equal digests, same changes.
    Heads([u8; 32]),
    /// The sender gained changes: the receiver should run a session.
    Notice,
    /// New changes per document (signed units) and the sender's heads digest with them.
    Push {
        digest: [u8; 32],
        units: Vec<(String, Vec<u8>)>,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError(pub String);

impl Frame {
    /// The frame's body (without its length prefix).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Hello { version, workspace_id } => {
                let mut out = vec![HELLO];
                out.extend_from_slice(MAGIC);
                out.push(*version);
                out.extend_from_slice(workspace_id);
                out
            }
            Frame::Round(entries) => {
                let mut out = vec![ROUND];
                out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (name, message) in entries {
                    put_name(&mut out, name);
                    put_bytes(&mut out, &message.sync);
                    put_bytes(&mut out, &message.changes);
                }
                out
            }
            Frame::Heads(digest) => [&[HEADS][..], digest].concat(),
            Frame::Notice => vec![NOTICE],
            Frame::Push { digest, units } => {
                let mut out = vec![PUSH];
                out.extend_from_slice(digest);
                out.extend_from_slice(&(units.len() as u32).to_be_bytes());
                for (name, changes) in units {
                    put_name(&mut out, name);
                    put_bytes(&mut out, changes);
                }
                out
            }
        }
    }

    /// Decodes a frame's body.
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        let mut input = Input(body);
        let frame = match input.u8()? {
            HELLO => {
                if input.take(4)? != MAGIC {
                    return Err(FrameError("a hello without the protocol's magic".into()));
                }
                let version = input.u8()?;
                let workspace_id = input.take(16)?.try_into().map_err(|_| FrameError("workspace id".into()))?;
                Frame::Hello { version, workspace_id }
            }
            ROUND => {
                let count = input.u32()? as usize;
                // Each entry takes at least 10 bytes: a count beyond that is a lie.
                if count > input.0.len() / 10 {
                    return Err(FrameError(format!("a round announcing {count} entries in {} bytes", input.0.len())));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = input.name()?;
                    let sync = input.bytes()?;
                    let changes = input.bytes()?;
                    entries.push((name, PeerMessage { sync, changes }));
                }
                Frame::Round(entries)
            }
            HEADS => Frame::Heads(input.digest()?),
            NOTICE => Frame::Notice,
            PUSH => {
                let digest = input.digest()?;
                let count = input.u32()? as usize;
                // Each unit takes at least 6 bytes.
                if count > input.0.len() / 6 {
                    return Err(FrameError(format!("a push announcing {count} units in {} bytes", input.0.len())));
                }
                let mut units = Vec::with_capacity(count);
                for _ in 0..count {
                    units.push((input.name()?, input.bytes()?));
                }
                Frame::Push { digest, units }
            }
            other => return Err(FrameError(format!("unknown frame kind {other}"))),
        };
        if !input.0.is_empty() {
            return Err(FrameError(format!("{} bytes after the frame", input.0.len())));
        }
        Ok(frame)
    }
}

/// The length a frame's 4-byte prefix announces, if this side accepts it.
pub fn frame_length(prefix: [u8; 4]) -> Result<usize, usize> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_FRAME { Err(length) } else { Ok(length) }
}

/// A document name: length u16 BE, UTF-8 (names are checked far shorter than 64 KiB).
fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Bytes after their length, u32 BE (a frame is at most 128 MiB).
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.0.len() {
            return Err(FrameError(format!("cut short: {n} bytes wanted, {} left", self.0.len())));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn digest(&mut self) -> Result<[u8; 32], FrameError> {
        self.take(32)?.try_into().map_err(|_| FrameError("digest".into()))
    }

    /// Bytes after their length, u32 BE.
    fn bytes(&mut self) -> Result<Vec<u8>, FrameError> {
        let length = self.u32()? as usize;
        Ok(self.take(length)?.to_vec())
    }

    /// A document name: length u16 BE, UTF-8.
    fn name(&mut self) -> Result<String, FrameError> {
        let length = self.u16()? as usize;
        std::str::from_utf8(self.take(length)?)
            .map(str::to_owned)
            .map_err(|_| FrameError("a document name that is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_an_error() {
        let hello = Frame::Hello { version: VERSION, workspace_id: [7; 16] };
        assert_eq!(Frame::decode(&hello.encode()), Ok(hello));
        let round = Frame::Round(vec![
            ("root".into(), PeerMessage { sync: vec![1, 2, 3], changes: vec![] }),
            ("tasks".into(), PeerMessage { sync: vec![4], changes: vec![5; 40] }),
        ]);
        let bytes = round.encode();
        assert_eq!(Frame::decode(&bytes), Ok(round));
        for cut in 0..bytes.len() {
            assert!(Frame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Frame::decode(&longer).is_err());
        assert!(Frame::decode(&[2, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Frame::decode(&[9]).is_err());
        let heads = Frame::Heads([3; 32]);
        assert_eq!(Frame::decode(&heads.encode()), Ok(heads));
        assert_eq!(Frame::decode(&Frame::Notice.encode()), Ok(Frame::Notice));
        let push = Frame::Push { digest: [4; 32], units: vec![("root".into(), vec![]), ("tasks".into(), vec![6; 30])] };
        let bytes = push.encode();
        assert_eq!(Frame::decode(&bytes), Ok(push));
        for cut in 0..bytes.len() {
            assert!(Frame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = [&[5][..], &[0; 32], &[0xff; 4]].concat();
        lying.extend_from_slice(&[0; 12]);
        assert!(Frame::decode(&lying).is_err());
        assert_eq!(frame_length((MAX_FRAME as u32 + 1).to_be_bytes()), Err(MAX_FRAME + 1));
    }
}
