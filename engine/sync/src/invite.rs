//! Inviting a device and joining a workspace through the relay: the engine's three messages
//! (`adiuva_engine`'s invite module) carried by the relay's invite routes, opaque to it.
//!
//! 1. The inviter makes the engine's ticket and opens an invite on the relay with the BLAKE3
//!    hash of a proof derived from the ticket's secret. What the person copies is a
//!    [`RelayTicket`]: the relay's address, the account's email and the engine's ticket.
//! 2. The joiner signs in to the account as its new device and posts its join request (its
//!    public keys and name, MAC'd with the secret) with the proof: the relay checks the proof
//!    against the hash and uses the invite up.
//! 3. At its next sync (or while `device invite` waits), the inviter takes the request from the
//!    relay's join list, accepts it (the engine commits `device.added`, every epoch sealed to the
//!    joiner's X25519 key), and uploads the acceptance **sealed to the joiner's box key** as a
//!    blob of the sequence (`"ADVJ" | 1 | sealed`, padded to a power of two; other devices pass
//!    over it), leaves the blob's id for the joiner in the key envelope slot of epoch 0 (no key
//!    epoch has that number), and authorizes the joiner.
//! 4. The joiner, once authorized, finds the id there, opens the acceptance, creates its
//!    workspace and syncs.
//!
//! The relay sees an invite id, an expiry, a proof's hash, then the proof, the joiner's device
//! id and sizes; never the ticket's secret, a key, the root document or a name in clear. An
//! acceptance is kept on the inviter's device (`sync/joins`) until it is delivered, so a sync
//! cut short after the engine accepted delivers it at the next one.

use std::path::Path;
use std::time::Duration;

use adiuva_engine::{Error as EngineError, JoinAcceptance, JoinRequest, KeyProtection, Workspace, identity};
use adiuva_model::{DeviceId, ErrorCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::account::Relay;
use crate::client::RelayClient;
use crate::error::{Result, SyncError};
use crate::sync::{self, Progress};

/// How a relay ticket's text starts; the transport is named so other kinds can follow.
const TICKET_PREFIX: &str = "adiuva-join-relay-1-";
/// How an acceptance blob starts, then its version.
pub(crate) const ACCEPTANCE_MAGIC: &[u8; 4] = b"ADVJ";
const ACCEPTANCE_VERSION: u8 = 1;
/// The key envelope slot where the inviter leaves the joiner its acceptance's blob id.
const ACCEPTANCE_SLOT: u32 = 0;
/// Acceptances not delivered yet, on the inviter's device.
const UNDELIVERED_SETTING: &str = "sync/joins";
/// How often a waiting joiner or inviter asks the relay: both together stay well under the
/// smallest paid tier's 60 requests a minute.
const POLL: Duration = Duration::from_secs(3);

/// What the person copies to the new device.
pub struct RelayTicket {
    pub server: String,
    pub email: String,
    /// The engine's ticket (holds the secret).
    invite: Zeroizing<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketText {
    server: String,
    email: String,
    invite: String,
}

impl RelayTicket {
    /// Whether `text` is a relay ticket (rather than another transport's).
    pub fn is_relay_ticket(text: &str) -> bool {
        text.trim().starts_with(TICKET_PREFIX)
    }

    /// `adiuva-join-relay-1-` and the hex of `{"server", "email", "invite"}`.
    pub fn encode(&self) -> Zeroizing<String> {
        let text =
            TicketText { server: self.server.clone(), email: self.email.clone(), invite: (*self.invite).clone() };
        let json = Zeroizing::new(serde_json::to_vec(&text).unwrap_or_default());
        Zeroizing::new(format!("{TICKET_PREFIX}{}", adiuva_model::hex::encode(&json)))
    }

    pub fn decode(text: &str) -> Result<Self> {
        let invalid = |detail: &str| SyncError::Engine(EngineError::TicketInvalid { detail: detail.into() });
        let hex = text.trim().strip_prefix(TICKET_PREFIX).ok_or_else(|| invalid("it is not a relay ticket"))?;
        let json = Zeroizing::new(adiuva_model::hex::decode(hex).ok_or_else(|| invalid("not hex"))?);
        let text: TicketText = serde_json::from_slice(&json).map_err(|_| invalid("not a relay ticket's fields"))?;
        let ticket = adiuva_engine::Ticket::decode(&text.invite).map_err(SyncError::Engine)?;
        Ok(Self {
            server: text.server,
            email: text.email,
            invite: Zeroizing::new(text.invite),
            expires_at: ticket.expires_at,
        })
    }
}

/// Makes a single-use invitation valid for `valid_for` and opens it on the account's relay.
pub fn invite(workspace: &mut Workspace, valid_for: chrono::Duration) -> Result<RelayTicket> {
    let mut relay = Relay::of(workspace)?;
    let ticket = workspace.invite(valid_for)?;
    let proof_hash = blake3::hash(&ticket.relay_proof()).to_hex().to_string();
    let ws = workspace.workspace_id().to_string();
    let invite_id = ticket.invite_id.to_string();
    relay.call(workspace, |client, token| {
        client.create_invite(token, &ws, &invite_id, ticket.expires_at, &proof_hash)
    })?;
    info!(invite = %invite_id, "invitation opened on the relay");
    Ok(RelayTicket {
        server: relay.account.server.clone(),
        email: relay.account.email.clone(),
        invite: Zeroizing::new(ticket.encode()),
        expires_at: ticket.expires_at,
    })
}

/// Waits until a device joins through one of this device's invitations (accepting it, then
/// syncing so the relay holds the addition), or until `until`. The devices that joined.
pub fn wait_for_join(workspace: &mut Workspace, until: DateTime<Utc>) -> Result<Vec<DeviceId>> {
    loop {
        let mut relay = Relay::of(workspace)?;
        let joined = accept_joins(workspace, &mut relay)?;
        if !joined.is_empty() {
            sync::sync_once(workspace, &mut |_| {})?;
            return Ok(joined);
        }
        if Utc::now() >= until || workspace.open_invites()? == 0 {
            return Ok(joined);
        }
        std::thread::sleep(POLL);
    }
}

/// An acceptance waiting to reach its joiner.
#[derive(Serialize, Deserialize)]
struct Undelivered {
    box_key: String,
    acceptance: JoinAcceptance,
}

/// Accepts the join requests posted to this device's open invitations and delivers each
/// acceptance (and any an earlier sync could not deliver). Requests for other devices'
/// invitations are left to them. The devices accepted.
pub(crate) fn accept_joins(workspace: &mut Workspace, relay: &mut Relay) -> Result<Vec<DeviceId>> {
    let mut undelivered = load_undelivered(workspace)?;
    let mut accepted = Vec::new();
    let ws = workspace.workspace_id().to_string();
    if workspace.open_invites()? > 0 {
        let joins = relay.call(workspace, |client, token| client.joins(token, &ws))?;
        for join in joins.into_iter().filter(|join| !join.authorized) {
            let Some(request) = adiuva_model::hex::decode(&join.payload)
                .and_then(|payload| serde_json::from_slice::<JoinRequest>(&payload).ok())
            else {
                warn!(invite = %join.invite_id, "a join request on the relay is not one");
                continue;
            };
            if request.device_id.to_string() != join.device {
                warn!(invite = %join.invite_id, "a join request names another device than the one that posted it");
                continue;
            }
            match workspace.accept_join(&request) {
                Ok(acceptance) => {
                    accepted.push(request.device_id);
                    undelivered.push(Undelivered { box_key: request.box_key.clone(), acceptance });
                    store_undelivered(workspace, &undelivered)?;
                }
                // Another device's invitation, or one this device already answered.
                Err(EngineError::InviteUnknown { .. }) => {}
                Err(error) => warn!(%error, invite = %join.invite_id, "a join request was refused"),
            }
        }
    }
    while let Some(next) = undelivered.first() {
        deliver(workspace, relay, &ws, next)?;
        undelivered.remove(0);
        store_undelivered(workspace, &undelivered)?;
    }
    Ok(accepted)
}

fn load_undelivered(workspace: &Workspace) -> Result<Vec<Undelivered>> {
    let Some(bytes) = workspace.device_setting(UNDELIVERED_SETTING)? else { return Ok(Vec::new()) };
    serde_json::from_slice(&bytes).map_err(|error| {
        SyncError::Engine(EngineError::WorkspaceFormat {
            detail: format!("the acceptances to deliver {}", adiuva_engine::json_error(&error)),
        })
    })
}

fn store_undelivered(workspace: &mut Workspace, undelivered: &[Undelivered]) -> Result<()> {
    if undelivered.is_empty() {
        return Ok(workspace.remove_device_setting(UNDELIVERED_SETTING)?);
    }
    let bytes = serde_json::to_vec(undelivered)
        .map_err(|_| SyncError::Engine(EngineError::Encode { what: "acceptances to deliver" }))?;
    Ok(workspace.set_device_setting(UNDELIVERED_SETTING, &bytes)?)
}

/// Uploads the acceptance sealed to the joiner, names its blob in the joiner's slot, and
/// authorizes the joiner (last: it finds everything in place once it may look).
fn deliver(workspace: &mut Workspace, relay: &mut Relay, ws: &str, undelivered: &Undelivered) -> Result<()> {
    let device = undelivered.acceptance.device_id;
    let box_key = adiuva_model::hex::decode_array::<32>(&undelivered.box_key)
        .ok_or(SyncError::Engine(EngineError::InviteUnauthentic { what: "join request" }))?;
    let mut plain = Zeroizing::new(
        serde_json::to_vec(&undelivered.acceptance)
            .map_err(|_| SyncError::Engine(EngineError::Encode { what: "join acceptance" }))?,
    );
    // Trailing spaces are JSON whitespace: the relay learns a size bucket, not the root's size.
    let bucket = plain.len().max(1024).next_power_of_two();
    plain.resize(bucket, b' ');
    let sealed = identity::seal_to(&box_key, &plain).map_err(EngineError::from)?;
    let mut blob = Vec::with_capacity(5 + sealed.len());
    blob.extend_from_slice(ACCEPTANCE_MAGIC);
    blob.push(ACCEPTANCE_VERSION);
    blob.extend_from_slice(&sealed);
    let entry = relay.call(workspace, |client, token| client.put_blob(token, ws, &blob))?;
    relay.call(workspace, |client, token| {
        client.put_envelope(token, ws, &device, ACCEPTANCE_SLOT, entry.id.as_bytes())
    })?;
    relay.call(workspace, |client, token| client.authorize_device(token, ws, &device))?;
    info!(device = %device.short(), "join accepted and delivered through the relay");
    Ok(())
}

/// Joins the workspace of `ticket` as a new device named `name` in `dir` (empty or missing):
/// signs in to the ticket's account with `password`, posts the join request, waits for the
/// inviter's acceptance (until the ticket expires), creates the workspace and syncs it.
pub fn join(
    dir: &Path,
    protection: KeyProtection,
    ticket: &RelayTicket,
    password: &str,
    name: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<Workspace> {
    let (pending, request) = Workspace::request_join(&ticket.invite, name)?;
    let me = pending.device_id();
    let ws = pending.ticket().workspace_id.to_string();
    let client = RelayClient::new(&ticket.server);
    let mut session = client.sign_in(false, &ticket.email, password, me)?;
    let payload =
        serde_json::to_vec(&request).map_err(|_| SyncError::Engine(EngineError::Encode { what: "join request" }))?;
    let proof = pending.ticket().relay_proof();
    let invite_id = pending.ticket().invite_id.to_string();
    client.post_join(&session.access_token, &invite_id, &proof, &payload, &request.mac)?;
    info!(invite = %invite_id, "join request posted; waiting for the inviting device");
    let blob_id = loop {
        match client.get_envelope(&session.access_token, &ws, &me, ACCEPTANCE_SLOT) {
            Ok(Some(id)) => break id,
            // Not authorized yet, or authorized before the slot was filled: the inviter is at it.
            Ok(None) | Err(SyncError::Relay { code: ErrorCode::RelayDeviceNotAuthorized, .. }) => {}
            Err(SyncError::Relay { code: ErrorCode::RelayTokenExpired, .. }) => {
                session = client.refresh(&session.refresh_token)?;
            }
            Err(SyncError::Relay { retry_after: Some(seconds), .. }) => {
                std::thread::sleep(Duration::from_secs(seconds.min(10)));
            }
            Err(error) if error.is_transient() => {}
            Err(error) => return Err(error),
        }
        if Utc::now() > ticket.expires_at {
            return Err(SyncError::Engine(EngineError::InviteExpired { expired_at: ticket.expires_at.to_rfc3339() }));
        }
        std::thread::sleep(POLL);
    };
    let unauthentic = || SyncError::Engine(EngineError::InviteUnauthentic { what: "acceptance" });
    let blob_id = String::from_utf8(blob_id).map_err(|_| unauthentic())?;
    let blob = client.get_blob(&session.access_token, &ws, &blob_id)?;
    let sealed = blob
        .strip_prefix(ACCEPTANCE_MAGIC.as_slice())
        .and_then(|rest| rest.strip_prefix(&[ACCEPTANCE_VERSION]))
        .ok_or_else(unauthentic)?;
    let plain = pending.unseal(sealed).ok_or_else(unauthentic)?;
    let acceptance: JoinAcceptance = serde_json::from_slice(&plain).map_err(|_| unauthentic())?;
    let mut workspace = pending.complete(dir, protection, &acceptance)?;
    Relay::unstored(client, &ticket.email, session).store(&mut workspace)?;
    sync::sync_once(&mut workspace, progress)?;
    Ok(workspace)
}
