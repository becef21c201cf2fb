//! Devices and authorship across real workspaces on disk: every change keeps its author's
//! attestation through compaction and relaying; what a device receives is checked against the
//! signed device list, and a forged, stripped, mismatched, unknown or removed author is refused
//! with its own code and nothing applied; removal rotates the key so the removed device cannot
//! read later bundles; invitations are single-use; recovery restores onto an empty directory.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_engine::authorship::{Attestation, AttestationPlace, ChangeNames, Decoded, SignedChanges, SignedSnapshot};
use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::workspace::{PeerMessage, PeerStates};
use adiuva_engine::{EventFilter, KeyProtection, ROOT_DOCUMENT, Workspace};
use adiuva_model::envelope::ENVELOPE_VERSION;
use adiuva_model::{Actor, Collection, Envelope, ErrorCode, EventId, EventKind};
use automerge::transaction::{CommitOptions, Transactable};
use common::*;
use zeroize::Zeroizing;

fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

fn signed(bytes: &[u8]) -> SignedChanges {
    match SignedChanges::decode(bytes).unwrap() {
        Decoded::Attested(signed) => signed,
        Decoded::Legacy => panic!("an export is always attested"),
    }
}

fn devices_of(workspace: &mut Workspace) -> Vec<adiuva_model::DeviceId> {
    workspace.events(&EventFilter::default()).unwrap().iter().map(|e| e.envelope.device).collect()
}

/// A change authored by `identity` (its actor, its envelope), with no dependencies.
fn foreign_change(identity: &DeviceIdentity) -> automerge::Change {
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        id: EventId::new(),
        kind: EventKind::from_static("task.created"),
        actor: Actor::User,
        device: identity.device_id(),
        time: chrono::Utc::now(),
        correlation: None,
        causation: None,
        subject: None,
    };
    let mut doc = automerge::AutoCommit::new().with_actor(automerge::ActorId::from(&identity.device_id().0[..16]));
    doc.put(automerge::ROOT, ulid::Ulid::new().to_string(), "x").unwrap();
    doc.commit_with(CommitOptions::default().with_message(envelope.encode().unwrap()));
    doc.get_changes(&[]).into_iter().next().unwrap().clone()
}

fn attest(workspace: &Workspace, identity: &DeviceIdentity, document: &str, change: &automerge::Change) -> Attestation {
    let workspace_id = workspace.workspace_id().to_bytes();
    Attestation::sign(identity, AttestationPlace { workspace_id: &workspace_id, document }, 1, vec![change.hash()])
}

fn unit(attestations: Vec<Attestation>, change: &automerge::Change) -> Vec<u8> {
    SignedChanges { attestations, changes: vec![change.raw_bytes().to_vec()] }.encode().unwrap()
}

#[test]
fn authorship_survives_compaction_export_and_relaying() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    let mut c = join(&mut a, dirs[2].path(), "c");
    let a_id = a.device_id();
    add_task(&mut a, "by a", "");
    add_task(&mut a, "by a, in the tail", "");
    a.compact().unwrap();
    add_task(&mut a, "after compaction", "");
    // b receives a's changes (from a's snapshot and tail), compacts, and relays them to c.
    assert_eq!(sync_document(&mut a, &mut b, TASKS).applied, 3);
    b.compact().unwrap();
    sync_document(&mut a, &mut b, ROOT_DOCUMENT);
    sync_document(&mut b, &mut c, ROOT_DOCUMENT);
    let relayed = b.export_changes(TASKS, &[]).unwrap();
    // Every change still carries a's own attestation, and it verifies.
    let unit = signed(&relayed);
    let workspace_id = a.workspace_id().to_bytes();
    assert!(!unit.attestations.is_empty());
    for attestation in &unit.attestations {
        assert_eq!(attestation.signer, a_id, "b never re-signs a's changes");
        assert!(attestation.verify(AttestationPlace { workspace_id: &workspace_id, document: TASKS }));
    }
    assert_eq!(c.import_changes(TASKS, &relayed).unwrap().applied, 3);
    drop(c);
    let mut c = open(dirs[2].path());
    assert!(devices_of(&mut c).iter().filter(|_| true).any(|d| *d == a_id));
    assert_eq!(c.list(Collection::Tasks).unwrap().len(), 3);
    // After c compacts too, what it exports still proves a wrote them.
    c.compact().unwrap();
    for attestation in signed(&c.export_changes(TASKS, &[]).unwrap()).attestations {
        assert_eq!(attestation.signer, a_id);
    }
    assert_eq!(c.heads(TASKS).unwrap(), a.heads(TASKS).unwrap());
    // Every change c holds, relayed or not, checks out as an import would check it.
    for document in [ROOT_DOCUMENT, TASKS] {
        let faults = c.verify_authorship(document).unwrap();
        assert!(faults.is_empty(), "{document}: {faults:?}");
    }
}

#[test]
fn a_forged_stripped_or_mismatched_attestation_is_refused_with_its_code_and_nothing_applied() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    add_task(&mut a, "real", "");
    let genuine = a.export_changes(TASKS, &[]).unwrap();

    let mut forged = signed(&genuine);
    forged.attestations[0].signature[5] ^= 1;
    let mut stripped = signed(&genuine);
    stripped.attestations.clear();
    // Another device's valid attestation over a's change: signer and envelope disagree.
    let impostor = DeviceIdentity::generate().unwrap();
    let mut resigned = signed(&genuine);
    let hashes = resigned.attestations[0].hashes.clone();
    let workspace_id = a.workspace_id().to_bytes();
    resigned.attestations[0] =
        Attestation::sign(&impostor, AttestationPlace { workspace_id: &workspace_id, document: TASKS }, 1, hashes);
    // A change whose envelope and attestation are the impostor's but whose actor is a's.
    let mut change = foreign_change(&impostor);
    let mut doc = automerge::AutoCommit::new().with_actor(automerge::ActorId::from(&a.device_id().0[..16]));
    doc.put(automerge::ROOT, "k", "v").unwrap();
    doc.commit_with(CommitOptions::default().with_message(change.message().unwrap().to_owned()));
    change = doc.get_changes(&[]).into_iter().next().unwrap().clone();
    let wrong_actor = unit(vec![attest(&b, &impostor, TASKS, &change)], &change);
    // A consistent change by a device never added.
    let stranger = foreign_change(&impostor);
    let unknown = unit(vec![attest(&b, &impostor, TASKS, &stranger)], &stranger);
    // a's attestation moved to another document.
    let moved = genuine.clone();

    let cases: [(&str, &str, Vec<u8>, ErrorCode); 6] = [
        ("forged", TASKS, forged.encode().unwrap(), ErrorCode::ChangeBadSignature),
        ("stripped", TASKS, stripped.encode().unwrap(), ErrorCode::ChangeUnsigned),
        ("re-signed", TASKS, resigned.encode().unwrap(), ErrorCode::ChangeSignerMismatch),
        ("wrong actor", TASKS, wrong_actor, ErrorCode::ChangeSignerMismatch),
        ("unknown device", TASKS, unknown, ErrorCode::DeviceUnknown),
        ("other document", "calendar", moved, ErrorCode::ChangeBadSignature),
    ];
    for (name, document, bytes, code) in cases {
        let error = b.import_changes(document, &bytes).unwrap_err();
        assert_eq!(error.code(), code, "{name}: {error}");
        assert!(b.list(Collection::Tasks).unwrap().is_empty(), "{name}: nothing applied");
        assert!(b.list(Collection::Calendar).unwrap().is_empty(), "{name}: nothing applied");
    }
    assert_eq!(b.status().unwrap().pending_changes, 0);
    drop(b);
    let mut b = open(dirs[1].path());
    assert!(b.list(Collection::Tasks).unwrap().is_empty());
    assert_eq!(b.import_changes(TASKS, &genuine).unwrap().applied, 1, "the genuine unit still applies");
}

#[test]
fn a_removed_device_is_refused_beyond_what_its_removal_accepted_and_reads_nothing_later() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    let mut c = join(&mut a, dirs[2].path(), "c");
    add_task(&mut b, "before the removal", "");
    sync_document(&mut b, &mut a, TASKS);
    let b_heads = b.heads(TASKS).unwrap();
    let epoch = a.remove_device(b.device_id()).unwrap();
    assert_eq!(epoch, 2);
    assert!(a.devices().unwrap().iter().any(|d| d.id == b.device_id() && d.is_removed()));
    // The log says why the key rotated.
    let events = a.events(&EventFilter::default()).unwrap();
    let removed = events.iter().find(|e| e.envelope.kind.as_str() == "device.removed").unwrap();
    let rotated = events.iter().find(|e| e.envelope.kind.as_str() == "key.rotated").unwrap();
    assert_eq!(rotated.envelope.causation, Some(removed.envelope.id));
    // b, not knowing, writes on.
    add_task(&mut b, "after the removal", "");
    let later = b.export_changes(TASKS, &b_heads).unwrap();
    let imported = a.import_changes(TASKS, &later).unwrap();
    assert_eq!(imported.applied, 0);
    assert_eq!(imported.refused.len(), 1);
    assert_eq!(imported.refused[0].code(), ErrorCode::DeviceRemoved);
    assert_eq!(a.list(Collection::Tasks).unwrap().len(), 1);

    // c was offline: it learns of the removal and the new epoch from the root, then refuses
    // the same change and accepts the earlier one.
    assert_eq!(c.status().unwrap().key_epoch, 1);
    sync_document(&mut a, &mut c, ROOT_DOCUMENT);
    assert_eq!(c.status().unwrap().key_epoch, 2);
    assert_eq!(sync_document(&mut b, &mut c, TASKS).refused.len(), 1);
    assert_eq!(c.list(Collection::Tasks).unwrap().len(), 1);

    // Written after the removal, sealed under epoch 2: b cannot open it, even given the bytes.
    add_task(&mut a, "secret after the removal", "");
    let bundle = a.export_bundle(TASKS, &[]).unwrap();
    assert!(!contains(&bundle, b"secret after the removal"));
    assert_eq!(b.import_bundle(TASKS, &bundle).unwrap_err().code(), ErrorCode::UnknownEpoch);
    assert_eq!(b.status().unwrap().key_epoch, 1);
    // c, which remains, reads it; so does anything under epoch 1 stay readable to it.
    assert_eq!(c.import_bundle(TASKS, &bundle).unwrap().applied, 1);
    assert_eq!(c.list(Collection::Tasks).unwrap().len(), 2);
    // c's own writes from now on are under epoch 2 and a accepts them.
    add_task(&mut c, "by c under epoch 2", "");
    assert_eq!(a.import_bundle(TASKS, &c.export_bundle(TASKS, &[]).unwrap()).unwrap().applied, 1);
    drop(a);
    assert_eq!(open(dirs[0].path()).status().unwrap().key_epoch, 2, "the new epoch is durable");
}

#[test]
fn a_device_that_held_a_removed_devices_change_amends_the_removal_and_all_converge() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    let mut c = join(&mut a, dirs[2].path(), "c");
    sync_document(&mut a, &mut b, ROOT_DOCUMENT);
    sync_document(&mut a, &mut c, ROOT_DOCUMENT);
    // a removes b; b meanwhile writes, and c takes b's change before it hears of the removal.
    a.remove_device(b.device_id()).unwrap();
    add_task(&mut b, "written while being removed", "");
    sync_document(&mut b, &mut c, TASKS);
    sync_document(&mut a, &mut c, ROOT_DOCUMENT);
    // c held more of b than the removal accepted: it amended the removal. a takes the
    // amendment and then b's change.
    let refused = sync_document(&mut b, &mut a, TASKS);
    assert_eq!(refused.refused.len(), 1);
    sync_document(&mut c, &mut a, ROOT_DOCUMENT);
    assert_eq!(a.status().unwrap().pending_changes, 0, "the kept-aside change applied");
    assert_eq!(a.heads(TASKS).unwrap(), c.heads(TASKS).unwrap());
    assert_eq!(a.list(Collection::Tasks).unwrap(), c.list(Collection::Tasks).unwrap());
}

#[test]
fn changes_that_arrive_before_their_dependencies_wait_durably() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    add_task(&mut a, "first", "");
    let after_first = a.heads(TASKS).unwrap();
    add_task(&mut a, "second", "");
    let second_only = a.export_changes(TASKS, &after_first).unwrap();
    let imported = b.import_changes(TASKS, &second_only).unwrap();
    assert_eq!((imported.applied, imported.pending), (0, 1));
    assert_eq!(b.status().unwrap().pending_changes, 1);
    drop(b);
    let mut b = open(dirs[1].path());
    assert_eq!(b.status().unwrap().pending_changes, 1, "the pending change survived the reopen");
    assert!(b.list(Collection::Tasks).unwrap().is_empty());
    // What a peer syncing with the Automerge protocol sends beside the change it lacked.
    let first = a.export_changes_by_hash(TASKS, &after_first).unwrap();
    assert_eq!(signed(&first).changes.len(), 1);
    let imported = b.import_changes(TASKS, &first).unwrap();
    assert_eq!((imported.applied, imported.pending), (2, 0));
    assert_eq!(b.status().unwrap().pending_changes, 0);
    assert_eq!(b.heads(TASKS).unwrap(), a.heads(TASKS).unwrap());
}

/// A change waiting in the pending area for a dependency the peer took for held (a false
/// positive of its Bloom filter, about one in a hundred): Automerge alone would ask for that
/// dependency, since such a change waits in its own queue; the session asks for it too, and
/// settles, where it used to send the same empty message until the round limit.
#[test]
fn a_change_waiting_for_a_dependency_the_peer_took_for_held_makes_the_session_ask_for_it() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    add_task(&mut a, "shared", "");
    sync_document(&mut a, &mut b, ROOT_DOCUMENT);
    sync_document(&mut a, &mut b, TASKS);
    add_task(&mut a, "depended on", "");
    let depended_on = a.heads(TASKS).unwrap();
    add_task(&mut a, "waiting", "");
    let waiting = a.export_changes(TASKS, &depended_on).unwrap();
    assert_eq!(b.import_changes(TASKS, &waiting).unwrap().pending, 1);

    // Each of b's messages has its filter claim the change b lacks, as a false positive does
    // for every filter of the same changes: a never sends it unless asked for it by hash.
    let held: Vec<_> = (signed(&b.export_changes(TASKS, &[]).unwrap()).changes.into_iter())
        .map(|bytes| automerge::Change::from_bytes(bytes).unwrap().hash())
        .chain(depended_on)
        .collect();
    let claiming_held = |message: PeerMessage| {
        let mut sync = automerge::sync::Message::decode(&message.sync).unwrap();
        let bloom = automerge::sync::BloomFilter::from_hashes(held.iter());
        sync.have = vec![automerge::sync::Have { last_sync: Vec::new(), bloom }];
        PeerMessage { sync: sync.encode(), ..message }
    };
    let (mut a_states, mut b_states) = (PeerStates::default(), PeerStates::default());
    let mut from_b = b.peer_message(&mut b_states, TASKS).unwrap().map(claiming_held);
    let mut rounds = 0;
    while let Some(message) = from_b.take()
        && rounds < 8
    {
        rounds += 1;
        a.receive_peer_message(&mut a_states, TASKS, &message).unwrap();
        let Some(from_a) = a.peer_message(&mut a_states, TASKS).unwrap() else { break };
        b.receive_peer_message(&mut b_states, TASKS, &from_a).unwrap();
        from_b = b.peer_message(&mut b_states, TASKS).unwrap().map(claiming_held);
    }
    assert!(rounds < 8, "the session did not settle");
    assert_eq!(b.heads(TASKS).unwrap(), a.heads(TASKS).unwrap());
    assert_eq!(b.status().unwrap().pending_changes, 0);
}

#[test]
fn an_invitation_is_single_use_expires_and_cannot_be_forged() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let ticket = a.invite(chrono::Duration::minutes(5)).unwrap();
    let text = ticket.encode();
    assert_eq!(adiuva_engine::Ticket::decode(&text).unwrap().invite_id, ticket.invite_id);
    assert_eq!(adiuva_engine::Ticket::decode("adiuva-invite-1-00").err().unwrap().code(), ErrorCode::TicketInvalid);

    // A request altered on the way is refused.
    let (_, mut altered) = Workspace::request_join(&text, "laptop").unwrap();
    altered.name = "mallory".into();
    assert_eq!(a.accept_join(&altered).unwrap_err().code(), ErrorCode::InviteUnauthentic);
    // The genuine one is accepted once.
    let (pending, request) = Workspace::request_join(&text, "laptop").unwrap();
    let acceptance = a.accept_join(&request).unwrap();
    assert_eq!(a.accept_join(&request).unwrap_err().code(), ErrorCode::InviteUnknown);
    // An acceptance altered on the way is refused, and the directory stays empty.
    let mut forged = acceptance.clone();
    forged.root.replace_range(0..2, "00");
    let (other_pending, _) = Workspace::request_join(&text, "other").unwrap();
    let error = other_pending.complete(dirs[2].path(), protection(), &forged).err().unwrap();
    assert_eq!(error.code(), ErrorCode::InviteUnauthentic);
    let mut joined = pending.complete(dirs[1].path(), protection(), &acceptance).unwrap();
    assert_ne!(joined.device_id(), a.device_id());
    assert_eq!(joined.workspace_id(), a.workspace_id());
    let names: Vec<String> = joined.devices().unwrap().into_iter().map(|d| d.name).collect();
    assert!(names.contains(&"laptop".to_owned()), "{names:?}");
    drop(joined);
    assert_eq!(open(dirs[1].path()).devices().unwrap().len(), 2);

    // An expired ticket is refused by both sides.
    let expired = a.invite(chrono::Duration::seconds(-1)).unwrap();
    assert_eq!(Workspace::request_join(&expired.encode(), "late").err().unwrap().code(), ErrorCode::InviteExpired);
}

#[test]
fn devices_are_listed_renamed_and_a_device_cannot_remove_itself() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    let b_id = b.device_id();
    a.rename_device(b_id, "the laptop").unwrap();
    sync_document(&mut a, &mut b, ROOT_DOCUMENT);
    let listed = b.devices().unwrap();
    assert_eq!(listed.len(), 2);
    let me = listed.iter().find(|d| d.this_device).unwrap();
    assert_eq!((me.id, me.name.as_str()), (b_id, "the laptop"));
    assert_eq!(b.resolve_device(&b_id.to_string()[..8]).unwrap().id, b_id);
    assert_eq!(b.remove_device(b_id).unwrap_err().code(), ErrorCode::InputInvalid);
    assert_eq!(b.resolve_device("ffffffff").unwrap_err().code(), ErrorCode::DeviceNotFound);
}

#[test]
fn recovery_restores_onto_an_empty_directory_as_a_new_device() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let b = join(&mut a, dirs[1].path(), "b");
    add_task(&mut a, "kept through a restore", "");
    let phrase = a.create_recovery().unwrap();
    assert_eq!(phrase.split_whitespace().count(), 12);
    // A key rotation after the phrase was made: the wrapped key follows it.
    a.remove_device(b.device_id()).unwrap();
    add_task(&mut a, "under epoch 2", "");
    let wrapped = a.wrapped_recovery_key().unwrap().unwrap();
    let root = a.export_bundle(ROOT_DOCUMENT, &[]).unwrap();
    let tasks = a.export_bundle(TASKS, &[]).unwrap();

    let wrong = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    let error = Workspace::restore(dirs[2].path(), protection(), wrong, &wrapped, &root, "restored").err().unwrap();
    assert_eq!(error.code(), ErrorCode::RecoveryWrongPhrase);
    let error = Workspace::restore(dirs[2].path(), protection(), "not a phrase", &wrapped, &root, "x").err().unwrap();
    assert_eq!(error.code(), ErrorCode::RecoveryPhraseInvalid);
    let mut tampered = root.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let error = Workspace::restore(dirs[2].path(), protection(), &phrase, &wrapped, &tampered, "x").err().unwrap();
    assert_eq!(error.code(), ErrorCode::ChunkCorrupt);

    let mut restored = Workspace::restore(dirs[2].path(), protection(), &phrase, &wrapped, &root, "restored").unwrap();
    assert_eq!(restored.import_bundle(TASKS, &tasks).unwrap().applied, 2);
    assert_eq!(restored.workspace_id(), a.workspace_id());
    assert_ne!(restored.device_id(), a.device_id());
    assert_eq!(restored.status().unwrap().key_epoch, 2);
    assert_eq!(restored.heads(TASKS).unwrap(), a.heads(TASKS).unwrap());
    // It writes as itself, and a accepts its root (which adds it, by the recovery identity)
    // and its new changes.
    add_task(&mut restored, "after the restore", "");
    sync_document(&mut restored, &mut a, ROOT_DOCUMENT);
    assert_eq!(sync_document(&mut restored, &mut a, TASKS).applied, 1);
    assert_eq!(a.list(Collection::Tasks).unwrap().len(), 3);
    drop(restored);
    assert_eq!(open(dirs[2].path()).list(Collection::Tasks).unwrap().len(), 3);
}

mod concurrent {
    //! Devices adding, removing, writing and syncing in any order end with one verdict: every
    //! device still in the workspace holds the same device list and the same changes.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Write {
            device: usize,
        },
        Sync {
            from: usize,
            to: usize,
        },
        Remove {
            by: usize,
            target: usize,
        },
        /// `by` invites a new device (at most one per case: the fourth).
        Add {
            by: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..4usize).prop_map(|device| Step::Write { device }),
            5 => (0..4usize, 0..4usize).prop_map(|(from, to)| Step::Sync { from, to }),
            1 => (0..4usize, 0..4usize).prop_map(|(by, target)| Step::Remove { by, target }),
            1 => (0..3usize).prop_map(|by| Step::Add { by }),
        ]
    }

    /// One sync round: the root first, then the tasks. A device the receiver cannot place yet
    /// (added by a change it keeps aside) is refused now and sent again by a later round.
    fn sync(workspaces: &mut [Option<Workspace>], from: usize, to: usize) {
        if from == to {
            return;
        }
        for document in [ROOT_DOCUMENT, TASKS] {
            let Some(bundle) = workspaces[from].as_mut().map(|w| w.export_changes(document, &[]).unwrap()) else {
                return;
            };
            let Some(receiver) = workspaces[to].as_mut() else { return };
            match receiver.import_changes(document, &bundle) {
                Ok(_) => {}
                Err(error) if error.code() == ErrorCode::DeviceUnknown => {}
                Err(error) => panic!("sync {from} → {to}, {document}: {error}"),
            }
        }
    }

    /// Found by the property below: b adds x while c removes b. x holds b's add and amends the
    /// removal itself, but c never listed x and refuses that amendment; a, which holds the add
    /// and is listed everywhere, must still write the amendment c accepts.
    #[test]
    fn an_add_concurrent_with_its_authors_removal_converges() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut a = init(dirs[0].path());
        let b = join(&mut a, dirs[1].path(), "b");
        let c = join(&mut a, dirs[2].path(), "c");
        let mut workspaces = vec![Some(a), Some(b), Some(c), None];
        for (from, to) in [(0, 1), (0, 2)] {
            sync(&mut workspaces, from, to);
        }
        let b_id = workspaces[1].as_ref().unwrap().device_id();
        workspaces[3] = Some(join(workspaces[1].as_mut().unwrap(), dirs[3].path(), "x"));
        workspaces[2].as_mut().unwrap().remove_device(b_id).unwrap();
        sync(&mut workspaces, 2, 3);
        sync(&mut workspaces, 3, 0);
        exchange_everything(&mut workspaces);
        let x_id = workspaces[3].as_ref().unwrap().device_id();
        for i in [0, 2, 3] {
            let devices = workspaces[i].as_mut().unwrap().devices().unwrap();
            assert!(devices.iter().any(|d| d.id == x_id && !d.is_removed()), "device {i} lists x");
        }
        let heads = |w: &mut Workspace| (w.heads(ROOT_DOCUMENT).unwrap(), w.heads(TASKS).unwrap());
        let reference = heads(workspaces[0].as_mut().unwrap());
        for i in [2, 3] {
            assert_eq!(heads(workspaces[i].as_mut().unwrap()), reference, "device {i}");
        }
    }

    /// Everyone sends everyone everything, a few rounds, so amendments travel too.
    fn exchange_everything(workspaces: &mut [Option<Workspace>]) {
        for _ in 0..3 {
            for from in 0..workspaces.len() {
                for to in 0..workspaces.len() {
                    sync(workspaces, from, to);
                }
            }
        }
    }

    /// Found by the property below: 0 and 1 remove each other while 0 has added a fourth
    /// device that learns of 1's removal of 0 first. Each removal rotates the key to epoch 2,
    /// concurrently and with different keys.
    #[test]
    fn devices_removing_each_other_while_one_adds_converge() {
        let steps = [
            Step::Add { by: 0 },
            Step::Remove { by: 0, target: 1 },
            Step::Remove { by: 1, target: 0 },
            Step::Write { device: 0 },
            Step::Sync { from: 1, to: 3 },
        ];
        play(&steps).unwrap();
    }

    /// Found by the property below: 0 removes 1 while 2 removes 0. 1, which holds 0's removal
    /// of it, must still amend 2's removal of 0 with it, or 2 never learns that 1 is removed.
    #[test]
    fn a_removal_by_a_device_removed_meanwhile_reaches_everyone() {
        play(&[Step::Remove { by: 0, target: 1 }, Step::Remove { by: 2, target: 0 }]).unwrap();
    }

    /// Found by the property below: 2 removes 0 (a new epoch 2, not sealed to the fourth device
    /// 0 adds meanwhile); the fourth, having seen that rotation, removes 2. Its own rotation
    /// must take epoch 3, not overwrite epoch 2 and with it the sealing 2's changes are checked
    /// against.
    #[test]
    fn a_rotation_seen_but_not_given_keeps_its_epoch_number() {
        let steps = [
            Step::Remove { by: 2, target: 0 },
            Step::Add { by: 0 },
            Step::Sync { from: 2, to: 3 },
            Step::Write { device: 2 },
            Step::Remove { by: 3, target: 2 },
        ];
        play(&steps).unwrap();
    }

    /// Found by the property below: 0 removes 1 while 2 removes 0, and 0 adds a fourth device
    /// and removes it again (epoch 3, sealed to 2). 2 takes in epoch 3 only once 1's amendment
    /// accepts 0's changes; the fourth, which refuses that amendment (1 is removed there), must
    /// keep 2's changes under epoch 3 aside instead of refusing everything 2 sends.
    #[test]
    fn a_change_under_an_epoch_given_by_a_change_kept_aside_waits() {
        let steps = [
            Step::Remove { by: 0, target: 1 },
            Step::Remove { by: 2, target: 0 },
            Step::Add { by: 0 },
            Step::Sync { from: 2, to: 3 },
            Step::Remove { by: 0, target: 3 },
        ];
        play(&steps).unwrap();
    }

    /// Plays `steps`, then a full exchange: every device still in the workspace lists the same
    /// devices and holds the same heads.
    fn play(steps: &[Step]) -> Result<(), TestCaseError> {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut first = init(dirs[0].path());
        let second = join(&mut first, dirs[1].path(), "second");
        let third = join(&mut first, dirs[2].path(), "third");
        let mut workspaces = vec![Some(first), Some(second), Some(third), None];
        for step in steps {
            match *step {
                Step::Write { device } => {
                    if let Some(workspace) = workspaces[device].as_mut() {
                        add_task(workspace, "written", "");
                    }
                }
                Step::Sync { from, to } => sync(&mut workspaces, from, to),
                Step::Remove { by, target } => {
                    let Some(target_id) = workspaces[target].as_ref().map(|w| w.device_id()) else { continue };
                    if let Some(remover) = workspaces[by].as_mut() {
                        // Refused when it is itself, already removed, or unknown there.
                        let _ = remover.remove_device(target_id);
                    }
                }
                Step::Add { by } => {
                    if workspaces[3].is_none() {
                        let inviter = workspaces[by].as_mut().unwrap();
                        workspaces[3] = Some(join(inviter, dirs[3].path(), "fourth"));
                    }
                }
            }
        }
        exchange_everything(&mut workspaces);
        // The devices still in the workspace, as the first device that is still in it sees it.
        let lists: Vec<Option<Vec<(adiuva_model::DeviceId, bool)>>> = workspaces
            .iter_mut()
            .map(|w| w.as_mut().map(|w| w.devices().unwrap().iter().map(|d| (d.id, d.is_removed())).collect()))
            .collect();
        let ids: Vec<Option<adiuva_model::DeviceId>> =
            workspaces.iter().map(|w| w.as_ref().map(|w| w.device_id())).collect();
        let active =
            |list: &Vec<(adiuva_model::DeviceId, bool)>, id| list.iter().any(|(d, removed)| *d == id && !removed);
        let Some(reference) =
            (0..4).find(|&i| matches!((&lists[i], ids[i]), (Some(list), Some(id)) if active(list, id)))
        else {
            return Ok(()); // everyone removed everyone: nothing left to agree on
        };
        let reference_list = lists[reference].clone().unwrap();
        let heads = |w: &mut Workspace| (w.heads(ROOT_DOCUMENT).unwrap(), w.heads(TASKS).unwrap());
        let reference_heads = heads(workspaces[reference].as_mut().unwrap());
        for i in 0..4 {
            let (Some(id), Some(list)) = (ids[i], &lists[i]) else { continue };
            if !active(&reference_list, id) {
                continue;
            }
            prop_assert_eq!(list, &reference_list, "device {} sees another device list", i);
            prop_assert_eq!(heads(workspaces[i].as_mut().unwrap()), reference_heads.clone(), "device {}", i);
        }
        Ok(())
    }

    // Seeded, so that a run is reproducible and the regular test run stays deterministic. A
    // random run on 2026-12-04 found a case that does not converge, not fixed yet (and not new:
    // it fails the same way without the rule for devices removing each other): 1 adds a fourth
    // device while 2 removes 1 and 1 removes 0 (steps Add { by: 1 }, Remove { by: 2, target: 1
    // }, Remove { by: 1, target: 0 }, Write { device: 1 }). 0's amendment of 2's removal of 1
    // accepts 1's removal of 0, which removes 0 and so refuses the amendment where 1's removal
    // of 0 arrived first: the verdict depends on an order, not on the root's changes alone.
    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 12,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_adf0_2026_1203),
            ..ProptestConfig::default()
        })]

        // Adds, removals and writes in any order, then a full exchange: every device still in
        // the workspace lists the same devices and holds the same heads.
        #[test]
        fn concurrent_adds_removals_and_writes_converge(steps in proptest::collection::vec(step(), 1..28)) {
            play(&steps)?;
        }
    }
}

/// A sync message whose Bloom filters would make Automerge allocate without bound, divide by
/// zero or probe a thousand filters per change is refused as malformed, and answering it
/// afterwards neither panics nor runs away.
#[test]
fn a_sync_message_whose_bloom_filter_automerge_cannot_use_is_refused_and_the_peer_served_on() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    add_task(&mut a, "one", "");
    sync_document(&mut a, &mut b, ROOT_DOCUMENT);
    let mut b_states = PeerStates::default();
    let genuine = b.peer_message(&mut b_states, TASKS).unwrap().unwrap();
    // Filters of one entry: 2^32 - 1 probes (Automerge would allocate 16 GiB for each change
    // it weighs), and no bits at all (it would divide by zero).
    // And a thousand filters in one message.
    let filters =
        [("probes", [1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0].as_slice()), ("no bits", &[1, 0, 7]), ("many", &[])];
    for (name, filter) in filters {
        let mut message = automerge::sync::Message::decode(&genuine.sync).unwrap();
        let bloom = automerge::sync::BloomFilter::try_from(filter).unwrap();
        message.have = vec![automerge::sync::Have { last_sync: Vec::new(), bloom }];
        if name == "many" {
            // Sound filters, but each change Automerge weighs sending is probed against all.
            let have = automerge::sync::Have {
                last_sync: Vec::new(),
                bloom: automerge::sync::BloomFilter::from_hashes([].iter()),
            };
            message.have = vec![have; 1000];
        }
        let hostile = PeerMessage { sync: message.encode(), changes: Vec::new() };
        let mut a_states = PeerStates::default();
        let error = a.receive_peer_message(&mut a_states, TASKS, &hostile).unwrap_err();
        assert_eq!(error.code(), ErrorCode::PeerMessageMalformed, "{name}: {error}");
        // Answering the peer, as a session does next, neither panics nor runs away.
        let _ = a.peer_message(&mut a_states, TASKS).unwrap();
    }
    // The genuine message still goes through, and the task is all there.
    let mut a_states = PeerStates::default();
    a.receive_peer_message(&mut a_states, TASKS, &genuine).unwrap();
    assert!(a.peer_message(&mut a_states, TASKS).unwrap().is_some());
    assert_eq!(a.list(Collection::Tasks).unwrap().len(), 1);
}

/// A peer that holds nothing of a document gets it whole, as a signed snapshot: adopted when
/// every change checks out, with each change still attested by its author. A snapshot holding a
/// change by a device never added is refused with its code, and a damaged one is malformed;
/// nothing of either is kept.
#[test]
fn a_document_received_whole_is_adopted_only_when_every_change_checks_out() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = init(dirs[0].path());
    let mut b = join(&mut a, dirs[1].path(), "b");
    let mut c = join(&mut a, dirs[2].path(), "c");
    add_task(&mut a, "one", "");
    add_task(&mut a, "two", "");
    sync_document(&mut a, &mut b, ROOT_DOCUMENT);
    let (mut a_states, mut b_states) = (PeerStates::default(), PeerStates::default());
    // b says it holds nothing of the document; a answers with all of it.
    let opening = b.peer_message(&mut b_states, TASKS).unwrap().unwrap();
    a.receive_peer_message(&mut a_states, TASKS, &opening).unwrap();
    // Compacted, the document goes as stored; taken in as a round, it is checked and viewed
    // on a loader thread.
    a.compact().unwrap();
    let answer = a.peer_message(&mut a_states, TASKS).unwrap().unwrap();
    assert!(SignedSnapshot::is_one(&answer.changes));
    let round = [(TASKS.to_owned(), answer.clone())];
    assert_eq!(b.receive_peer_round(&mut b_states, &round).unwrap().applied, 2);
    assert_eq!(b.heads(TASKS).unwrap(), a.heads(TASKS).unwrap());
    // Adopted whole: stored as its first snapshot, no change in a tail.
    let status = b.status().unwrap();
    let tasks = status.documents.iter().find(|d| d.name == "tasks/*").unwrap();
    assert_eq!((tasks.records, tasks.events, tasks.tail_chunks), (2, 2, 0));
    drop(b);
    let mut b = open(dirs[1].path());
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), 2);
    assert!(b.verify_authorship(TASKS).unwrap().is_empty(), "a's own attestations came along");
    let a_id = a.device_id();
    assert!(signed(&b.export_changes(TASKS, &[]).unwrap()).attestations.iter().all(|at| at.signer == a_id));

    // The same shape, holding a change by a device never added.
    let impostor = DeviceIdentity::generate().unwrap();
    let stranger = foreign_change(&impostor);
    let mut doc = automerge::Automerge::new();
    doc.apply_changes([stranger.clone()]).unwrap();
    let names = ChangeNames::of(&doc);
    let hostile = SignedSnapshot { attestations: vec![attest(&c, &impostor, TASKS, &stranger)], document: doc.save() };
    let hostile = PeerMessage { sync: answer.sync.clone(), changes: hostile.encode(&names).unwrap() };
    let error = c.receive_peer_message(&mut PeerStates::default(), TASKS, &hostile).unwrap_err();
    assert_eq!(error.code(), ErrorCode::DeviceUnknown, "{error}");
    let round = [(TASKS.to_owned(), hostile)];
    let error = c.receive_peer_round(&mut PeerStates::default(), &round).unwrap_err();
    assert_eq!(error.code(), ErrorCode::DeviceUnknown, "{error}");
    // One naming the changes its attestation covers, its document holding none of them.
    let Decoded::Attested(answered) = SignedSnapshot::decode(&answer.changes).unwrap() else { panic!("legacy") };
    let answered_doc = automerge::Automerge::load(answered.document).unwrap();
    let a_names = ChangeNames::of(&answered_doc);
    let attestations = answered.attestations(&answered_doc).unwrap();
    let misnamed = SignedSnapshot { attestations, document: automerge::Automerge::new().save() };
    let misnamed = PeerMessage { sync: answer.sync.clone(), changes: misnamed.encode(&a_names).unwrap() };
    for error in [
        c.receive_peer_message(&mut PeerStates::default(), TASKS, &misnamed).unwrap_err(),
        c.receive_peer_round(&mut PeerStates::default(), &[(TASKS.to_owned(), misnamed.clone())]).unwrap_err(),
    ] {
        assert_eq!(error.code(), ErrorCode::SyncUnitMalformed, "{error}");
    }
    // One whose document makes Automerge's load panic (found by the `peer` fuzz target).
    let mut panicking = b"ADSS\x01\0\0\0\0".to_vec();
    panicking.extend_from_slice(&[
        0x85, 0x6f, 0x4a, 0x83, 0x21, 0x02, 0x4d, 0x00, 0x03, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x23, 0x04, 0x2f, 0x04,
        0x4d, 0x00, 0x00, 0x0a, 0x4d, 0x00, 0x4d, 0x04,
    ]);
    let panicking = PeerMessage { sync: answer.sync.clone(), changes: panicking };
    for error in [
        c.receive_peer_message(&mut PeerStates::default(), TASKS, &panicking).unwrap_err(),
        c.receive_peer_round(&mut PeerStates::default(), &[(TASKS.to_owned(), panicking.clone())]).unwrap_err(),
    ] {
        assert_eq!(error.code(), ErrorCode::SyncUnitMalformed, "{error}");
    }
    // A damaged one: a byte of the saved document flipped.
    let mut damaged = answer.changes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let damaged = PeerMessage { sync: answer.sync.clone(), changes: damaged };
    let error = c.receive_peer_message(&mut PeerStates::default(), TASKS, &damaged).unwrap_err();
    assert_eq!(error.code(), ErrorCode::SyncUnitMalformed, "{error}");
    let round = [(TASKS.to_owned(), damaged)];
    let error = c.receive_peer_round(&mut PeerStates::default(), &round).unwrap_err();
    assert_eq!(error.code(), ErrorCode::SyncUnitMalformed, "{error}");
    drop(c);
    let mut c = open(dirs[2].path());
    assert!(c.list(Collection::Tasks).unwrap().is_empty());
    assert_eq!(c.status().unwrap().pending_changes, 0);
}
