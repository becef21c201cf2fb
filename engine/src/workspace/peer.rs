//! Peer sync, the engine's side: the Automerge sync protocol per document between two devices,
//! with every change received checked exactly as any import is. The transport is elsewhere
//! (`adiuva-p2p`); nothing here knows the network.
//!
//! A [`PeerMessage`] is an Automerge sync message with its changes taken out, plus those
//! changes as a [`SignedChanges`](crate::authorship::SignedChanges) (their authors'
//! attestations, verbatim). [`Workspace::receive_peer_message`] imports the signed part through
//! [`Workspace::import_changes`] (envelope, attestation, signer, device list; pending area for
//! missing dependencies) and only then hands Automerge the message, which by then carries no
//! change: Automerge updates what it knows of the peer and applies nothing itself. A message
//! carrying changes of its own is refused. Automerge's "send the whole document" shortcut
//! (format 2 messages) is never taken: the capability flags of received messages are dropped,
//! so this device never learns that the peer could take one. A peer that holds nothing of a
//! document gets our own form of it instead: the document whole as a
//! [`SignedSnapshot`] (every change's attestation kept), which it adopts as a restore point's
//! document is adopted when every change passes an import's checks, and otherwise imports
//! change by change.
//!
//! **Peer state** (`q/PEER`, a local blob): per document, the heads this device and the peer
//! are known to share (Automerge's persisted sync state). It is stored only after what it names
//! is durable here, so a session cut short resumes from it and a reconnect sends only what is
//! new; a state the peer no longer matches (it was restored from an older copy) makes Automerge
//! start that document over (its reset message), never loop.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc::channel;

use adiuva_model::DeviceId;
use automerge::ChangeHash;
use automerge::sync::{self, ChunkList, SyncDoc};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::devices::DeviceList;
use super::restore_point::{WholeDocument, load_whole};
use super::sync::Imported;
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::authorship::SignedSnapshot;
use crate::chunk::BlobKind;
use crate::cores::{self, Spread};
use crate::encode;
use crate::error::{Error, Result, json_error};
use crate::store::{StoreError, WriteBatch};
use crate::untrusted;

/// One document's turn of the sync protocol: Automerge's message without its changes, and the
/// changes as a signed unit (empty when the message carries none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMessage {
    pub sync: Vec<u8>,
    pub changes: Vec<u8>,
}

/// New changes for a live peer ([`Workspace::peer_push`]): per document, a signed unit.
#[derive(Debug)]
pub struct PeerPush {
    pub units: Vec<(String, Vec<u8>)>,
    /// This device's heads with them: where they bring the peer.
    pub heads: PeerHeads,
}

/// What this device knows of one peer, per document (Automerge's sync states).
#[derive(Debug, Default)]
pub struct PeerStates {
    documents: BTreeMap<String, sync::State>,
    /// When a session with the peer last ended with both sides holding the same heads.
    pub last_sync: Option<DateTime<Utc>>,
}

/// The stored form of [`PeerStates`]: per document, the encoded persisted sync state, hex.
#[derive(Serialize, Deserialize)]
struct StoredPeerStates {
    documents: BTreeMap<String, String>,
    #[serde(default)]
    last_sync: Option<DateTime<Utc>>,
}

/// Every document's heads at one moment, and their digest: what the two sides of a session
/// compare at its end.
#[derive(Clone, Debug, Default)]
pub struct PeerHeads {
    documents: BTreeMap<String, Vec<ChangeHash>>,
}

impl PeerHeads {
    /// A digest of every document's name and heads, in order: equal digests, same changes.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for (document, heads) in &self.documents {
            let mut heads = heads.clone();
            heads.sort();
            hasher.update(document.as_bytes());
            hasher.update(&[0]);
            for head in heads {
                hasher.update(&head.0);
            }
            hasher.update(&[0xff]);
        }
        *hasher.finalize().as_bytes()
    }
}

impl PeerStates {
    /// Records that the peer holds exactly `heads` (a session ended with both sides' digests
    /// equal). Automerge alone may not know: a side that took the last changes in says nothing
    /// more once its heads equal the heads the other announced, so the other would keep its
    /// older view of what they share.
    pub fn settled(&mut self, heads: &PeerHeads) {
        for (document, heads) in &heads.documents {
            self.state(document).shared_heads.clone_from(heads);
        }
    }

    fn state(&mut self, document: &str) -> &mut sync::State {
        self.documents.entry(document.to_owned()).or_default()
    }

    /// The heads this device last knew the peer to hold for `document`, if any.
    fn shared_heads(&self, document: &str) -> Option<&[ChangeHash]> {
        self.documents.get(document).map(|state| state.shared_heads.as_slice())
    }
}

impl Workspace {
    /// The device's Ed25519 signing key, the secret half of its [`DeviceId`]: its peer
    /// endpoint's key, so a peer's transport proves the same identity its changes are signed by.
    pub fn endpoint_secret(&self) -> Zeroizing<[u8; 32]> {
        self.log.identity.signing_secret()
    }

    /// Whether `peer` may sync with this device: a device of this workspace's list, not removed.
    /// The error names why not (`device.unknown`, `device.removed`).
    pub fn check_peer(&mut self, peer: &DeviceId) -> Result<()> {
        let device = self.device_list()?.devices.get(peer).cloned();
        match device {
            None => Err(Error::DeviceUnknown { device: peer.to_string(), document: None, change: None }),
            Some(device) if device.is_removed() => {
                Err(Error::DeviceRemoved { device: peer.to_string(), document: None, change: None })
            }
            Some(_) => Ok(()),
        }
    }

    /// Every document's heads now.
    pub fn peer_heads(&mut self) -> Result<PeerHeads> {
        let mut documents = BTreeMap::new();
        for document in self.document_names()? {
            let heads = self.document(&document)?.doc.get_heads();
            documents.insert(document, heads);
        }
        Ok(PeerHeads { documents })
    }

    /// What this device knows of `peer` (nothing if they never synced).
    pub fn peer_states(&self, peer: &DeviceId) -> Result<PeerStates> {
        let key = layout::peer_state(peer);
        let Some(sealed) = self.log.store.get(&key)? else {
            return Ok(PeerStates::default());
        };
        let bytes = self.log.open_local("peer state", &key, &sealed, BlobKind::PeerState)?;
        let stored: StoredPeerStates = serde_json::from_slice(&bytes)
            .map_err(|e| Error::WorkspaceFormat { detail: format!("the peer state {}", json_error(&e)) })?;
        let mut documents = BTreeMap::new();
        for (document, hex) in stored.documents {
            let state = adiuva_model::hex::decode(&hex).and_then(|bytes| sync::State::decode(&bytes).ok()).ok_or_else(
                || Error::WorkspaceFormat { detail: format!("the peer state of {document} does not decode") },
            )?;
            documents.insert(document, state);
        }
        Ok(PeerStates { documents, last_sync: stored.last_sync })
    }

    /// Stores what this device knows of `peer`, durably. Call it only once every change the
    /// states name as shared is durable here (each import is, before it returns).
    pub fn set_peer_states(&mut self, peer: &DeviceId, states: &PeerStates) -> Result<()> {
        let stored = StoredPeerStates {
            documents: states
                .documents
                .iter()
                .map(|(document, state)| (document.clone(), adiuva_model::hex::encode(&state.encode())))
                .collect(),
            last_sync: states.last_sync,
        };
        let key = layout::peer_state(peer);
        let bytes = encode::json(&stored, "peer state")?;
        let mut batch = WriteBatch::default();
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::PeerState, &bytes)?);
        self.log.write_durably(batch)
    }

    /// The peers this device has synced with.
    pub fn known_peers(&self) -> Result<Vec<DeviceId>> {
        Ok(self
            .log
            .store
            .keys_with_prefix(b"q/")?
            .iter()
            .filter_map(|key| std::str::from_utf8(&key[2..]).ok()?.parse().ok())
            .collect())
    }

    /// How many changes of each document `peer` was not known to hold when this device last
    /// synced with it (documents it lacks nothing of are left out).
    pub fn peer_lacks(&mut self, peer: &DeviceId) -> Result<BTreeMap<String, usize>> {
        let states = self.peer_states(peer)?;
        let mut lacks = BTreeMap::new();
        for document in self.document_names()? {
            let doc = &self.document(&document)?.doc;
            let shared: Vec<ChangeHash> = states
                .shared_heads(&document)
                .unwrap_or_default()
                .iter()
                .filter(|hash| doc.get_change_meta_by_hash(hash).is_some())
                .copied()
                .collect();
            let missing = doc.get_changes(&shared).len();
            if missing > 0 {
                lacks.insert(document, missing);
            }
        }
        Ok(lacks)
    }

    /// This device's next message to the peer for `document`, or `None` when it has nothing
    /// to say (Automerge's `generate_sync_message`).
    ///
    /// A peer whose last message said it holds nothing of the document gets it whole, as a
    /// signed snapshot (every change still attested by its author): loading one saved document
    /// costs a fraction of taking its changes in one by one.
    pub fn peer_message(&mut self, states: &mut PeerStates, document: &str) -> Result<Option<PeerMessage>> {
        let state = states.state(document);
        let peer_holds_none = state.their_heads.as_ref().is_some_and(|heads| heads.is_empty());
        // Automerge sends no change to a peer it believes read-only: for a peer holding none of
        // the document, told so for this one message, it makes the rest of its message without
        // encoding every change that the snapshot replaces.
        let peer_read_only = state.peer_read_only;
        state.peer_read_only |= peer_holds_none;
        let doc = &self.document(document)?.doc;
        let generated = doc.generate_sync_message(state);
        state.peer_read_only = peer_read_only;
        let Some(mut message) = generated else {
            return Ok(None);
        };
        if !message.need.is_empty() {
            message.need = self.needed_beyond_pending(document, std::mem::take(&mut message.need))?;
        }
        let doc = &self.document(document)?.doc;
        let changes = std::mem::replace(&mut message.changes, ChunkList::empty());
        let signed = if peer_holds_none && !doc.get_heads().is_empty() {
            self.signed_snapshot(document)?
        } else if changes.is_empty() {
            Vec::new()
        } else {
            let changes = changes
                .iter()
                .map(|bytes| {
                    untrusted::parse_change(bytes.to_vec()).map_err(|e| Error::DocumentCorrupt {
                        document: document.to_owned(),
                        detail: format!("a change to send does not parse: {e}"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            self.signed_unit(document, &changes)?
        };
        Ok(Some(PeerMessage { sync: message.encode(), changes: signed }))
    }

    /// What to ask the peer for, of `wanted` (the peer's heads this document lacks, as
    /// Automerge asks for them): a change kept in the pending area is not asked for, the
    /// dependencies it waits for are. Automerge walks its own queue so; here a change waiting
    /// for its dependencies waits in the pending area instead, and without this walk a peer that
    /// sent it once (and took one of its dependencies for held, a false positive of the Bloom
    /// filter) would neither send it again nor learn what it waits for: the session would not
    /// settle.
    fn needed_beyond_pending(&mut self, document: &str, wanted: Vec<ChangeHash>) -> Result<Vec<ChangeHash>> {
        let pending: HashMap<ChangeHash, Vec<ChangeHash>> = (self.log.read_pending(document)?.into_iter())
            .map(|(change, _)| (change.hash(), change.deps().to_vec()))
            .collect();
        if pending.is_empty() {
            return Ok(wanted);
        }
        let doc = &self.document(document)?.doc;
        let (mut needed, mut seen, mut stack) = (BTreeSet::new(), HashSet::new(), wanted);
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) || doc.get_change_meta_by_hash(&hash).is_some() {
                continue;
            }
            match pending.get(&hash) {
                Some(deps) => stack.extend(deps.iter().copied()),
                None => {
                    needed.insert(hash);
                }
            }
        }
        Ok(needed.into_iter().collect())
    }

    /// Takes in the peer's message for `document`: its changes (a signed unit, or the document
    /// whole as a signed snapshot) imported with every check of [`Self::import_changes`] (and
    /// durable) before Automerge sees the rest of the message.
    pub fn receive_peer_message(
        &mut self,
        states: &mut PeerStates,
        document: &str,
        message: &PeerMessage,
    ) -> Result<Imported> {
        let whole = SignedSnapshot::is_one(&message.changes)
            .then(|| load_whole(&self.log.workspace_id, None, document, &message.changes, Spread::AcrossCores));
        self.receive_decoded(states, document, message, whole)
    }

    /// Takes in a round of the peer's messages in order, each as [`Self::receive_peer_message`]
    /// does. The documents sent whole load meanwhile on threads of their own (as many as there
    /// are cores), with the read views of those to be adopted, so loading them overlaps each
    /// other and checking and storing those before.
    pub fn receive_peer_round(&mut self, states: &mut PeerStates, round: &[(String, PeerMessage)]) -> Result<Imported> {
        let whole: Vec<(&str, &[u8], bool)> = round
            .iter()
            .filter(|(_, message)| SignedSnapshot::is_one(&message.changes))
            .map(|(document, message)| {
                // The root's own snapshot may change the list: it is checked as it is adopted.
                let precheck = document != ROOT_DOCUMENT && self.never_stored(document)?;
                Ok((document.as_str(), message.changes.as_slice(), precheck))
            })
            .collect::<Result<_>>()?;
        // Only a round with a document to adopt needs the device list read out of the root.
        let list = match whole.iter().any(|(_, _, precheck)| *precheck) {
            true => self.device_list()?,
            false => DeviceList::default(),
        };
        let loaders = cores::count().min(whole.len());
        let (workspace_id, list) = (self.log.workspace_id, &list);
        std::thread::scope(|scope| {
            let mut loaded = Vec::with_capacity(loaders);
            for mine in cores::deal(whole.iter().copied(), loaders) {
                let (sender, receiver) = channel();
                std::thread::Builder::new()
                    .name("peer-snapshot-load".into())
                    .spawn_scoped(scope, move || {
                        let spread = Spread::within(loaders);
                        for (document, bytes, fresh) in mine {
                            // Nobody waits any more: taking in the round failed.
                            if sender
                                .send(load_whole(&workspace_id, fresh.then_some(list), document, bytes, spread))
                                .is_err()
                            {
                                return;
                            }
                        }
                    })
                    .map_err(|e| Error::Store(StoreError::from(e)))?;
                loaded.push(receiver);
            }
            let mut loaded = cores::Dealt::new(loaded);
            let mut imported = Imported::default();
            for (document, message) in round {
                let decoded = match SignedSnapshot::is_one(&message.changes) {
                    true => Some(loaded.next().unwrap_or_else(|| {
                        Err(Error::PeerMessageMalformed {
                            document: document.clone(),
                            detail: "its snapshot did not load".into(),
                        })
                    })),
                    false => None,
                };
                imported.add(self.receive_decoded(states, document, message, decoded)?);
            }
            Ok(imported)
        })
    }

    /// [`Self::receive_peer_message`] with the document sent whole, if it was, already decoded.
    fn receive_decoded(
        &mut self,
        states: &mut PeerStates,
        document: &str,
        message: &PeerMessage,
        whole: Option<Result<WholeDocument>>,
    ) -> Result<Imported> {
        layout::check_document_name(document)?;
        let malformed = |detail: String| Error::PeerMessageMalformed { document: document.to_owned(), detail };
        let mut sync_message =
            sync::Message::decode(&message.sync).map_err(|e| malformed(format!("it does not decode: {e}")))?;
        if !sync_message.changes.is_empty() {
            return Err(malformed("it carries changes outside its signed part".into()));
        }
        untrusted::check_sync_message(&sync_message).map_err(malformed)?;
        // Without the flags this device never learns the peer takes format-2 messages, so it
        // never sends a whole document in place of attested changes.
        sync_message.flags = None;
        let imported = if message.changes.is_empty() {
            Imported::default()
        } else if let Some(whole) = whole {
            self.take_snapshot(document, &message.changes, whole?)?
        } else {
            self.import_changes(document, &message.changes)?
        };
        let state = states.state(document);
        let doc = &mut self.document(document)?.doc;
        // The message carries no change by now: Automerge updates its view of the peer only.
        doc.receive_sync_message(state, sync_message)
            .map_err(|e| Error::PeerMessageMalformed { document: document.to_owned(), detail: e.to_string() })?;
        Ok(imported)
    }

    /// What a live link pushes to `peer` outside a session: per document, the changes this
    /// device holds beyond the heads `states` says the peer holds, as signed units (documents
    /// with nothing new left out, the root first), with this device's heads as they were.
    /// A document made since the two last agreed is sent whole. `None` when a session is
    /// needed instead: no session with the peer has converged yet, or more than `limit` changes. Found by walking back from the heads, so the cost is the
    /// new changes', not the document's (Automerge's `get_changes` reads the whole history).
    pub fn peer_push(&mut self, states: &PeerStates, limit: usize) -> Result<Option<PeerPush>> {
        let mut units = Vec::new();
        let mut documents = BTreeMap::new();
        let mut budget = limit;
        for document in self.document_names()? {
            let doc = &self.document(&document)?.doc;
            let heads = doc.get_heads();
            let shared = match states.shared_heads(&document) {
                Some(shared) => shared,
                // Made since the two sides last held the same documents: the peer has none of it
                // (or made it too, which the session after a push settles).
                None if states.last_sync.is_some() => &[],
                None => return Ok(None),
            };
            if heads.iter().any(|head| !shared.contains(head)) {
                let Some(hashes) = changes_since(doc, &heads, shared, &mut budget) else {
                    return Ok(None);
                };
                units.push((document.clone(), self.export_changes_by_hash(&document, &hashes)?));
            }
            documents.insert(document, heads);
        }
        Ok(Some(PeerPush { units, heads: PeerHeads { documents } }))
    }

    /// Whether the peer's last message for `document` announced exactly this device's heads.
    pub fn peer_in_sync(&mut self, states: &PeerStates, document: &str) -> Result<bool> {
        let heads = self.document(document)?.doc.get_heads();
        Ok(states.documents.get(document).and_then(|state| state.their_heads.as_ref()) == Some(&heads))
    }
}

/// The hashes of the changes of `doc` reachable from `heads` but not from `shared`, each after
/// its dependencies; `None` once more than `budget` (which shrinks by what is found) or when
/// the walk reaches a change with no metadata (a head `shared` names that this document lacks
/// would make the walk run to the first change: the budget ends it).
fn changes_since(
    doc: &automerge::Automerge,
    heads: &[ChangeHash],
    shared: &[ChangeHash],
    budget: &mut usize,
) -> Option<Vec<ChangeHash>> {
    let mut seen: std::collections::HashSet<ChangeHash> = shared.iter().copied().collect();
    let mut order = Vec::new();
    // Depth first, each change emitted once its dependencies are: (hash, dependencies pushed).
    let mut stack: Vec<(ChangeHash, bool)> = heads.iter().map(|head| (*head, false)).collect();
    while let Some((hash, expanded)) = stack.pop() {
        if expanded {
            order.push(hash);
            continue;
        }
        if !seen.insert(hash) {
            continue;
        }
        *budget = budget.checked_sub(1)?;
        let meta = doc.get_change_meta_by_hash(&hash)?;
        stack.push((hash, true));
        stack.extend(meta.deps.iter().filter(|dep| !seen.contains(*dep)).map(|dep| (*dep, false)));
    }
    Some(order)
}
