//! `adiuva-server`, the encrypted relay: accounts, blind ciphertext storage, restore points,
//! tiers and the cloud agent API (see `ARCHITECTURE.md`).
//!
//! It will store only what the engine's chunk format seals (opaque, content-addressed blobs)
//! and must never hold a key that decrypts user data. Nothing is built here yet: the relay is the
//! next piece of work on top of the engine's log, keys and store.
