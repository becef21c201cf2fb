//! `adiuva-replay`: audit, verify and time-travel a workspace or a relay backup, read-only.
//!
//! Nothing is built here yet. It will open the engine's store read-only and check every chunk's
//! tag and signature, every Automerge hash and dependency, and every envelope.
