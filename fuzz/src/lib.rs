//! The fuzz targets' bodies, one function per target, over every decoder of bytes from
//! outside: other devices, the relay, the disk. The binaries in `fuzz_targets/` run them under
//! libFuzzer (`scripts/fuzz`); the test below replays every input of each target's committed
//! corpus (`seeds/TARGET/`: hand-made and real samples, and what long runs kept, minimized),
//! of the local corpus a run grew (`corpus/TARGET/`, not committed) and every crash kept as a
//! regression fixture (`regressions/TARGET/`) through them in the regular test run, so a fixed
//! crash stays fixed.
//!
//! A target must never panic on any input: a decoder's bad input is an `Err`. The assertions
//! inside check round trips (what decodes re-encodes to the same thing).

use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use adiuva_engine::authorship::{ChangeNames, Decoded, SignedChanges, SignedSnapshot};
use adiuva_engine::chunk::{BlobKind, ChunkPlace, open_chunk, open_local, parse_frame, seal_local};
use adiuva_engine::crypto::{SecretKey, WorkspaceKey};
use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::records;
use adiuva_engine::recovery::RecoveryKeys;
use adiuva_engine::untrusted::{self, load_document};
use adiuva_engine::workspace::fuzzing;
use axum::extract::{FromRequest, FromRequestParts};
use axum::response::IntoResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A target's body: bytes in, no panic.
pub type Target = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("chunk", chunk),
    ("header", header),
    ("view", view),
    ("wal", wal),
    ("signed", signed),
    ("invite", invite),
    ("search", search),
    ("peer", peer),
    ("apply", apply),
    ("document", document),
    ("relay_unit", relay_unit),
    ("key_envelope", key_envelope),
    ("relay_answer", relay_answer),
    ("relay_request", relay_request),
    ("daemon_request", daemon_request),
    ("import", import),
    ("relay_token", relay_token),
    ("llm_answer", llm_answer),
    ("join", join),
];

/// Commit messages arrive from other devices.
pub fn envelope(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = adiuva_model::Envelope::decode(text)
    {
        // What decodes must re-encode and decode to the same envelope.
        let encoded = envelope.encode().ok();
        assert_eq!(encoded.and_then(|text| adiuva_model::Envelope::decode(&text).ok()), Some(envelope));
    }
}

const KINDS: [BlobKind; 7] = [
    BlobKind::Changes,
    BlobKind::Snapshot,
    BlobKind::Manifest,
    BlobKind::ReadView,
    BlobKind::ReadViewDelta,
    BlobKind::EventIndex,
    BlobKind::Pending,
];

/// Chunks and local blobs from disk, peers and the relay: the frame decoders on the bytes as
/// they are, then — with a key the target knows — the decoders behind the AEAD: the first byte
/// picks a blob kind, the rest is sealed as such a blob's payload, opened through the real
/// path and decoded as what that kind holds.
pub fn chunk(data: &[u8]) {
    let _ = parse_frame(data);
    let key = SecretKey::from_bytes([7; 32]);
    let place = ChunkPlace { workspace_id: &[1; 16], blob_id: b"c/tasks\0\0\0\0\0\0\0\0\0" };
    for kind in KINDS {
        let _ = open_chunk(data, place, kind, |_| Some(&key));
        let _ = open_local(data, place, kind, |_| Some(&key));
    }
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let Ok(sealed) = seal_local(place, kind, &key, payload) else {
        return;
    };
    let opened = open_local(&sealed, place, kind, |_| Some(&key));
    assert_eq!(opened.as_deref().ok(), Some(payload), "a sealed blob opens to its payload");
    match kind {
        BlobKind::Changes | BlobKind::Pending => signed_changes(payload),
        BlobKind::Snapshot => signed_snapshot(payload),
        BlobKind::Manifest => {
            let _ = adiuva_engine::manifest::Manifest::decode(payload);
        }
        BlobKind::ReadView => {
            let _ = adiuva_engine::view::RecordView::decode(payload);
        }
        BlobKind::ReadViewDelta => view(payload),
        BlobKind::EventIndex => {
            let _ = adiuva_engine::event_index::EventIndex::decode(payload);
        }
        _ => {}
    }
}

/// The one record stored in clear.
pub fn header(data: &[u8]) {
    let _ = adiuva_engine::keystore::Header::decode(data);
}

/// What is kept beside the log, after decryption: read view bases and deltas, event indexes.
pub fn view(data: &[u8]) {
    let _ = adiuva_engine::view::RecordView::decode(data);
    let _ = adiuva_engine::event_index::EventIndex::decode(data);
    if let Ok(delta) = adiuva_engine::view::Delta::decode(data) {
        let mut view = adiuva_engine::view::RecordView::default();
        view.apply(&delta);
    }
}

/// The write-ahead log (read back unauthenticated at every open, also by a read-only open) and
/// manifests.
pub fn wal(data: &[u8]) {
    let _ = adiuva_engine::store::inspect_write_ahead_log(data);
    let _ = adiuva_engine::manifest::Manifest::decode(data);
}

/// What other devices send, after decryption: signed changes (tail chunks, exports, relay
/// bundles), signed snapshots (relay restore points) and invitation tickets.
pub fn signed(data: &[u8]) {
    // What decodes must re-encode to the same bytes: the format has one encoding.
    if let Ok(Decoded::Attested(unit)) = SignedChanges::decode(data) {
        assert_eq!(unit.encode().ok().as_deref(), Some(data));
    }
    signed_snapshot(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ticket) = adiuva_engine::Ticket::decode(text)
    {
        assert_eq!(adiuva_engine::Ticket::decode(&ticket.encode()).map(|t| t.invite_id).ok(), Some(ticket.invite_id));
    }
}

/// The invitation messages a joining device and an inviter exchange (through the relay, as
/// opaque JSON): a join request and a join acceptance.
pub fn invite(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<adiuva_engine::JoinRequest>(data) {
        let encoded = serde_json::to_vec(&request).ok();
        assert!(encoded.is_some_and(|bytes| serde_json::from_slice::<adiuva_engine::JoinRequest>(&bytes).is_ok()));
    }
    let _ = serde_json::from_slice::<adiuva_engine::JoinAcceptance>(data);
}

/// The search index's stored vectors, after decryption (a vector shard), and the text the
/// index cuts into words and chunks (notes from other devices).
pub fn search(data: &[u8]) {
    if let Ok((model, entries)) = adiuva_search::vectors::decode_shard(data) {
        let refs: Vec<_> = entries.iter().map(|(hash, vector)| (hash, vector.view())).collect();
        assert_eq!(adiuva_search::vectors::encode_shard(&model, &refs), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        use adiuva_search::text::analyzer;
        use tantivy::tokenizer::TokenStream;
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let token = stream.token();
            assert!(token.offset_from <= token.offset_to && text.is_char_boundary(token.offset_to));
        }
        let chunks = adiuva_search::record::chunk(text);
        assert!(!chunks.is_empty());
    }
}

/// A signed unit's changes, each parsed as Automerge parses a change it receives.
fn signed_changes(payload: &[u8]) {
    if let Ok(Decoded::Attested(unit)) = SignedChanges::decode(payload) {
        panics_caught_are_not_crashes();
        for change in unit.changes {
            let _ = untrusted::parse_change(change);
        }
    }
}

/// libFuzzer's panic hook aborts at any panic, even one the code under test catches (as
/// `load_document`, `parse_change` and `apply_changes` catch Automerge's). The default hook
/// instead: a panic that is not caught still ends the input as a crash (libfuzzer-sys aborts
/// when the target unwinds).
fn panics_caught_are_not_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// A signed snapshot's document, loaded as a restore or a peer loads it, and its attestations
/// named against it. What resolves must, encoded again, resolve to the same attestations.
fn signed_snapshot(payload: &[u8]) {
    let Ok(Decoded::Attested(snapshot)) = SignedSnapshot::decode(payload) else { return };
    let document = snapshot.document;
    panics_caught_are_not_crashes();
    let Ok(doc) = load_document(document, automerge::VerificationMode::Check) else { return };
    let Ok(attestations) = snapshot.attestations(&doc) else { return };
    let again = SignedSnapshot { attestations, document: document.to_vec() };
    let Ok(encoded) = again.encode(&ChangeNames::of(&doc)) else { panic!("a resolved snapshot did not encode") };
    let Ok(Decoded::Attested(decoded)) = SignedSnapshot::decode(&encoded) else { panic!("nor decode again") };
    assert_eq!(decoded.attestations(&doc).ok(), Some(again.attestations));
}

/// What a peer sends over the peer protocol: frames (hello, rounds, heads, notices, pushes) and, inside a
/// round, Automerge sync messages; and peer tickets as text.
pub fn peer(data: &[u8]) {
    use adiuva_p2p::frame::Frame;
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data);
        if let Frame::Round(entries) = frame {
            for (_, message) in entries {
                let _ = automerge::sync::Message::decode(&message.sync);
                // The changes: a signed unit, or a document whole for a peer holding none of it.
                if SignedSnapshot::is_one(&message.changes) {
                    signed_snapshot(&message.changes);
                } else {
                    signed_changes(&message.changes);
                }
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ticket) = text.parse::<adiuva_p2p::PeerTicket>()
    {
        assert_eq!(ticket.to_string().parse::<adiuva_p2p::PeerTicket>().ok(), Some(ticket));
    }
}

/// What the Automerge data other devices send does once it has passed its checks: the first
/// byte picks one change (as a signed unit carries it) or a sync message (as a peer's round
/// carries it: one without changes, its Bloom filters checked), the rest is that, taken in by
/// a collection document holding records. Changes go through `untrusted::apply_changes` and
/// are held under their own hash, as an import checks; the records a change touched are then
/// read back as the read views read them.
pub fn apply(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let mut doc = COLLECTION_DOCUMENT.clone();
    if kind % 2 == 0 {
        panics_caught_are_not_crashes();
        let Ok(change) = untrusted::parse_change(rest.to_vec()) else { return };
        // What an import refuses before applying: operations numbered out of turn.
        let numbered_from =
            untrusted::expected_start_op(change.deps(), |dep| doc.get_change_meta_by_hash(dep).map(|meta| meta.max_op));
        if numbered_from.is_some_and(|start| start != change.start_op().get()) {
            return;
        }
        let (before, hash) = (doc.get_heads(), change.hash());
        if untrusted::apply_changes(&mut doc, [change]).is_err() {
            return;
        }
        // What an import takes in is held under its own hash and holds no mark (else it is
        // refused), and then the document's save loads again, as compaction needs.
        let Ok(changes) = untrusted::changes_since(&doc, &before) else { return };
        if changes.iter().map(automerge::Change::hash).ne([hash]) {
            return;
        }
        let Ok(touched) = records::touched_by(&doc, &changes) else { return };
        let saved = doc.save();
        assert!(load_document(&saved, automerge::VerificationMode::Check).is_ok(), "a save that does not load");
        for id in touched.keys() {
            let _ = records::read_record(&doc, *id, None);
        }
        let _ = records::read_records(&doc, &records::record_ids(&doc));
    } else {
        use automerge::sync::SyncDoc;
        let Ok(message) = automerge::sync::Message::decode(rest) else { return };
        if !message.changes.is_empty() || untrusted::check_sync_message(&message).is_err() {
            return;
        }
        let mut state = automerge::sync::State::new();
        if doc.receive_sync_message(&mut state, message).is_ok() {
            let _ = doc.generate_sync_message(&mut state);
        }
    }
}

/// A bare Automerge document, as a restore point or a peer carries one inside a signed
/// snapshot (the `signed` and `peer` targets reach Automerge's loader only through that
/// framing), loaded through `untrusted::load_document`; then its records read as a read view
/// is made of them, and the document saved and loaded again, as compaction does.
pub fn document(data: &[u8]) {
    panics_caught_are_not_crashes();
    let Ok(doc) = load_document(data, automerge::VerificationMode::Check) else { return };
    let _ = records::read_records(&doc, &records::record_ids(&doc));
    let _ = load_document(&doc.save(), automerge::VerificationMode::Check);
}

/// The document the `apply` target's inputs are taken in by: two tasks and a note, made by
/// actor `[1; 16]` (the seeds' changes build on its heads).
pub static COLLECTION_DOCUMENT: LazyLock<automerge::Automerge> = LazyLock::new(|| {
    use adiuva_model::{Collection, RecordId};
    use records::Effect;
    let mut doc = automerge::Automerge::new().with_actor(automerge::ActorId::from([1; 16]));
    let record = |n: u8| RecordId(ulid::Ulid::from_parts(1_700_000_000_000 + u64::from(n), u128::from(n)));
    let fields = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default();
    let effects = [
        Effect::CreateRecord {
            collection: Collection::Tasks,
            id: record(1),
            fields: fields(
                serde_json::json!({"title": "Call the bank", "description": "about the card", "due": "2026-12-08", "tags": ["home", "money"]}),
            ),
        },
        Effect::CreateRecord {
            collection: Collection::Tasks,
            id: record(2),
            fields: fields(serde_json::json!({"title": "Book the train", "done": false, "priority": 2})),
        },
        Effect::CreateRecord {
            collection: Collection::Notes,
            id: record(3),
            fields: fields(serde_json::json!({"title": "Ideas", "body": "a long body of text"})),
        },
    ];
    for effect in effects {
        let made = doc.transact(|tx| effect.apply(tx));
        assert!(made.is_ok(), "the base document builds");
    }
    doc
});

/// The P2P join protocol (`adiuva/join/1`): its messages, read as the inviter reads a join
/// request and the joiner an acceptance (a length, then JSON), and join tickets as text.
pub fn join(data: &[u8]) {
    use adiuva_p2p::join::{MAX_ACCEPTANCE, MAX_REQUEST, read_message};
    let peer = adiuva_model::DeviceId([3; 32]);
    let request = ready(read_message::<adiuva_engine::JoinRequest>(data, peer, MAX_REQUEST));
    assert!(request.is_some(), "a message in memory is read at once");
    let acceptance = ready(read_message::<adiuva_engine::JoinAcceptance>(data, peer, MAX_ACCEPTANCE));
    assert!(acceptance.is_some(), "a message in memory is read at once");
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ticket) = text.parse::<adiuva_p2p::JoinTicket>()
    {
        assert_eq!(ticket.to_string().parse::<adiuva_p2p::JoinTicket>().ok(), Some(ticket));
    }
}

/// The workspace the relay targets open units and restore points of.
const WORKSPACE_ID: [u8; 16] = [1; 16];

/// The workspace key of epoch 1, known to the relay targets.
fn workspace_key() -> WorkspaceKey {
    WorkspaceKey { epoch: 1, key: SecretKey::from_bytes([7; 32]) }
}

/// The device that seals units and restore points, and receives key envelopes.
static DEVICE: LazyLock<DeviceIdentity> = LazyLock::new(|| fuzzing::identity([3; 32], [4; 32]));

/// What a relay holds of a workspace, as a device pulls it: relay units (each document's signed
/// changes) and restore points' blobs (each document's signed snapshot), opened with a key the
/// target knows; then — the first byte picking a unit or a restore point — the rest sealed as
/// such a blob's payload by the real sealer and opened, to reach the payload decoders behind
/// the AEAD.
pub fn relay_unit(data: &[u8]) {
    use adiuva_engine::Error;
    let keys = [workspace_key()];
    if let Ok(unit) = fuzzing::open_relay_unit(&WORKSPACE_ID, &keys, data) {
        unit_parts(&unit.parts);
    }
    if let Ok(blob) = fuzzing::open_restore_point_blob(&WORKSPACE_ID, &keys, data) {
        restore_point_parts(&blob.parts);
    }
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    // A blob sealed with the key opens, or is refused for its payload only.
    let payload_refusal = |error: &Error| {
        assert!(
            !matches!(error, Error::UnitCorrupt { .. } | Error::UnitForeign { .. } | Error::UnitEpochUnknown { .. }),
            "a sealed blob authenticates: {error}"
        );
    };
    if selector % 2 == 0 {
        let Ok(sealed) = fuzzing::seal_relay_unit(&WORKSPACE_ID, &keys[0], &DEVICE, payload) else { return };
        match fuzzing::open_relay_unit(&WORKSPACE_ID, &keys, &sealed) {
            Ok(unit) => {
                assert_eq!(unit.sender, DEVICE.device_id());
                unit_parts(&unit.parts);
            }
            Err(error) => payload_refusal(&error),
        }
    } else {
        let Ok(sealed) = fuzzing::seal_restore_point_blob(&WORKSPACE_ID, &keys[0], &DEVICE, payload) else { return };
        match fuzzing::open_restore_point_blob(&WORKSPACE_ID, &keys, &sealed) {
            Ok(blob) => {
                assert_eq!(blob.signer, DEVICE.device_id());
                restore_point_parts(&blob.parts);
            }
            Err(error) => payload_refusal(&error),
        }
    }
}

/// A unit's parts decoded as importing them decodes them: signed changes, Automerge changes.
fn unit_parts(parts: &[(String, Vec<u8>)]) {
    for (_, signed) in parts {
        if let Ok(Decoded::Attested(unit)) = SignedChanges::decode(signed) {
            panics_caught_are_not_crashes();
            for change in unit.changes {
                let _ = untrusted::parse_change(change);
            }
        }
    }
}

/// A restore point's parts decoded as applying it decodes them: signed snapshots, their
/// documents and attestations.
fn restore_point_parts(parts: &[(String, Vec<u8>)]) {
    for (_, bytes) in parts {
        signed_snapshot(bytes);
    }
}

/// The keys a device takes from the relay: key envelopes (an epoch's key sealed to the device,
/// opened as the device opens them, and — sealed to it by the real sealer — the plaintext's
/// decoder behind the box), and the wrapped recovery record, opened with a recovery secret the
/// target knows (the phrase's Argon2id is skipped: it costs a fraction of a second per input),
/// and the epochs' decoder behind its AEAD.
pub fn key_envelope(data: &[u8]) {
    const EPOCH: u32 = 2;
    let box_key = DEVICE.box_public_key();
    if let Some(key) = fuzzing::open_key_envelope(&DEVICE, &WORKSPACE_ID, EPOCH, data) {
        let again = fuzzing::seal_key_envelope(&WORKSPACE_ID, &key, &box_key)
            .ok()
            .and_then(|hex| adiuva_model::hex::decode(&hex))
            .and_then(|sealed| fuzzing::open_key_envelope(&DEVICE, &WORKSPACE_ID, EPOCH, &sealed));
        assert!(again.is_some_and(|again| same_keys(&[again], &[key])), "a key envelope re-seals to the same key");
    }
    if let Ok(sealed) = adiuva_engine::identity::seal_to(&box_key, data) {
        let _ = fuzzing::open_key_envelope(&DEVICE, &WORKSPACE_ID, EPOCH, &sealed);
    }
    let recovery = |salt| Ok(RecoveryKeys::from_secret(SecretKey::from_bytes([9; 32]), salt));
    if let Ok(unwrapped) = adiuva_engine::recovery::unwrap_with(data, recovery) {
        let rewrapped = unwrapped.keys.wrap(unwrapped.workspace_id, &unwrapped.epochs).ok();
        let again = rewrapped.and_then(|wrapped| adiuva_engine::recovery::unwrap_with(&wrapped, recovery).ok());
        assert!(again.is_some_and(|again| same_keys(&again.epochs, &unwrapped.epochs)), "a record re-wraps");
    }
    if let Ok(epochs) = adiuva_engine::recovery::decode_epochs(data) {
        let keys = RecoveryKeys::from_secret(SecretKey::from_bytes([9; 32]), [5; 16]);
        let wrapped = keys.wrap(ulid::Ulid::from_bytes(WORKSPACE_ID), &epochs).ok();
        let again = wrapped.and_then(|wrapped| adiuva_engine::recovery::unwrap_with(&wrapped, recovery).ok());
        assert!(again.is_some_and(|again| same_keys(&again.epochs, &epochs)), "epochs wrap and unwrap");
    }
}

/// Whether `a` and `b` are the same epochs with the same keys (a key shows itself only by what
/// it opens).
fn same_keys(a: &[WorkspaceKey], b: &[WorkspaceKey]) -> bool {
    use adiuva_engine::crypto::{open, seal};
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.epoch == b.epoch && seal(&a.key, b"", b"same?").is_ok_and(|sealed| open(&b.key, b"", &sealed).is_ok())
        })
}

/// The statuses a relay answer's first byte picks from.
const STATUSES: [u16; 10] = [200, 201, 204, 400, 401, 404, 409, 429, 500, 503];

/// What the relay answers, as the sync client decodes it: the first byte picks a status, the
/// rest is the body, read as every route's answer (refusals, sessions, the account, blob
/// entries, pages of the sequence and their checks, join requests, restore points, the
/// recovery record); and, as text, the live socket's heads and relay tickets.
pub fn relay_answer(data: &[u8]) {
    use adiuva_sync::answers::{Answer, RecoveryView, check_page, decode_head, expect, json};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(selector) % STATUSES.len()];
    let answer = || Answer { status, retry_after: Some(u64::from(selector)), body: body.to_vec() };
    let _ = expect(answer(), &[204], "devices");
    let _ = json::<adiuva_sync::Session>(answer(), &[200, 201], "auth");
    let _ = json::<adiuva_sync::AccountView>(answer(), &[200], "me");
    let _ = json::<adiuva_sync::BlobEntry>(answer(), &[200, 201], "blobs");
    let _ = json::<Vec<adiuva_model::api::BackupMetadata>>(answer(), &[200], "backup/history");
    let _ = json::<adiuva_model::api::BackupMetadata>(answer(), &[200, 201], "backup");
    if let Ok(record) = json::<RecoveryView>(answer(), &[200], "recovery") {
        let _ = adiuva_model::hex::decode(&record.wrapped_key);
    }
    if let Ok(joins) = json::<Vec<adiuva_sync::JoinView>>(answer(), &[200], "joins") {
        for join in joins {
            let payload = adiuva_model::hex::decode(&join.payload);
            let _ = payload.map(|bytes| serde_json::from_slice::<adiuva_engine::JoinRequest>(&bytes));
        }
    }
    if let Ok(page) = json::<adiuva_sync::ChangesPage>(answer(), &[200], "changes") {
        // From the cursor the page claims to follow, and from the start.
        let after = page.changes.first().map_or(page.head, |entry| entry.seq.saturating_sub(1));
        let _ = check_page(after, page.clone());
        let _ = check_page(0, page);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = decode_head(text);
        let _ = adiuva_sync::RelayTicket::decode(text);
    }
}

/// The relay's request bodies and queries, through the extractors its routes use
/// (`adiuva-http-api`), the checks and decoders of their fields (names, hex keys, proofs,
/// signatures, sizes), and the path segments that are ids; a refusal must make a response.
pub fn relay_request(data: &[u8]) {
    use adiuva_server::{auth, backup, blobs, workspaces};
    if let Some(credentials) = body::<auth::Credentials>(data) {
        let _ = auth::normalize_email(&credentials.email);
        let _ = auth::check_password(&credentials.password);
    }
    let _ = body::<auth::RefreshRequest>(data);
    let _ = body::<backup::NewBackup>(data);
    if let Some(new) = body::<workspaces::NewWorkspace>(data) {
        let _ = workspaces::check_name(&new.id, "workspace id");
    }
    if let Some(new) = body::<workspaces::NewRecovery>(data) {
        let _ = new.decode();
    }
    if let Some(proof) = body::<workspaces::RecoveryProof>(data) {
        let _ = proof.signature();
    }
    if let Some(new) = body::<workspaces::NewInvite>(data) {
        let _ = workspaces::check_name(&new.invite_id, "invite id");
        let _ = new.proof_hash();
    }
    if let Some(request) = body::<workspaces::JoinRequest>(data) {
        let _ = request.decode();
    }
    let _ = query::<blobs::ChangesQuery>(data);
    let _ = query::<backup::BackupQuery>(data);
    // Path segments: device ids and blob ids.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = workspaces::parse_device(text);
        if let Some(id) = adiuva_server::storage::BlobId::parse(text) {
            assert_eq!(id.to_string(), text, "a blob id has one form");
        }
    }
}

/// The daemon's request bodies and queries, through the extractors its routes use
/// (`adiuva-http-api`): its own types (tasks, notes, devices, language models, peers, search,
/// the event stream's and an import's queries) and the model's wire types it shares with the UI
/// and the relay, whose decoded values must encode and decode again; the event stream's cursor
/// (a query or `Last-Event-ID`), which reads back as it prints; and `daemon.json`, the file a
/// daemon announces itself in.
pub fn daemon_request(data: &[u8]) {
    use adiuva::fuzzing as daemon;
    use adiuva_model::{api, record};
    round_trip(body::<daemon::NewTask>(data));
    round_trip(body::<daemon::TaskPatch>(data));
    round_trip(body::<daemon::NewNote>(data));
    round_trip(body::<daemon::DeviceRename>(data));
    round_trip(body::<daemon::NewProvider>(data));
    round_trip(body::<daemon::Chain>(data));
    round_trip(body::<daemon::AskRequest>(data));
    round_trip(body::<daemon::Listening>(data));
    round_trip(body::<daemon::LiveRequest>(data));
    let _ = query::<daemon::TaskQuery>(data);
    let _ = query::<daemon::LogQuery>(data);
    let _ = query::<daemon::SearchRequest>(data);
    let _ = query::<daemon::FollowQuery>(data);
    let _ = query::<daemon::ImportQuery>(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cursor) = text.parse::<adiuva_engine::Cursor>()
    {
        assert_eq!(cursor.to_string().parse::<adiuva_engine::Cursor>().ok(), Some(cursor), "a cursor reads back");
    }
    round_trip(serde_json::from_slice::<daemon::DaemonFile>(data).ok());
    round_trip(body::<api::ChatRequest>(data));
    round_trip(body::<api::ChatResponse>(data));
    round_trip(body::<api::ExecutionPlan>(data));
    round_trip(body::<api::PermissionRequest>(data));
    round_trip(body::<api::PluginManifest>(data));
    round_trip(body::<api::PermissionGrant>(data));
    round_trip(body::<record::Task>(data));
    round_trip(body::<record::CalendarEvent>(data));
    round_trip(body::<record::Note>(data));
    round_trip(body::<record::MemoryFact>(data));
}

/// A file to import (JSON Lines of tasks and notes, from anywhere), read and checked line by
/// line as `adiuva import` and `POST /v1/import` read it before committing anything.
pub fn import(data: &[u8]) {
    let _ = adiuva::fuzzing::parse_import("fuzz.jsonl", data);
}

/// How long the `relay_token` target's grants last: long, so that the grants among its seeds
/// stay unexpired.
const GRANT_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The relay's token secret, known to the `relay_token` target.
static TOKENS: LazyLock<adiuva_server::auth::Tokens> =
    LazyLock::new(|| adiuva_server::auth::Tokens::from_secret(&[11; 32], Duration::from_secs(15 * 60), GRANT_LIFETIME));

/// The caller (account, device, session) the `relay_token` target's seeds are issued to.
fn token_caller() -> adiuva_server::auth::Caller {
    adiuva_server::auth::Caller {
        account: ulid::Ulid::from_bytes([2; 16]),
        email: "person@example.com".into(),
        device: adiuva_model::DeviceId([3; 32]),
        tier: adiuva_model::api::BillingTier::Free,
        seats: 1,
        family: ulid::Ulid::from_bytes([4; 16]),
    }
}

/// The workspace the `relay_token` target's grants read.
const GRANTED_WORKSPACE: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// What the relay reads of a request's credentials: the read grant header through its
/// extractor, checked for the caller's workspace, and an access token (what follows `Bearer `)
/// checked and read for its caller, under a token secret the target knows; a refusal must make
/// a response. A grant issued for a workspace named by the input reads that workspace only.
pub fn relay_token(data: &[u8]) {
    use adiuva_server::grants::{GrantHeader, READ_GRANT_HEADER};
    let caller = token_caller();
    let refused = |outcome: Result<(), adiuva_http_api::ApiError>| {
        if let Err(refusal) = outcome {
            drop(refusal.into_response());
        }
    };
    if let Ok(request) = axum::http::Request::builder().header(READ_GRANT_HEADER, data).body(()) {
        let (mut parts, ()) = request.into_parts();
        match ready(GrantHeader::from_request_parts(&mut parts, &())) {
            Some(Ok(GrantHeader(Some(grant)))) => refused(TOKENS.check_grant(&grant, &caller, GRANTED_WORKSPACE)),
            Some(Err(refusal)) => drop(refusal.into_response()),
            _ => {}
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    refused(TOKENS.caller(text).map(drop));
    if let Ok(issued) = TOKENS.grant(&caller, text) {
        assert!(TOKENS.check_grant(&issued.grant, &caller, text).is_ok(), "a grant reads its workspace");
        let other = if text == GRANTED_WORKSPACE { "another" } else { GRANTED_WORKSPACE };
        assert!(TOKENS.check_grant(&issued.grant, &caller, other).is_err(), "a grant reads its workspace only");
    }
}

/// What a language model provider answers, as a call reads it: the first byte picks a status,
/// the second how the body arrives in parts; the body is read as a whole answer, a model list,
/// embeddings, the error of a refused call (and, as text, a `Retry-After` value), and as an
/// event stream, whose pieces do not depend on where the connection cut it; the pieces are put
/// together as the router does.
pub fn llm_answer(data: &[u8]) {
    use adiuva_llm::fuzzing;
    let [selector, cut, body @ ..] = data else { return };
    let status = STATUSES[usize::from(*selector) % STATUSES.len()];
    if let Ok(pieces) = fuzzing::answer(body) {
        fuzzing::assemble(pieces);
    }
    let _ = fuzzing::models(body);
    let _ = fuzzing::embeddings(body, usize::from(*selector % 4));
    let retry_after = std::str::from_utf8(body).unwrap_or_default();
    let _ = fuzzing::refusal(status, retry_after, body);
    let _ = fuzzing::refusal(429, retry_after, b"");
    let whole = ready(fuzzing::stream(vec![body.to_vec()]));
    let parts = body.chunks(usize::from(*cut).max(1)).map(<[u8]>::to_vec).collect();
    let cut = ready(fuzzing::stream(parts));
    let text = |read: Option<adiuva_llm::Result<Vec<fuzzing::Piece>>>| read.map(|read| read.map_err(|e| e.to_string()));
    let (whole, cut) = (text(whole), text(cut));
    assert_eq!(whole, cut, "a stream's pieces do not depend on its parts");
    if let Some(Ok(pieces)) = whole {
        fuzzing::assemble(pieces);
    }
}

/// What decodes encodes, and that decodes again.
fn round_trip<T: Serialize + DeserializeOwned>(value: Option<T>) {
    if let Some(value) = value {
        let encoded = serde_json::to_vec(&value).ok();
        assert!(encoded.is_some_and(|bytes| serde_json::from_slice::<T>(&bytes).is_ok()), "a decoded body re-encodes");
    }
}

/// `data` as a JSON request body through `adiuva_http_api::Body`; a refusal becomes its response.
fn body<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    let request = axum::http::Request::builder()
        .method("POST")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(data.to_vec()))
        .ok()?;
    match ready(adiuva_http_api::Body::<T>::from_request(request, &()))? {
        Ok(adiuva_http_api::Body(value)) => Some(value),
        Err(refusal) => {
            drop(refusal.into_response());
            None
        }
    }
}

/// `data` as a query string through `adiuva_http_api::Params`; a refusal becomes its response.
fn query<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(data).ok()?;
    let request = axum::http::Request::builder().uri(format!("/?{text}")).body(()).ok()?;
    let (mut parts, ()) = request.into_parts();
    match ready(adiuva_http_api::Params::<T>::from_request_parts(&mut parts, &()))? {
        Ok(adiuva_http_api::Params(value)) => Some(value),
        Err(refusal) => {
            drop(refusal.into_response());
            None
        }
    }
}

/// The output of a future that needs no waiting (an extractor over a body held in memory).
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    // Tests fail loudly: unwrapping is how they assert.
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    /// Every input of every target's corpora and every crash fixed runs through its target
    /// without a panic.
    #[test]
    fn every_corpus_input_and_kept_crash_runs_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut ran = 0;
        for (name, target) in super::TARGETS {
            for dir in ["seeds", "corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let input = std::fs::read(&path).unwrap();
                    let outcome = std::panic::catch_unwind(|| target(&input));
                    assert!(outcome.is_ok(), "{name} panics on {}", path.display());
                    ran += 1;
                }
            }
        }
        assert!(ran >= super::TARGETS.len(), "every target has at least one input ({ran} ran)");
    }
}
