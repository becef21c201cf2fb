//! Inviting a device and joining a workspace: the engine's half, independent of the
//! transport (relay or peer) that carries the three messages.
//!
//! 1. The inviter makes a [`Ticket`]: workspace id, invite id, a random 32-byte secret and an
//!    expiry, as text the person copies to the new device. The inviter keeps the secret (sealed,
//!    `i/INVITE`) until the ticket is used or expires: single use.
//! 2. The joiner makes its own identity (Ed25519 and X25519 keys) and sends a [`JoinRequest`]:
//!    its public keys and name, MAC'd (keyed BLAKE3) with the ticket's secret, so whoever
//!    carries it (the relay) can neither forge nor alter one.
//! 3. The inviter checks it and answers with a [`JoinAcceptance`]: it commits `device.added`
//!    (the joiner's keys, and every workspace key epoch sealed to its X25519 key) in the same
//!    batch that deletes the invitation, and sends its root document, MAC'd with the secret.
//! 4. The joiner checks the MAC, opens its sealed epochs and creates a fresh workspace
//!    directory from the root: a new device with its own Automerge actor and its own storage
//!    key. The rest of the workspace arrives by sync.
//!
//! The workspace key never crosses in clear: only sealed to the joiner's box key, inside a
//! signed root change.

use std::path::Path;

use adiuva_model::DeviceId;
use automerge::Automerge;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;
use ulid::Ulid;

use super::commit::Operation;
use super::devices::{DeviceList, device_name};
use super::{ROOT_DOCUMENT, Workspace, layout, lock_dir, store_dir};
use crate::authorship::{Decoded, SignedChanges};
use crate::chunk::BlobKind;
use crate::crypto::{SecretKey, random_bytes};
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;
use crate::keystore::{self, KeyProtection};
use crate::store::disk::{Disk, RealDisk};
use crate::store::{ChunkStore, SledStore, StoreError, WriteBatch};
use crate::untrusted;

const TICKET_PREFIX: &str = "adiuva-invite-1-";
const REQUEST_DOMAIN: &[u8] = b"adiuva join request v1\0";
const ACCEPTANCE_DOMAIN: &[u8] = b"adiuva join acceptance v1\0";
const RELAY_PROOF_DOMAIN: &[u8] = b"adiuva relay invite proof v1\0";
const MESSAGE_VERSION: u32 = 1;

/// A single-use, expiring invitation to join a workspace. Its secret wipes itself when
/// dropped.
pub struct Ticket {
    pub workspace_id: Ulid,
    pub invite_id: Ulid,
    secret: SecretKey,
    pub expires_at: DateTime<Utc>,
}

impl zeroize::ZeroizeOnDrop for Ticket {}

impl Ticket {
    /// The text a person copies: `adiuva-invite-1-` and the hex of workspace id, invite id,
    /// secret and expiry (seconds since 1970, little-endian).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(72);
        bytes.extend_from_slice(&self.workspace_id.to_bytes());
        bytes.extend_from_slice(&self.invite_id.to_bytes());
        bytes.extend_from_slice(self.secret.as_bytes());
        bytes.extend_from_slice(&self.expires_at.timestamp().to_le_bytes());
        let text = format!("{TICKET_PREFIX}{}", adiuva_model::hex::encode(&bytes));
        zeroize::Zeroize::zeroize(&mut bytes);
        text
    }

    pub fn decode(text: &str) -> Result<Self> {
        let invalid = |detail: &str| Error::TicketInvalid { detail: detail.into() };
        let hex = text
            .trim()
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| invalid("it does not start with adiuva-invite-1-"))?;
        let bytes = zeroize::Zeroizing::new(
            adiuva_model::hex::decode_array::<72>(hex).ok_or_else(|| invalid("wrong length or not hex"))?,
        );
        let id = |range: std::ops::Range<usize>| -> Result<Ulid> {
            let raw: [u8; 16] = bytes[range].try_into().map_err(|_| invalid("truncated"))?;
            Ok(Ulid::from_bytes(raw))
        };
        let seconds = i64::from_le_bytes(bytes[64..72].try_into().map_err(|_| invalid("truncated"))?);
        Ok(Self {
            workspace_id: id(0..16)?,
            invite_id: id(16..32)?,
            secret: SecretKey::from_slice(&bytes[32..64]).ok_or_else(|| invalid("truncated"))?,
            expires_at: Utc.timestamp_opt(seconds, 0).single().ok_or_else(|| invalid("bad expiry"))?,
        })
    }

    /// What a joiner shows the relay to post a request to this invite: derived from the
    /// secret, which it does not reveal; the relay keeps only its BLAKE3 hash until the join.
    pub fn relay_proof(&self) -> [u8; 32] {
        self.mac(RELAY_PROOF_DOMAIN, &[])
    }

    fn check_expiry(&self) -> Result<()> {
        if Utc::now() > self.expires_at {
            return Err(Error::InviteExpired { expired_at: self.expires_at.to_rfc3339() });
        }
        Ok(())
    }

    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(self.secret.as_bytes());
        hasher.update(domain);
        hasher.update(&self.workspace_id.to_bytes());
        hasher.update(&self.invite_id.to_bytes());
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// Compares in constant time (BLAKE3's `Hash` equality).
    fn mac_matches(&self, domain: &[u8], parts: &[&[u8]], mac_hex: &str) -> bool {
        let Some(given) = adiuva_model::hex::decode_array::<32>(mac_hex) else {
            return false;
        };
        blake3::Hash::from(self.mac(domain, parts)) == blake3::Hash::from(given)
    }
}

/// What the joiner sends the inviter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub v: u32,
    pub workspace_id: Ulid,
    pub invite_id: Ulid,
    pub device_id: DeviceId,
    /// The joiner's X25519 box key, hex.
    pub box_key: String,
    pub name: String,
    /// Keyed BLAKE3 of the above under the ticket's secret, hex.
    pub mac: String,
}

impl JoinRequest {
    fn mac_parts(&self) -> [Vec<u8>; 3] {
        [self.device_id.0.to_vec(), self.box_key.as_bytes().to_vec(), self.name.as_bytes().to_vec()]
    }
}

/// What the inviter answers: its root document (which adds the joiner and holds the epochs
/// sealed to it), MAC'd under the ticket's secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinAcceptance {
    pub v: u32,
    pub workspace_id: Ulid,
    pub invite_id: Ulid,
    pub device_id: DeviceId,
    /// The root document as a signed unit ([`SignedChanges`]), hex.
    pub root: String,
    pub mac: String,
}

/// A join in progress on the joining device: its new identity, kept until the acceptance
/// arrives (wiped when dropped).
pub struct PendingJoin {
    ticket: Ticket,
    identity: DeviceIdentity,
    name: String,
}

impl zeroize::ZeroizeOnDrop for PendingJoin {}

impl Workspace {
    /// Makes a single-use invitation valid for `valid_for`.
    pub fn invite(&mut self, valid_for: chrono::Duration) -> Result<Ticket> {
        let ticket = Ticket {
            workspace_id: self.workspace_id(),
            invite_id: Ulid::new(),
            secret: SecretKey::from_bytes(random_bytes()?),
            expires_at: Utc::now() + valid_for,
        };
        let key = layout::invite(ticket.invite_id);
        let mut stored = zeroize::Zeroizing::new(ticket.secret.as_bytes().to_vec());
        stored.extend_from_slice(&ticket.expires_at.timestamp().to_le_bytes());
        let mut batch = WriteBatch::default();
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::Invite, &stored)?);
        self.log.write_durably(batch)?;
        info!(invite = %ticket.invite_id, "invitation made");
        Ok(ticket)
    }

    /// Checks a join request against the open invitation it names and, if it holds, adds the
    /// device (one event, sealing every epoch to it) and uses the invitation up, atomically.
    pub fn accept_join(&mut self, request: &JoinRequest) -> Result<JoinAcceptance> {
        let unknown = || Error::InviteUnknown { invite: request.invite_id.to_string() };
        if request.v != MESSAGE_VERSION || request.workspace_id != self.workspace_id() {
            return Err(unknown());
        }
        let key = layout::invite(request.invite_id);
        let sealed = self.log.store.get(&key)?.ok_or_else(unknown)?;
        let stored = zeroize::Zeroizing::new(self.log.open_local("invite", &key, &sealed, BlobKind::Invite)?);
        let (secret, expiry) = stored.split_at_checked(32).ok_or_else(unknown)?;
        let seconds = i64::from_le_bytes(expiry.try_into().map_err(|_| unknown())?);
        let ticket = Ticket {
            workspace_id: request.workspace_id,
            invite_id: request.invite_id,
            secret: SecretKey::from_slice(secret).ok_or_else(unknown)?,
            expires_at: Utc.timestamp_opt(seconds, 0).single().ok_or_else(unknown)?,
        };
        if let Err(expired) = ticket.check_expiry() {
            let mut batch = WriteBatch::default();
            batch.delete(key);
            self.log.write_durably(batch)?;
            return Err(expired);
        }
        let parts = request.mac_parts();
        if !ticket.mac_matches(REQUEST_DOMAIN, &parts.each_ref().map(Vec::as_slice), &request.mac) {
            return Err(Error::InviteUnauthentic { what: "join request" });
        }
        let box_key = adiuva_model::hex::decode_array::<32>(&request.box_key)
            .ok_or(Error::InviteUnauthentic { what: "join request" })?;
        let name = device_name(&request.name)?;
        if self.device_list()?.devices.contains_key(&request.device_id) {
            return Err(unknown());
        }
        let sealed = self.seal_all_epochs(&box_key)?;
        let operation =
            Operation::AddDevice { device: request.device_id, name, box_key: request.box_key.clone(), sealed };
        let event = self.root_event("device.added", None, operation, true);
        let mut batch = WriteBatch::default();
        batch.delete(key);
        self.commit_prepared(vec![event], batch)?;
        let root = self.export_changes(ROOT_DOCUMENT, &[])?;
        let mac = ticket.mac(ACCEPTANCE_DOMAIN, &[&request.device_id.0, &root]);
        info!(device = %request.device_id.short(), "device added");
        Ok(JoinAcceptance {
            v: MESSAGE_VERSION,
            workspace_id: request.workspace_id,
            invite_id: request.invite_id,
            device_id: request.device_id,
            root: adiuva_model::hex::encode(&root),
            mac: adiuva_model::hex::encode(&mac),
        })
    }

    /// How many invitations are open (made here, neither used nor expired); expired ones are
    /// deleted on the way.
    pub fn open_invites(&mut self) -> Result<usize> {
        let mut open = 0;
        let mut expired = WriteBatch::default();
        for (key, sealed) in self.log.store.scan_prefix(b"i/")? {
            let stored = zeroize::Zeroizing::new(self.log.open_local("invite", &key, &sealed, BlobKind::Invite)?);
            let seconds = stored.get(32..40).and_then(|bytes| bytes.try_into().ok()).map(i64::from_le_bytes);
            if seconds.is_some_and(|seconds| Utc::now().timestamp() <= seconds) {
                open += 1;
            } else {
                expired.delete(key);
            }
        }
        if !expired.is_empty() {
            self.log.write_durably(expired)?;
        }
        Ok(open)
    }

    /// The joiner's first step: a new identity for this device and the request to send.
    pub fn request_join(ticket: &str, name: &str) -> Result<(PendingJoin, JoinRequest)> {
        let ticket = Ticket::decode(ticket)?;
        ticket.check_expiry()?;
        let identity = DeviceIdentity::generate()?;
        let mut request = JoinRequest {
            v: MESSAGE_VERSION,
            workspace_id: ticket.workspace_id,
            invite_id: ticket.invite_id,
            device_id: identity.device_id(),
            box_key: adiuva_model::hex::encode(&identity.box_public_key()),
            name: device_name(name)?,
            mac: String::new(),
        };
        let parts = request.mac_parts();
        request.mac = adiuva_model::hex::encode(&ticket.mac(REQUEST_DOMAIN, &parts.each_ref().map(Vec::as_slice)));
        let name = request.name.clone();
        Ok((PendingJoin { ticket, identity, name }, request))
    }
}

impl PendingJoin {
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// The joining device's id (its new identity).
    pub fn device_id(&self) -> DeviceId {
        self.identity.device_id()
    }

    /// Opens bytes sealed to this device's box key (how a transport carries the acceptance
    /// without reading it).
    pub fn unseal(&self, sealed: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        self.identity.unseal(sealed)
    }

    /// The joiner's last step: checks the acceptance and creates the workspace in `dir` (empty
    /// or missing) as this new device, holding the root document and every epoch sealed to it.
    pub fn complete(self, dir: &Path, protection: KeyProtection, acceptance: &JoinAcceptance) -> Result<Workspace> {
        let unauthentic = || Error::InviteUnauthentic { what: "acceptance" };
        let ticket = &self.ticket;
        if acceptance.v != MESSAGE_VERSION
            || acceptance.workspace_id != ticket.workspace_id
            || acceptance.invite_id != ticket.invite_id
            || acceptance.device_id != self.identity.device_id()
        {
            return Err(unauthentic());
        }
        let root = adiuva_model::hex::decode(&acceptance.root).ok_or_else(unauthentic)?;
        if !ticket.mac_matches(ACCEPTANCE_DOMAIN, &[&acceptance.device_id.0, &root], &acceptance.mac) {
            return Err(unauthentic());
        }
        // The epochs sealed to this device, read from the root before the workspace exists
        // (its keyring needs them); the root is checked change by change when it is imported.
        let Ok(Decoded::Attested(unit)) = SignedChanges::decode(&root) else {
            return Err(unauthentic());
        };
        let mut scratch = Automerge::new();
        let changes: Vec<automerge::Change> =
            unit.changes.into_iter().filter_map(|bytes| untrusted::parse_change(bytes).ok()).collect();
        untrusted::apply_changes(&mut scratch, changes).map_err(|_| unauthentic())?;
        let list = DeviceList::read(&scratch);
        let workspace_id = ticket.workspace_id.to_bytes();
        let keys: Vec<_> = list
            .sealed
            .iter()
            .filter_map(|(epoch, sealed)| {
                super::devices::open_epoch_key(
                    &self.identity,
                    &workspace_id,
                    *epoch,
                    sealed.get(&self.identity.device_id())?,
                )
            })
            .collect();
        if keys.is_empty() {
            return Err(unauthentic());
        }
        let unlocked = keystore::create_for(ticket.workspace_id, protection, self.identity, keys)?;
        let (mut workspace, keys) = Workspace::create_empty(dir, ticket.workspace_id, unlocked)?;
        // The header and keyring become durable in the same batch as the root: a crash leaves
        // a complete device or an empty store.
        workspace.import_into(ROOT_DOCUMENT, &root, keys)?;
        info!(workspace = %ticket.workspace_id, device = %workspace.device_id().short(), name = %self.name, "joined");
        Ok(workspace)
    }
}

impl Workspace {
    /// A new directory for a device that gets its workspace from others (a join, a restore):
    /// locked and opened, with the header and keyring staged for the caller's first batch.
    pub(super) fn create_empty(
        dir: &Path,
        workspace_id: Ulid,
        unlocked: keystore::Unlocked,
    ) -> Result<(Workspace, WriteBatch)> {
        for dir in [dir, &store_dir(dir)] {
            RealDisk.create_dir_all(dir).map_err(StoreError::from)?;
        }
        let lock = lock_dir(dir)?;
        let store: Box<dyn ChunkStore> = Box::new(SledStore::open(&store_dir(dir))?);
        if store.get(layout::HEADER)?.is_some() || !super::is_empty(store.as_ref())? || super::log::has_witness(dir) {
            return Err(Error::WorkspaceExists { path: dir.to_owned() });
        }
        let workspace = Self::assemble(dir, store, Some(lock), workspace_id, unlocked);
        let mut batch = WriteBatch::default();
        batch.put(layout::HEADER, workspace.log.keyring.header());
        batch.put(layout::KEYRING, workspace.log.keyring.seal(&workspace.log.identity)?);
        Ok((workspace, batch))
    }
}
