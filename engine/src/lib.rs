//! Adiuva's local-first core: the end-to-end-encrypted, event-sourced Automerge log.
//!
//! Every local action is an event: one Automerge change whose commit message is the event's
//! [`Envelope`](adiuva_model::Envelope) (who, which device, when, why) and whose operations are
//! its effect. The [`Workspace`] keeps its documents sealed in a [`store::ChunkStore`] and
//! returns from a commit only once the change is durable.
//!
//! ```no_run
//! use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
//! use adiuva_model::{Actor, Collection, EventKind, RecordId};
//! # fn main() -> Result<(), adiuva_engine::Error> {
//! let passphrase = zeroize::Zeroizing::new("correct horse battery staple".to_owned());
//! let mut workspace = Workspace::init("/tmp/ws".as_ref(), KeyProtection::Passphrase(passphrase), "laptop")?;
//! let mut fields = serde_json::Map::new();
//! fields.insert("title".into(), "Renew passport".into());
//! workspace.commit(
//!     EventDraft::new(EventKind::new("task.created").unwrap(), Actor::User),
//!     Effect::CreateRecord { collection: Collection::Tasks, id: RecordId::new(), fields },
//! )?;
//! # Ok(()) }
//! ```
//!
//! Design decisions, and why:
//! - **Documents, not one log.** A root document plus one per collection (sharded by month for
//!   activity): sync, load and compaction cost stay proportional to what a document holds.
//! - **Records in maps keyed by ULID**, long text as Automerge text: list appends slow down
//!   with length, and text merges character by character.
//! - **One frame** ([`chunk`]) for everything stored: XChaCha20-Poly1305 under the device's own
//!   storage key, with the workspace, kind and place bound as associated data. What other devices will read (changes,
//!   snapshots) is a *chunk*, with the authoring device's Ed25519 signature inside the
//!   ciphertext; what never leaves the device (manifests, read views) is a *local blob*,
//!   sealed the same way but not signed.
//! - **Authorship travels with each change** ([`authorship`]): the writing device's
//!   attestation, kept verbatim through compaction, export and relaying, and every change from
//!   elsewhere checked against the signed device list in the root document before it applies,
//!   so no copy of the log needs its carrier to be trusted.
//! - **A manifest per document** ([`manifest`]) rewritten atomically with each chunk: the store
//!   knows what it must hold, so loss and truncation are detected, not skipped.
//! - **Read views** ([`view`]): each collection's records materialized beside its log, in the
//!   same batch as every commit, so reads do not wait for Automerge to replay the history.
//! - **A narrow storage trait** ([`store::ChunkStore`]) with an explicit durability barrier,
//!   because sled's own `flush` is not durable and sled itself may one day be replaced.

pub mod authorship;
pub mod chunk;
mod cores;
pub mod crypto;
mod encode;
pub mod error;
pub mod event_index;
pub mod identity;
pub mod keystore;
pub mod manifest;
pub mod records;
pub mod recovery;
pub mod store;
pub mod untrusted;
pub mod view;
pub mod workspace;

pub use cores::Spread;
pub use error::{Error, Result, json_error};
pub use keystore::KeyProtection;
pub use records::{Effect, FieldConflict};
pub use workspace::{
    CommitObserver, Cursor, DeviceInfo, DocumentAudit, DocumentStatus, EventDraft, EventFilter, FollowedEvent,
    HeldUnit, Imported, JoinAcceptance, JoinRequest, LoggedEvent, OpenedPoint, PendingJoin, ROOT_DOCUMENT, RefusedUnit,
    RelayState, Removal, RestorePoint, Ticket, UnitImport, UnsettledUnits, Upgrade, Workspace, WorkspaceOptions,
    WorkspaceStatus, epoch_faults, fields_of, is_restore_point, open_restore_point,
};
