//! Adiuva's contracts: the types every other part of the product agrees on.
//!
//! - [`envelope`]: the event envelope every change in the log carries (who, which device, when,
//!   why), versioned so that a newer envelope is refused instead of guessed at.
//! - [`record`]: the records kept in the workspace's collections (tasks, calendar events, notes,
//!   memory facts) and the collections themselves.
//! - [`api`]: request and response types of the chat, plan, plugin, backup and billing APIs.
//! - [`error`]: the stable error codes that leave a process (HTTP bodies, exit reports, audits).
//! - [`schema`]: JSON Schema export of every public type, from which the UI's TypeScript types
//!   are generated.
//!
//! ```
//! use adiuva_model::envelope::{Actor, Envelope};
//! let actor: Actor = "plan:01JDQ6R5X00000000000000000/step:2".parse().unwrap();
//! assert_eq!(actor.to_string(), "plan:01JDQ6R5X00000000000000000/step:2");
//! ```
//!
//! Design decisions:
//! - No I/O, no async, no crypto: this crate is linked by the UI type generator, the relay
//!   server and the fuzzers alike, and must stay cheap to build and safe to depend on.
//! - Wire and storage forms are explicit: identifiers serialize as their canonical text
//!   (ULID, hex), times as RFC 3339, and the envelope carries its own version number.

pub mod api;
pub mod envelope;
pub mod error;
pub mod hex;
pub mod record;
pub mod schema;

pub use envelope::{Actor, DeviceId, Envelope, EventId, EventKind, Subject};
pub use error::ErrorCode;
pub use record::{Collection, RecordId, Spread};
