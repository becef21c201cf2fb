//! The store key layout: where each part of a document's log, its read view and its event
//! index lives.
//!
//! Document names may contain `/` but never a NUL ([`check_document_name`]), so a NUL ends the
//! name in numbered keys and `activity` can
//! never be a prefix of `activity/2026-11`'s keys. Numbers are big-endian, so a prefix scan
//! returns chunks in sequence order.

use crate::error::{Error, Result};

/// The cleartext header (format, workspace id, how the keyring is protected).
pub const HEADER: &[u8] = b"h";
/// The sealed local keyring.
pub const KEYRING: &[u8] = b"k";
/// The recovery phrase's secret and salt (sealed), once a phrase was made on this device.
pub const RECOVERY: &[u8] = b"r";
/// Present (sealed) once the workspace has a witness file: its absence is then refused.
pub const WITNESS_MARK: &[u8] = b"w";

/// Longest document name accepted.
const MAX_DOCUMENT_NAME: usize = 128;

/// Checks that `name` may name a document: short, and only `[a-z0-9/_-]` and capitals (ids),
/// so no NUL can end it early and make its keys collide with another document's.
pub fn check_document_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_DOCUMENT_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if valid { Ok(()) } else { Err(Error::DocumentNameInvalid { name: name.to_owned() }) }
}

/// A device setting (`l/NAME`): local, never synced.
pub fn device_setting(name: &str) -> Vec<u8> {
    [b"l/", name.as_bytes()].concat()
}

pub fn manifest(document: &str) -> Vec<u8> {
    [b"m/", document.as_bytes()].concat()
}

pub fn change_prefix(document: &str) -> Vec<u8> {
    [b"c/", document.as_bytes(), b"\0"].concat()
}

pub fn change(document: &str, seq: u64) -> Vec<u8> {
    numbered(&change_prefix(document), seq)
}

pub fn change_seq(document: &str, key: &[u8]) -> Option<u64> {
    number_after(&change_prefix(document), key)
}

pub fn view(document: &str) -> Vec<u8> {
    [b"v/", document.as_bytes()].concat()
}

pub fn delta_prefix(document: &str) -> Vec<u8> {
    [b"d/", document.as_bytes(), b"\0"].concat()
}

pub fn delta(document: &str, seq: u64) -> Vec<u8> {
    numbered(&delta_prefix(document), seq)
}

pub fn delta_seq(document: &str, key: &[u8]) -> Option<u64> {
    number_after(&delta_prefix(document), key)
}

pub fn index(document: &str) -> Vec<u8> {
    [b"e/", document.as_bytes()].concat()
}

pub fn index_part_prefix(document: &str) -> Vec<u8> {
    [b"x/", document.as_bytes(), b"\0"].concat()
}

pub fn index_part(document: &str, seq: u64) -> Vec<u8> {
    numbered(&index_part_prefix(document), seq)
}

pub fn index_part_seq(document: &str, key: &[u8]) -> Option<u64> {
    number_after(&index_part_prefix(document), key)
}

/// Where changes waiting for their dependencies are kept: `p/DOC\0HASH`.
pub const PENDING_PREFIX: &[u8] = b"p/";

pub fn pending_prefix(document: &str) -> Vec<u8> {
    [PENDING_PREFIX, document.as_bytes(), b"\0"].concat()
}

pub fn pending(document: &str, hash: &automerge::ChangeHash) -> Vec<u8> {
    [pending_prefix(document).as_slice(), &hash.0].concat()
}

/// What this device knows of a relay (`y/RELAY`, RELAY the hash of its address).
pub fn relay_state(relay: &str) -> Vec<u8> {
    [RELAY_STATE_PREFIX, relay_name(relay).as_bytes()].concat()
}

pub fn relay_outbox_prefix(relay: &str) -> Vec<u8> {
    [b"o/", relay_name(relay).as_bytes(), b"\0"].concat()
}

/// The `index`th sealed unit waiting to be acknowledged by a relay (`o/RELAY\0N`).
pub fn relay_outbox(relay: &str, index: u64) -> Vec<u8> {
    numbered(&relay_outbox_prefix(relay), index)
}

/// A unit of a relay's sequence this device refused, kept to be tried again (`u/RELAY\0N`,
/// N its number in the sequence).
pub fn relay_refused(relay: &str, seq: u64) -> Vec<u8> {
    numbered(&[b"u/", relay_name(relay).as_bytes(), b"\0"].concat(), seq)
}

/// What this device knows of every relay: the sync states' common prefix.
pub const RELAY_STATE_PREFIX: &[u8] = b"y/";

/// The records of the units of a relay's sequence this device has not taken in whole.
pub fn relay_unsettled_prefix(relay: &str) -> Vec<u8> {
    relay_unsettled_prefix_of(relay_name(relay).as_bytes())
}

/// [`relay_unsettled_prefix`] of the relay whose sync state is at `state_key`.
pub fn relay_unsettled_prefix_of_state(state_key: &[u8]) -> Option<Vec<u8>> {
    Some(relay_unsettled_prefix_of(state_key.strip_prefix(RELAY_STATE_PREFIX)?))
}

fn relay_unsettled_prefix_of(name: &[u8]) -> Vec<u8> {
    [b"n/", name, b"\0"].concat()
}

/// Unit N of a relay's sequence held back or refused here, and why (`n/RELAY\0N`).
pub fn relay_unsettled(relay: &str, seq: u64) -> Vec<u8> {
    relay_unsettled_in(&relay_unsettled_prefix(relay), seq)
}

/// [`relay_unsettled`] under a relay's `prefix`.
pub fn relay_unsettled_in(prefix: &[u8], seq: u64) -> Vec<u8> {
    numbered(prefix, seq)
}

/// The unit number of a key under [`relay_unsettled_prefix`] `prefix`.
pub fn relay_unsettled_seq(prefix: &[u8], key: &[u8]) -> Option<u64> {
    number_after(prefix, key)
}

/// A relay's address as a short, store-safe name.
fn relay_name(relay: &str) -> String {
    blake3::hash(relay.as_bytes()).to_hex()[..16].to_owned()
}

/// What this device and a peer hold in common (`q/PEER`, PEER the peer's device id, hex).
pub fn peer_state(peer: &adiuva_model::DeviceId) -> Vec<u8> {
    [b"q/", peer.to_string().as_bytes()].concat()
}

/// An open invitation: its secret and expiry (`i/INVITE`).
pub fn invite(id: ulid::Ulid) -> Vec<u8> {
    [b"i/".as_slice(), &id.to_bytes()].concat()
}

pub fn snapshot_prefix(document: &str) -> Vec<u8> {
    [b"s/", document.as_bytes(), b"\0"].concat()
}

pub fn snapshot(document: &str, generation: u64) -> Vec<u8> {
    numbered(&snapshot_prefix(document), generation)
}

pub fn snapshot_generation(document: &str, key: &[u8]) -> Option<u64> {
    number_after(&snapshot_prefix(document), key)
}

/// The document a store key belongs to (for errors), or the key itself if it is no document's.
pub fn document(key: &[u8]) -> String {
    match key {
        [b'c' | b's' | b'd' | b'x' | b'm' | b'v' | b'e' | b'p', b'/', rest @ ..] => {
            let name = rest.split(|&b| b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(name).into_owned()
        }
        other => String::from_utf8_lossy(other).into_owned(),
    }
}

fn numbered(prefix: &[u8], number: u64) -> Vec<u8> {
    [prefix, &number.to_be_bytes()].concat()
}

fn number_after(prefix: &[u8], key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.strip_prefix(prefix)?.try_into().ok()?))
}

/// A readable name for a store key, for errors: `tasks#12`, `tasks snapshot 3`.
pub fn describe(key: &[u8]) -> String {
    // `DOC\0NUMBER` as `DOC{separator}NUMBER`.
    let numbered = |rest: &[u8], separator: &str| -> String {
        let (document, number) = match rest.iter().position(|&b| b == 0) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        let document = String::from_utf8_lossy(document);
        match <[u8; 8]>::try_from(number) {
            Ok(number) => format!("{document}{separator}{}", u64::from_be_bytes(number)),
            Err(_) => format!("{document}{separator}?"),
        }
    };
    match key {
        [b'c', b'/', rest @ ..] => numbered(rest, "#"),
        [b's', b'/', rest @ ..] => numbered(rest, " snapshot "),
        [b'd', b'/', rest @ ..] => numbered(rest, " read view delta "),
        [b'x', b'/', rest @ ..] => numbered(rest, " event index part "),
        [b'p', b'/', rest @ ..] => {
            let document = rest.split(|&b| b == 0).next().unwrap_or_default();
            format!("{} pending change", String::from_utf8_lossy(document))
        }
        [b'm', b'/', rest @ ..] => format!("{} manifest", String::from_utf8_lossy(rest)),
        [b'v', b'/', rest @ ..] => format!("{} read view", String::from_utf8_lossy(rest)),
        [b'e', b'/', rest @ ..] => format!("{} event index", String::from_utf8_lossy(rest)),
        [b'l', b'/', rest @ ..] => format!("device setting {}", String::from_utf8_lossy(rest)),
        [b'y', b'/', rest @ ..] => format!("relay state {}", String::from_utf8_lossy(rest)),
        [b'o', b'/', rest @ ..] => numbered(rest, " relay outbox unit "),
        [b'u', b'/', rest @ ..] => numbered(rest, " refused relay unit "),
        [b'n', b'/', rest @ ..] => numbered(rest, " unsettled relay unit "),
        [b'q', b'/', rest @ ..] => format!("peer state {}", String::from_utf8_lossy(rest)),
        other => String::from_utf8_lossy(other).into_owned(),
    }
}
