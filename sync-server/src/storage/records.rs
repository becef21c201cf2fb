//! The stored formats of the relay's small records, and the keys they live under. These are
//! storage formats, separate from the API's wire types: each value is a format byte followed by
//! JSON, and a reader refuses a format it does not know.
//!
//! | key | value |
//! |---|---|
//! | `account/EMAIL` | [`Account`] |
//! | `refresh/HASH` | [`RefreshToken`] (HASH: hex BLAKE3 of the token) |
//! | `family/FAMILY` | [`RevokedFamily`] |
//! | `workspace/WS` | [`Workspace`] |
//! | `workspace/WS/device/DEVICE` | [`Device`] |
//! | `workspace/WS/envelope/DEVICE/EPOCH` | opaque bytes (EPOCH zero-padded to 10 digits) |
//! | `workspace/WS/recovery` | [`Recovery`] |
//! | `workspace/WS/challenge/CHALLENGE` | [`Challenge`] |
//! | `workspace/WS/join/INVITE` | [`Join`] |
//! | `invite/INVITE` | [`Invite`] |
//! | `backup/ACCOUNT/ID` | [`Backup`] |
//! | `server/token-secret` | the access tokens' HMAC secret (32 bytes) |

use adiuva_model::api::BillingTier;
use adiuva_model::envelope::DeviceId;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::StorageError;

const FORMAT: u8 = 1;

/// Encodes a record in the current format.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    // Serializing these plain structs cannot fail: no maps with non-string keys, no custom code.
    bytes.extend(serde_json::to_vec(record).unwrap_or_default());
    bytes
}

/// Decodes a record; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT, json)) => serde_json::from_slice(json)
            .map_err(|e| StorageError::Corrupt { what: format!("{what}: {}", e.classify_name()) }),
        _ => Err(StorageError::Corrupt { what: format!("{what}: unknown format") }),
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The error's category only: serde's messages may quote stored values.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub id: Ulid,
    pub email: String,
    /// `argon2id$v=19$m=KIB,t=T,p=P$SALT$HASH` (hex), see `auth::password`.
    pub password_hash: String,
    pub tier: BillingTier,
    /// Seats of a team account (the rate limit is per seat); 1 otherwise.
    pub seats: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefreshToken {
    pub account: Ulid,
    pub email: String,
    pub device: DeviceId,
    /// Every token rotated from one login shares its family; reuse revokes the family.
    pub family: Ulid,
    pub expires_at: DateTime<Utc>,
    /// Set when the token was rotated: presenting it again is reuse.
    pub used: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokedFamily {
    pub revoked_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Workspace {
    pub account: Ulid,
    pub created_at: DateTime<Utc>,
    pub created_by: DeviceId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Device {
    pub added_at: DateTime<Utc>,
    /// The device that authorized it (itself for the creator or a recovery).
    pub added_by: DeviceId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recovery {
    /// The workspace key wrapped by the phrase's key: opaque to the relay.
    pub wrapped_key: Vec<u8>,
    /// An Ed25519 public key derived from the phrase's key; a device proves knowledge of the
    /// phrase by signing a challenge with its private half.
    pub verifier: [u8; 32],
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Challenge {
    pub device: DeviceId,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invite {
    pub workspace: String,
    pub account: Ulid,
    pub created_by: DeviceId,
    pub expires_at: DateTime<Utc>,
    /// BLAKE3 of the proof a joiner must present (itself derived from the ticket secret).
    pub proof_hash: [u8; 32],
    pub used: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Join {
    pub invite: String,
    pub device: DeviceId,
    /// The joiner's public keys and whatever else the inviter needs: opaque to the relay.
    pub payload: Vec<u8>,
    /// A MAC over the payload by a key derived from the ticket secret, checked by the inviter.
    pub mac: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    pub id: Ulid,
    pub workspace: String,
    pub version: u32,
    pub timestamp: DateTime<Utc>,
    pub checksum: String,
    pub chunk_count: u32,
    pub size_bytes: u64,
    pub blob_ids: Vec<String>,
}

pub fn account_key(email: &str) -> String {
    format!("account/{email}")
}

pub fn refresh_key(token_hash: &str) -> String {
    format!("refresh/{token_hash}")
}

pub fn family_key(family: Ulid) -> String {
    format!("family/{family}")
}

pub fn workspace_key(workspace: &str) -> String {
    format!("workspace/{workspace}")
}

pub fn devices_prefix(workspace: &str) -> String {
    format!("workspace/{workspace}/device/")
}

pub fn device_key(workspace: &str, device: &DeviceId) -> String {
    format!("workspace/{workspace}/device/{device}")
}

pub fn envelopes_prefix(workspace: &str, device: &DeviceId) -> String {
    format!("workspace/{workspace}/envelope/{device}/")
}

pub fn envelope_key(workspace: &str, device: &DeviceId, epoch: u32) -> String {
    format!("workspace/{workspace}/envelope/{device}/{epoch:010}")
}

pub fn recovery_key(workspace: &str) -> String {
    format!("workspace/{workspace}/recovery")
}

pub fn challenge_key(workspace: &str, challenge: &str) -> String {
    format!("workspace/{workspace}/challenge/{challenge}")
}

pub fn joins_prefix(workspace: &str) -> String {
    format!("workspace/{workspace}/join/")
}

pub fn join_key(workspace: &str, invite: &str) -> String {
    format!("workspace/{workspace}/join/{invite}")
}

pub fn invite_key(invite: &str) -> String {
    format!("invite/{invite}")
}

pub fn backups_prefix(account: Ulid) -> String {
    format!("backup/{account}/")
}

pub fn backup_key(account: Ulid, id: Ulid) -> String {
    format!("backup/{account}/{id}")
}

pub const TOKEN_SECRET_KEY: &str = "server/token-secret";
