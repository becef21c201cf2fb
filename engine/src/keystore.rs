//! The workspace key at rest.
//!
//! The store holds two records outside the chunk format:
//! - the **header** (cleartext JSON, versioned): workspace id, this device's id, and how the
//!   local keyring is protected;
//! - the **local keyring** (sealed): every workspace-key epoch this device holds, the device's
//!   own secret keys, and its **storage key**: a random key, this device's alone, that
//!   everything in its store is sealed under (so a device removed from the workspace, which
//!   keeps the old workspace keys, still cannot read this one's store). All of it is encrypted
//!   under a key-encryption key (KEK).
//!
//! The KEK comes either from the OS keyring (a random 32-byte secret stored there), or from the
//! person's passphrase, NFKC-normalized, through Argon2id (t=3, m=64 MiB, p=1). The keyring's
//! associated data is the header itself, so an altered header makes the keyring unopenable
//! rather than misread; the Argon2id parameters, read before anything is authenticated, are
//! bounded both ways.
//!
//! Older formats still open, and are rewritten in the current one at their first open
//! ([`Unlocked::outdated`]):
//! - header format 1 hashed the passphrase as typed: a passphrase that NFKC changes is tried in
//!   its normalized form first, then as typed;
//! - keyring format 1 held no storage key: the store was sealed under keys derived from the
//!   workspace key. Opening one gives the device a storage key, and the keyring keeps saying
//!   that the store may hold blobs under the derived keys until the workspace is upgraded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::crypto::{self, KeyPurpose, SecretKey, WorkspaceKey};
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;

/// Format 2: the passphrase is NFKC-normalized before hashing. Format 1 still reads.
const HEADER_FORMAT: u32 = 2;
/// Format 2 added the device's storage key and the flags. Format 1 still reads.
const KEYRING_FORMAT: u8 = 2;
const KEYRING_AAD_DOMAIN: &[u8] = b"adiuva local keyring v1\0";
const KEYRING_SERVICE: &str = "adiuva";
/// Keyring flag: the store may still hold blobs sealed under keys derived from the workspace key.
const FLAG_DERIVED_STORAGE: u8 = 1;

/// Argon2id cost for passphrase-derived keys. Headers carrying less are refused: they could
/// only come from tampering.
pub(crate) const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub(crate) const ARGON2_ITERATIONS: u32 = 3;
pub(crate) const ARGON2_PARALLELISM: u32 = 1;
/// The most a header may ask for (8× today's memory, and iterations and lanes to match): the
/// header is read before anything is authenticated, and a tampered one must not make opening
/// hang or exhaust memory.
const ARGON2_MAX_MEMORY_KIB: u32 = 8 * ARGON2_MEMORY_KIB;
const ARGON2_MAX_ITERATIONS: u32 = 8;
const ARGON2_MAX_PARALLELISM: u32 = 8;

/// The shortest passphrase a new workspace accepts, in characters after normalization.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// How a new workspace's key is to be protected on this device.
pub enum KeyProtection {
    /// Wrapped by a key derived from this passphrase.
    Passphrase(Zeroizing<String>),
    /// Wrapped by a key already derived from a passphrase ([`KeyProtection::derived`]).
    PassphraseKey(PassphraseKey),
    /// Wrapped by a random key kept in the OS keyring (Secret Service on Linux).
    OsKeyring,
}

impl KeyProtection {
    /// The same protection with a passphrase's key derived now (Argon2id, the slow part), so
    /// that it can be done ahead, beside other work: a restore derives it while the relay
    /// checks the account's password. Any other protection is returned as it is.
    pub fn derived(self) -> Result<Self> {
        match self {
            KeyProtection::Passphrase(passphrase) => {
                Ok(KeyProtection::PassphraseKey(PassphraseKey::derive(&passphrase)?))
            }
            other => Ok(other),
        }
    }
}

/// A key derived from a passphrase under a fresh salt, with today's Argon2id cost.
pub struct PassphraseKey {
    salt: [u8; 16],
    kek: SecretKey,
}

/// Its key is a [`SecretKey`], which wipes itself; the salt is no secret.
impl zeroize::ZeroizeOnDrop for PassphraseKey {}

impl PassphraseKey {
    fn derive(passphrase: &str) -> Result<Self> {
        let passphrase = normalized(passphrase);
        if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(Error::PassphraseTooShort { min: MIN_PASSPHRASE_CHARS });
        }
        let salt: [u8; 16] = crypto::random_bytes()?;
        let kek = passphrase_kek(&passphrase, &salt, ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM)?;
        Ok(Self { salt, kek })
    }

    /// The header's protection and the key it names.
    fn protection(self) -> (Protection, SecretKey) {
        let protection = Protection::Passphrase {
            salt: adiuva_model::hex::encode(&self.salt),
            memory_kib: ARGON2_MEMORY_KIB,
            iterations: ARGON2_ITERATIONS,
            parallelism: ARGON2_PARALLELISM,
        };
        (protection, self.kek)
    }
}

/// The cleartext header.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u32,
    pub workspace_id: ulid::Ulid,
    pub device_id: adiuva_model::DeviceId,
    pub protection: Protection,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protection {
    Passphrase {
        /// Hex of the 16-byte salt.
        salt: String,
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    },
    OsKeyring {
        service: String,
        account: String,
    },
}

impl Header {
    pub fn decode(bytes: &[u8]) -> Result<Header> {
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| Error::WorkspaceFormat { detail: e.to_string() })?;
        if !(1..=HEADER_FORMAT).contains(&header.format) {
            return Err(Error::WorkspaceFormat {
                detail: format!("format {} (this build reads 1 to {HEADER_FORMAT})", header.format),
            });
        }
        Ok(header)
    }

    fn encode(&self) -> Result<Vec<u8>> {
        crate::encode::json(self, "workspace header")
    }
}

/// The local keyring, unlocked, with what it takes to seal it again.
pub struct Keyring {
    /// The header to store with it (its associated data).
    header: Vec<u8>,
    kek: SecretKey,
    /// Ascending by epoch; the last is current.
    keys: Vec<WorkspaceKey>,
    storage_key: SecretKey,
    derived_storage: bool,
}

/// Its secrets are [`SecretKey`]s and [`WorkspaceKey`]s, which wipe themselves.
impl zeroize::ZeroizeOnDrop for Keyring {}

impl Keyring {
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// This device's own key for everything it stores.
    pub fn storage_key(&self) -> &SecretKey {
        &self.storage_key
    }

    /// The current workspace key.
    pub fn workspace_key(&self) -> Option<&WorkspaceKey> {
        self.keys.last()
    }

    /// Every workspace key epoch this device holds, oldest first.
    pub fn workspace_keys(&self) -> &[WorkspaceKey] {
        &self.keys
    }

    /// The workspace key of `epoch`, if this device holds it.
    pub fn epoch_key(&self, epoch: u32) -> Option<&SecretKey> {
        self.keys.iter().find(|key| key.epoch == epoch).map(|key| &key.key)
    }

    /// Adds an epoch this device learned of (from a key rotation or a recovery); the caller
    /// stores the keyring. An epoch already held is kept as it is.
    pub fn add_epoch(&mut self, key: WorkspaceKey) {
        if self.epoch_key(key.epoch).is_none() {
            self.keys.push(key);
            self.keys.sort_by_key(|key| key.epoch);
        }
    }

    /// Takes back an epoch added for an event that did not become durable.
    pub fn remove_epoch(&mut self, epoch: u32) {
        self.keys.retain(|key| key.epoch != epoch);
    }

    /// The storage keys derived from each epoch's workspace key, which keyring format 1 sealed
    /// the store under; empty once the store has moved to the device's storage key.
    pub fn derived_storage_keys(&self) -> BTreeMap<u32, SecretKey> {
        if !self.derived_storage {
            return BTreeMap::new();
        }
        self.keys.iter().map(|key| (key.epoch, key.key.derive(KeyPurpose::LocalStorage))).collect()
    }

    /// Records that nothing in the store is sealed under a derived key any more.
    pub fn storage_moved(&mut self) {
        self.derived_storage = false;
    }

    /// The sealed keyring, to store with [`header`](Self::header).
    pub fn seal(&self, identity: &DeviceIdentity) -> Result<Vec<u8>> {
        Ok(crypto::seal(&self.kek, &keyring_aad(&self.header), &self.encode(identity))?)
    }

    fn encode(&self, identity: &DeviceIdentity) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(100 + self.keys.len() * 36));
        out.push(KEYRING_FORMAT);
        out.push(if self.derived_storage { FLAG_DERIVED_STORAGE } else { 0 });
        out.extend_from_slice(identity.signing_secret().as_ref());
        out.extend_from_slice(identity.box_secret().as_ref());
        out.extend_from_slice(self.storage_key.as_bytes());
        out.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        for key in &self.keys {
            out.extend_from_slice(&key.epoch.to_le_bytes());
            out.extend_from_slice(key.key.as_bytes());
        }
        out
    }
}

/// What unlocking (or creating) gives: this device's identity and its keyring.
pub struct Unlocked {
    pub identity: DeviceIdentity,
    pub keyring: Keyring,
    /// The stored header and keyring are missing (a new workspace) or an older format: store
    /// [`Keyring::header`] and [`Keyring::seal`] before sealing anything under the storage key.
    pub outdated: bool,
}

/// Creates a workspace's keys: a first workspace key (epoch 1), this device's identity and
/// storage key, and the protection of all of them.
pub fn create(workspace_id: ulid::Ulid, protection: KeyProtection) -> Result<Unlocked> {
    let keys = vec![WorkspaceKey { epoch: 1, key: SecretKey::random()? }];
    create_for(workspace_id, protection, DeviceIdentity::generate()?, keys)
}

/// The keys of a device joining an existing workspace: its identity (made when it asked to
/// join), the workspace key epochs sealed to it, a storage key of its own and their protection.
pub fn create_for(
    workspace_id: ulid::Ulid,
    protection: KeyProtection,
    identity: DeviceIdentity,
    mut keys: Vec<WorkspaceKey>,
) -> Result<Unlocked> {
    keys.sort_by_key(|key| key.epoch);
    let device_id = identity.device_id();
    let (protection, kek) = match protection {
        KeyProtection::Passphrase(passphrase) => PassphraseKey::derive(&passphrase)?.protection(),
        KeyProtection::PassphraseKey(key) => key.protection(),
        KeyProtection::OsKeyring => {
            let account = format!("workspace {workspace_id} device {}", device_id.short());
            let kek = SecretKey::random()?;
            let entry = os_keyring_entry(KEYRING_SERVICE, &account)?;
            entry.set_secret(kek.as_bytes()).map_err(|e| Error::KeyringUnavailable { detail: e.to_string() })?;
            // Read it back: some keyrings accept writes they cannot return.
            let stored =
                Zeroizing::new(entry.get_secret().map_err(|e| Error::KeyringUnavailable { detail: e.to_string() })?);
            if stored.as_slice() != kek.as_bytes() {
                return Err(Error::KeyringUnavailable { detail: "the keyring returned a different secret".into() });
            }
            (Protection::OsKeyring { service: KEYRING_SERVICE.into(), account }, kek)
        }
    };
    let header = Header { format: HEADER_FORMAT, workspace_id, device_id, protection }.encode()?;
    let keyring = Keyring { header, kek, keys, storage_key: SecretKey::random()?, derived_storage: false };
    Ok(Unlocked { identity, keyring, outdated: true })
}

/// Opens the sealed keyring. `passphrase` is asked for only when the header says it is needed.
pub fn unlock(
    header_bytes: &[u8],
    sealed_keyring: &[u8],
    passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<Unlocked> {
    let header = Header::decode(header_bytes)?;
    let aad = keyring_aad(header_bytes);
    let (kek, plaintext) = match &header.protection {
        Protection::Passphrase { salt, memory_kib, iterations, parallelism } => {
            check_cost(*memory_kib, *iterations, *parallelism)?;
            let salt: [u8; 16] = adiuva_model::hex::decode_array(salt)
                .ok_or_else(|| Error::WorkspaceFormat { detail: "bad salt".into() })?;
            let typed = passphrase().ok_or(Error::PassphraseRequired)?;
            let passphrase = normalized(&typed);
            let derive = |passphrase: &str| passphrase_kek(passphrase, &salt, *memory_kib, *iterations, *parallelism);
            let kek = derive(&passphrase)?;
            let plaintext = match crypto::open(&kek, &aad, sealed_keyring) {
                Ok(plaintext) => plaintext,
                // Header format 1 hashed the passphrase as typed.
                Err(_) if header.format == 1 && *passphrase != *typed => {
                    crypto::open(&derive(&typed)?, &aad, sealed_keyring).map_err(|_| Error::WrongPassphrase)?
                }
                Err(_) => return Err(Error::WrongPassphrase),
            };
            // Either way, the keyring is sealed again under the normalized passphrase's key.
            (kek, plaintext)
        }
        Protection::OsKeyring { service, account } => {
            let secret = Zeroizing::new(os_keyring_entry(service, account)?.get_secret().map_err(|e| match e {
                keyring_core::Error::NoEntry => Error::KeyringEntryMissing { detail: format!("{service}/{account}") },
                other => Error::KeyringUnavailable { detail: other.to_string() },
            })?);
            let kek = SecretKey::from_slice(&secret).ok_or_else(|| Error::KeyringEntryMissing {
                detail: "the keyring entry is not a 32-byte key".into(),
            })?;
            let plaintext = crypto::open(&kek, &aad, sealed_keyring).map_err(|_| Error::KeyringEntryMissing {
                detail: "the keyring's key does not open this workspace".into(),
            })?;
            (kek, plaintext)
        }
    };
    let decoded = decode_keyring(&Zeroizing::new(plaintext))?;
    if decoded.identity.device_id() != header.device_id {
        return Err(Error::WorkspaceFormat { detail: "the keyring belongs to another device".into() });
    }
    let outdated = header.format < HEADER_FORMAT || decoded.storage.is_none();
    let header_bytes = if header.format < HEADER_FORMAT {
        Header { format: HEADER_FORMAT, ..header }.encode()?
    } else {
        header_bytes.to_vec()
    };
    let (storage_key, derived_storage) = match decoded.storage {
        Some(storage) => storage,
        // Keyring format 1: the store is sealed under the derived keys; new blobs go under a
        // storage key of the device's own from now on.
        None => (SecretKey::random()?, true),
    };
    let keyring = Keyring { header: header_bytes, kek, keys: decoded.keys, storage_key, derived_storage };
    Ok(Unlocked { identity: decoded.identity, keyring, outdated })
}

/// A passphrase in Unicode normal form NFKC, so the same words typed on another keyboard or
/// system give the same key. Sized up front: no reallocation leaves a copy behind.
fn normalized(passphrase: &str) -> Zeroizing<String> {
    let length = passphrase.nfkc().map(char::len_utf8).sum();
    let mut out = Zeroizing::new(String::with_capacity(length));
    out.extend(passphrase.nfkc());
    out
}

fn check_cost(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<()> {
    let within = (ARGON2_MEMORY_KIB..=ARGON2_MAX_MEMORY_KIB).contains(&memory_kib)
        && (ARGON2_ITERATIONS..=ARGON2_MAX_ITERATIONS).contains(&iterations)
        && (ARGON2_PARALLELISM..=ARGON2_MAX_PARALLELISM).contains(&parallelism);
    if within {
        return Ok(());
    }
    Err(Error::KeyDerivationCost {
        detail: format!(
            "m={memory_kib} KiB, t={iterations}, p={parallelism}; accepted: m {ARGON2_MEMORY_KIB}..={ARGON2_MAX_MEMORY_KIB}, \
             t {ARGON2_ITERATIONS}..={ARGON2_MAX_ITERATIONS}, p {ARGON2_PARALLELISM}..={ARGON2_MAX_PARALLELISM}"
        ),
    })
}

pub(crate) fn passphrase_kek(
    passphrase: &str,
    salt: &[u8; 16],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<SecretKey> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32))
        .map_err(|e| Error::KeyDerivationCost { detail: e.to_string() })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = SecretKey::from_bytes([0; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, kek.as_mut_bytes())
        .map_err(|e| Error::KeyDerivationCost { detail: format!("key derivation: {e}") })?;
    Ok(kek)
}

/// A secret of this device (an API key) in the OS keyring, under `service`/`account`.
/// `Err(KeyringUnavailable)` where there is no keyring (then the caller keeps it in the
/// sealed device settings instead). Call it on a blocking thread: it may prompt.
pub fn store_os_secret(service: &str, account: &str, secret: &[u8]) -> Result<()> {
    os_keyring_entry(service, account)?
        .set_secret(secret)
        .map_err(|e| Error::KeyringUnavailable { detail: e.to_string() })
}

/// The secret stored by [`store_os_secret`], `None` if there is none.
pub fn load_os_secret(service: &str, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match os_keyring_entry(service, account)?.get_secret() {
        Ok(secret) => Ok(Some(Zeroizing::new(secret))),
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(e) => Err(Error::KeyringUnavailable { detail: e.to_string() }),
    }
}

/// Removes the secret stored by [`store_os_secret`] (nothing if there is none).
pub fn delete_os_secret(service: &str, account: &str) -> Result<()> {
    match os_keyring_entry(service, account)?.delete_credential() {
        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
        Err(e) => Err(Error::KeyringUnavailable { detail: e.to_string() }),
    }
}

fn os_keyring_entry(service: &str, account: &str) -> Result<keyring_core::Entry> {
    let unavailable = |e: keyring_core::Error| Error::KeyringUnavailable { detail: e.to_string() };
    let store = zbus_secret_service_keyring_store::Store::new().map_err(unavailable)?;
    let store: std::sync::Arc<keyring_core::CredentialStore> = store;
    keyring_core::Entry::new_in_store(&store, service, account).map_err(unavailable)
}

fn keyring_aad(header: &[u8]) -> Vec<u8> {
    [KEYRING_AAD_DOMAIN, header].concat()
}

/// A keyring's contents. `storage` is the device's storage key and whether the store may still
/// hold blobs under derived keys; `None` in format 1, which had no storage key.
struct Decoded {
    identity: DeviceIdentity,
    keys: Vec<WorkspaceKey>,
    storage: Option<(SecretKey, bool)>,
}

/// Decodes a keyring without leaving copies of its secrets behind: every key is read straight
/// from the (zeroized) plaintext into the type that wipes it.
fn decode_keyring(bytes: &[u8]) -> Result<Decoded> {
    let bad = |detail: &str| Error::WorkspaceFormat { detail: format!("local keyring: {detail}") };
    let mut reader = Reader(bytes);
    let format = reader.take(1)?[0];
    let flags = match format {
        1 => 0,
        KEYRING_FORMAT => reader.take(1)?[0],
        newer => return Err(bad(&format!("format {newer} is newer than this build reads ({KEYRING_FORMAT})"))),
    };
    let identity =
        DeviceIdentity::from_secret_slices(reader.take(32)?, reader.take(32)?).ok_or_else(|| bad("identity"))?;
    let storage = match format {
        1 => None,
        _ => Some((reader.key()?, flags & FLAG_DERIVED_STORAGE != 0)),
    };
    let count = reader.take(2)?;
    let count = u16::from_le_bytes([count[0], count[1]]);
    let mut keys = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let epoch = reader.take(4)?;
        let epoch = u32::from_le_bytes([epoch[0], epoch[1], epoch[2], epoch[3]]);
        keys.push(WorkspaceKey { epoch, key: reader.key()? });
    }
    if !reader.0.is_empty() || keys.is_empty() {
        return Err(bad("trailing bytes or no key"));
    }
    keys.sort_by_key(|key| key.epoch);
    Ok(Decoded { identity, keys, storage })
}

/// Reads a keyring's fields in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::WorkspaceFormat { detail: "local keyring: truncated".into() });
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn key(&mut self) -> Result<SecretKey> {
        SecretKey::from_slice(self.take(32)?)
            .ok_or_else(|| Error::WorkspaceFormat { detail: "local keyring: truncated key".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSPHRASE: &str = "correct horse";

    fn passphrase(text: &str) -> KeyProtection {
        KeyProtection::Passphrase(Zeroizing::new(text.to_owned()))
    }

    fn given(text: &str) -> impl FnOnce() -> Option<Zeroizing<String>> {
        let text = text.to_owned();
        move || Some(Zeroizing::new(text))
    }

    fn sealed(created: &Unlocked) -> Vec<u8> {
        created.keyring.seal(&created.identity).unwrap()
    }

    #[test]
    fn passphrase_unlocks_and_a_wrong_one_is_a_typed_error() {
        let created = create(ulid::Ulid::new(), passphrase(PASSPHRASE)).unwrap();
        let header = created.keyring.header();
        let unlocked = unlock(header, &sealed(&created), given(PASSPHRASE)).unwrap();
        assert!(!unlocked.outdated);
        assert_eq!(unlocked.identity.device_id(), created.identity.device_id());
        assert_eq!(unlocked.keyring.storage_key().as_bytes(), created.keyring.storage_key().as_bytes());
        assert_eq!(
            unlocked.keyring.workspace_key().unwrap().key.as_bytes(),
            created.keyring.workspace_key().unwrap().key.as_bytes()
        );
        // The storage key is the device's own, not derived from the workspace key.
        let derived = created.keyring.workspace_key().unwrap().key.derive(KeyPurpose::LocalStorage);
        assert_ne!(created.keyring.storage_key().as_bytes(), derived.as_bytes());
        assert!(created.keyring.derived_storage_keys().is_empty());
        assert!(matches!(unlock(header, &sealed(&created), given("wrong passphrase")), Err(Error::WrongPassphrase)));
        assert!(matches!(unlock(header, &sealed(&created), || None), Err(Error::PassphraseRequired)));
    }

    #[test]
    fn altered_header_or_keyring_never_unlocks() {
        let created = create(ulid::Ulid::new(), passphrase(PASSPHRASE)).unwrap();
        let mut keyring = sealed(&created);
        keyring[30] ^= 1;
        assert!(matches!(unlock(created.keyring.header(), &keyring, given(PASSPHRASE)), Err(Error::WrongPassphrase)));
        let header = String::from_utf8(created.keyring.header().to_vec()).unwrap();
        let weakened = header.replace("65536", "1024");
        assert!(matches!(
            unlock(weakened.as_bytes(), &sealed(&created), given(PASSPHRASE)),
            Err(Error::KeyDerivationCost { .. })
        ));
        assert!(matches!(
            unlock(b"{not json", &sealed(&created), given(PASSPHRASE)),
            Err(Error::WorkspaceFormat { .. })
        ));
    }

    #[test]
    fn a_tampered_header_cannot_ask_for_unbounded_key_derivation() {
        let created = create(ulid::Ulid::new(), passphrase(PASSPHRASE)).unwrap();
        let header = String::from_utf8(created.keyring.header().to_vec()).unwrap();
        for (field, value) in [
            ("memory_kib\":65536", "memory_kib\":4294967295"),
            ("iterations\":3", "iterations\":4294967295"),
            ("parallelism\":1", "parallelism\":16777215"),
        ] {
            let tampered = header.replace(field, value);
            assert_ne!(tampered, header);
            // Refused before any key derivation runs: the passphrase is never even asked for.
            let result = unlock(tampered.as_bytes(), &sealed(&created), || panic!("asked for the passphrase"));
            assert!(matches!(result, Err(Error::KeyDerivationCost { .. })), "{field}");
        }
    }

    #[test]
    fn passphrases_are_normalized_and_a_short_one_is_refused() {
        // "é" precomposed (U+00E9) when created, decomposed (e + U+0301) when typed again.
        let created = create(ulid::Ulid::new(), passphrase("caf\u{E9} au lait")).unwrap();
        unlock(created.keyring.header(), &sealed(&created), given("cafe\u{301} au lait")).unwrap();
        // The minimum counts characters after normalization.
        assert!(matches!(create(ulid::Ulid::new(), passphrase("seven c")), Err(Error::PassphraseTooShort { min: 8 })));
        assert!(create(ulid::Ulid::new(), passphrase("\u{FB01}\u{FB01}\u{FB01}\u{FB01}")).is_ok());
    }

    #[test]
    fn a_passphrase_key_derived_ahead_protects_as_the_passphrase_does() {
        let derived = passphrase("caf\u{E9} au lait").derived().unwrap();
        assert!(matches!(derived, KeyProtection::PassphraseKey(_)));
        let created = create(ulid::Ulid::new(), derived).unwrap();
        unlock(created.keyring.header(), &sealed(&created), given("cafe\u{301} au lait")).unwrap();
        assert!(matches!(
            unlock(created.keyring.header(), &sealed(&created), given("another passphrase")),
            Err(Error::WrongPassphrase)
        ));
        assert!(matches!(passphrase("seven c").derived(), Err(Error::PassphraseTooShort { min: 8 })));
    }

    /// A header and keyring as format 1 wrote them: the passphrase hashed as typed, no storage key.
    fn format_1(typed: &str) -> (Vec<u8>, Vec<u8>, DeviceIdentity) {
        let identity = DeviceIdentity::generate().unwrap();
        let salt = [7u8; 16];
        let protection = Protection::Passphrase {
            salt: adiuva_model::hex::encode(&salt),
            memory_kib: ARGON2_MEMORY_KIB,
            iterations: ARGON2_ITERATIONS,
            parallelism: ARGON2_PARALLELISM,
        };
        let header = Header { format: 1, workspace_id: ulid::Ulid::new(), device_id: identity.device_id(), protection };
        let header = header.encode().unwrap();
        let kek = passphrase_kek(typed, &salt, ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM).unwrap();
        let mut plaintext = vec![1u8];
        plaintext.extend_from_slice(identity.signing_secret().as_ref());
        plaintext.extend_from_slice(identity.box_secret().as_ref());
        plaintext.extend_from_slice(&1u16.to_le_bytes());
        plaintext.extend_from_slice(&1u32.to_le_bytes());
        plaintext.extend_from_slice(&[5; 32]);
        let sealed = crypto::seal(&kek, &keyring_aad(&header), &plaintext).unwrap();
        (header, sealed, identity)
    }

    #[test]
    fn a_format_1_keyring_opens_and_is_rewritten_with_a_storage_key_of_its_own() {
        // "ﬁ" (U+FB01) is "fi" in NFKC: format 1 hashed it as typed.
        let typed = "\u{FB01}xture passphrase";
        let (header, sealed_v1, identity) = format_1(typed);
        let unlocked = unlock(&header, &sealed_v1, given(typed)).unwrap();
        assert!(unlocked.outdated);
        assert_eq!(unlocked.identity.device_id(), identity.device_id());
        let derived = unlocked.keyring.derived_storage_keys();
        assert_eq!(derived[&1].as_bytes(), SecretKey::from_bytes([5; 32]).derive(KeyPurpose::LocalStorage).as_bytes());
        assert_ne!(unlocked.keyring.storage_key().as_bytes(), derived[&1].as_bytes());
        // Rewritten: header format 2, sealed under the normalized passphrase, storage key kept.
        let rewritten = unlocked.keyring.seal(&unlocked.identity).unwrap();
        let header_v2 = unlocked.keyring.header().to_vec();
        assert_eq!(Header::decode(&header_v2).unwrap().format, HEADER_FORMAT);
        let again = unlock(&header_v2, &rewritten, given("fixture passphrase")).unwrap();
        assert!(!again.outdated);
        assert_eq!(again.keyring.storage_key().as_bytes(), unlocked.keyring.storage_key().as_bytes());
        assert_eq!(again.keyring.derived_storage_keys().len(), 1, "the store has not moved yet");
        // Once moved, the derived keys are no longer offered.
        let mut moved = again.keyring;
        moved.storage_moved();
        let sealed_moved = moved.seal(&again.identity).unwrap();
        let reopened = unlock(moved.header(), &sealed_moved, given(typed)).unwrap();
        assert!(reopened.keyring.derived_storage_keys().is_empty());
        // Format 1 with the typed form only where NFKC changes it: a wrong one stays wrong.
        assert!(matches!(unlock(&header, &sealed_v1, given("wrong passphrase")), Err(Error::WrongPassphrase)));
    }
}
