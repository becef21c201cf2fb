//! Request and response types shared by the desktop app, the relay server and the UI: chat,
//! execution plans, plugin manifests and grants, backups and billing tiers.
//!
//! These are wire types: fields are added as optional, never renamed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::record::{Collection, RecordId};

/// How the orchestrator answers a chat message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// A response and the actions already taken.
    #[default]
    Direct,
    /// An execution plan the user approves or edits before anything happens.
    Plan,
}

/// A chat message to the orchestrator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatRequest {
    pub message: String,
    #[serde(default)]
    pub context: ChatContext,
    #[serde(default)]
    pub execution_mode: ExecutionMode,
}

/// What the device tells the orchestrator about the person's workspace for one chat turn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatContext {
    #[serde(default)]
    pub user_profile: BTreeMap<String, String>,
    #[serde(default)]
    pub relevant_documents: Vec<ContextDocument>,
    #[serde(default)]
    pub recent_tasks: Vec<ContextTask>,
    #[serde(default)]
    pub conversation_history: Vec<ChatMessage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContextDocument {
    pub collection: Collection,
    pub id: RecordId,
    pub title: String,
    pub snippet: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContextTask {
    pub id: RecordId,
    pub title: String,
    pub status: crate::record::TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<chrono::NaiveDate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    User,
    Assistant,
    System,
    Tool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// The orchestrator's answer: in direct mode a response and actions, in plan mode a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatResponse {
    pub response: String,
    #[serde(default)]
    pub actions: Vec<PlanStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ExecutionPlan>,
}

/// What one plan step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    CreateRecord,
    UpdateRecord,
    DeleteRecord,
    IndexDocument,
    SendNotification,
}

/// One step of an execution plan. `data_from_step` may only point to an earlier step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanStep {
    /// Position in the plan, from 0.
    pub index: u32,
    pub action: PlanAction,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// A prompt template the server fills; only its id ever reaches a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_from_step: Option<u32>,
}

/// A plan the orchestrator proposes and the user approves before it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionPlan {
    #[schemars(schema_with = "crate::envelope::ulid_field")]
    pub id: Ulid,
    pub title: String,
    pub steps: Vec<PlanStep>,
    pub created_at: DateTime<Utc>,
}

/// What a plugin may be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PermissionKind {
    ReadFolder,
    ReadEmail,
    ReadCalendar,
    ReadBrowserHistory,
}

/// One permission a plugin asks for, on one resource, with the reason shown to the person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PermissionRequest {
    #[serde(rename = "type")]
    pub kind: PermissionKind,
    /// A path, a mail account, a calendar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub reason: String,
}

/// A batch agent's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginManifest {
    pub name: String,
    pub description: String,
    pub version: String,
    pub permissions: Vec<PermissionRequest>,
    /// A cron expression, when the plugin runs on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// A permission the person granted to a plugin (a grant is an event in the log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PermissionGrant {
    pub plugin: String,
    pub permission: PermissionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub granted_at: DateTime<Utc>,
}

/// A restore point: an encrypted, compacted snapshot held by the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackupMetadata {
    #[schemars(schema_with = "crate::envelope::ulid_field")]
    pub id: Ulid,
    pub version: u32,
    pub timestamp: DateTime<Utc>,
    /// BLAKE3 of the ciphertext, hex.
    pub checksum: String,
    pub chunk_count: u32,
    pub size_bytes: u64,
    /// The relay workspace the restore point belongs to (absent in restore points made before
    /// the relay held workspaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The blobs (hex BLAKE3 ids of ciphertext) that make up the restore point; listed by the
    /// relay's latest-backup answer, left out of its history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blob_ids: Vec<String>,
}

/// The subscription tiers of the relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingTier {
    #[default]
    Free,
    Pro,
    Power,
    Team,
}

impl BillingTier {
    /// Requests per minute (per seat for `Team`).
    pub fn requests_per_minute(self) -> u32 {
        match self {
            BillingTier::Free => 20,
            BillingTier::Pro => 60,
            BillingTier::Power => 120,
            BillingTier::Team => 200,
        }
    }

    /// Relay and backup storage in bytes; `None` is unlimited. Free syncs peer-to-peer only.
    pub fn storage_quota_bytes(self) -> Option<u64> {
        const GB: u64 = 1_000_000_000;
        match self {
            BillingTier::Free => Some(0),
            BillingTier::Pro => Some(5 * GB),
            BillingTier::Power => Some(50 * GB),
            BillingTier::Team => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_carry_the_rate_limits_and_quotas_of_the_plan() {
        const GB: u64 = 1_000_000_000;
        for (tier, per_minute, quota) in [
            (BillingTier::Free, 20, Some(0)),
            (BillingTier::Pro, 60, Some(5 * GB)),
            (BillingTier::Power, 120, Some(50 * GB)),
            (BillingTier::Team, 200, None),
        ] {
            assert_eq!(tier.requests_per_minute(), per_minute, "{tier:?}");
            assert_eq!(tier.storage_quota_bytes(), quota, "{tier:?}");
        }
    }
}
