//! The workspace key at rest.
//!
//! The store holds two records outside the chunk format:
//! - the **header** (cleartext JSON, versioned): workspace id, this device's id, and how the
//!   local keyring is protected;
//! - the **local keyring** (sealed): every workspace-key epoch this device holds and the
//!   device's own secret keys, encrypted under a key-encryption key (KEK).
//!
//! The KEK comes either from the OS keyring (a random 32-byte secret stored there), or from the
//! person's passphrase through Argon2id (t=3, m=64 MiB, p=1). The keyring's associated data is
//! the header itself, so an altered header makes the keyring unopenable rather than misread.
//! The workspace key never touches the disk in clear.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, SecretKey, WorkspaceKey};
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;

const HEADER_FORMAT: u32 = 1;
const KEYRING_FORMAT: u8 = 1;
const KEYRING_AAD_DOMAIN: &[u8] = b"adiuva local keyring v1\0";
const KEYRING_SERVICE: &str = "adiuva";

/// Argon2id cost for passphrase-derived keys. Headers carrying less are refused: they could
/// only come from tampering.
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_ITERATIONS: u32 = 3;
const ARGON2_PARALLELISM: u32 = 1;

/// How a new workspace's key is to be protected on this device.
pub enum KeyProtection {
    /// Wrapped by a key derived from this passphrase.
    Passphrase(Zeroizing<String>),
    /// Wrapped by a random key kept in the OS keyring (Secret Service on Linux).
    OsKeyring,
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
        if header.format != HEADER_FORMAT {
            return Err(Error::WorkspaceFormat {
                detail: format!("format {} (this build reads {HEADER_FORMAT})", header.format),
            });
        }
        Ok(header)
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|_| Error::Encode { what: "workspace header" })
    }
}

/// What unlocking gives: this device's identity and the workspace key of every epoch it holds.
pub struct Unlocked {
    pub identity: DeviceIdentity,
    /// Ascending by epoch; the last is current.
    pub keys: Vec<WorkspaceKey>,
}

/// A newly created header and sealed keyring, to be stored together.
pub struct Created {
    pub header: Vec<u8>,
    pub sealed_keyring: Vec<u8>,
    pub unlocked: Unlocked,
}

/// Creates a workspace's keys: a first workspace key (epoch 1), this device's identity, and the
/// protection of both.
pub fn create(workspace_id: ulid::Ulid, protection: KeyProtection) -> Result<Created> {
    let identity = DeviceIdentity::generate()?;
    let keys = vec![WorkspaceKey { epoch: 1, key: SecretKey::random()? }];
    let device_id = identity.device_id();
    let (protection, kek) = match protection {
        KeyProtection::Passphrase(passphrase) => {
            let salt: [u8; 16] = crypto::random_bytes()?;
            let kek = passphrase_kek(&passphrase, &salt, ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM)?;
            let protection = Protection::Passphrase {
                salt: adiuva_model::hex::encode(&salt),
                memory_kib: ARGON2_MEMORY_KIB,
                iterations: ARGON2_ITERATIONS,
                parallelism: ARGON2_PARALLELISM,
            };
            (protection, kek)
        }
        KeyProtection::OsKeyring => {
            let account = format!("workspace {workspace_id} device {}", device_id.short());
            let kek = SecretKey::random()?;
            let entry = os_keyring_entry(KEYRING_SERVICE, &account)?;
            entry.set_secret(kek.as_bytes()).map_err(|e| Error::KeyringUnavailable { detail: e.to_string() })?;
            // Read it back: some keyrings accept writes they cannot return.
            let stored = entry.get_secret().map_err(|e| Error::KeyringUnavailable { detail: e.to_string() })?;
            if stored.as_slice() != kek.as_bytes() {
                return Err(Error::KeyringUnavailable { detail: "the keyring returned a different secret".into() });
            }
            (Protection::OsKeyring { service: KEYRING_SERVICE.into(), account }, kek)
        }
    };
    let header = Header { format: HEADER_FORMAT, workspace_id, device_id, protection }.encode()?;
    let unlocked = Unlocked { identity, keys };
    let sealed_keyring = crypto::seal(&kek, &keyring_aad(&header), &encode_keyring(&unlocked))?;
    Ok(Created { header, sealed_keyring, unlocked })
}

/// Opens the sealed keyring. `passphrase` is asked for only when the header says it is needed.
pub fn unlock(
    header_bytes: &[u8],
    sealed_keyring: &[u8],
    passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<Unlocked> {
    let header = Header::decode(header_bytes)?;
    let kek = match &header.protection {
        Protection::Passphrase { salt, memory_kib, iterations, parallelism } => {
            if *memory_kib < ARGON2_MEMORY_KIB || *iterations < ARGON2_ITERATIONS || *parallelism < 1 {
                return Err(Error::WorkspaceFormat { detail: "key derivation parameters below the minimum".into() });
            }
            let salt: [u8; 16] = adiuva_model::hex::decode_array(salt)
                .ok_or_else(|| Error::WorkspaceFormat { detail: "bad salt".into() })?;
            let passphrase = passphrase().ok_or(Error::PassphraseRequired)?;
            passphrase_kek(&passphrase, &salt, *memory_kib, *iterations, *parallelism)?
        }
        Protection::OsKeyring { service, account } => {
            let secret = os_keyring_entry(service, account)?.get_secret().map_err(|e| match e {
                keyring_core::Error::NoEntry => Error::KeyringEntryMissing { detail: format!("{service}/{account}") },
                other => Error::KeyringUnavailable { detail: other.to_string() },
            })?;
            let bytes: [u8; 32] = secret
                .as_slice()
                .try_into()
                .map_err(|_| Error::KeyringEntryMissing { detail: "the keyring entry is not a 32-byte key".into() })?;
            SecretKey::from_bytes(bytes)
        }
    };
    let plaintext = Zeroizing::new(crypto::open(&kek, &keyring_aad(header_bytes), sealed_keyring).map_err(|_| {
        match header.protection {
            Protection::Passphrase { .. } => Error::WrongPassphrase,
            Protection::OsKeyring { .. } => {
                Error::KeyringEntryMissing { detail: "the keyring's key does not open this workspace".into() }
            }
        }
    })?);
    let unlocked = decode_keyring(&plaintext)?;
    if unlocked.identity.device_id() != header.device_id {
        return Err(Error::WorkspaceFormat { detail: "the keyring belongs to another device".into() });
    }
    Ok(unlocked)
}

fn passphrase_kek(
    passphrase: &str,
    salt: &[u8; 16],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<SecretKey> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32))
        .map_err(|e| Error::WorkspaceFormat { detail: format!("key derivation parameters: {e}") })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
        .map_err(|e| Error::WorkspaceFormat { detail: format!("key derivation: {e}") })?;
    Ok(SecretKey::from_bytes(*out))
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

fn encode_keyring(unlocked: &Unlocked) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(67 + unlocked.keys.len() * 36));
    out.push(KEYRING_FORMAT);
    out.extend_from_slice(&unlocked.identity.signing_secret());
    out.extend_from_slice(&unlocked.identity.box_secret());
    out.extend_from_slice(&(unlocked.keys.len() as u16).to_le_bytes());
    for key in &unlocked.keys {
        out.extend_from_slice(&key.epoch.to_le_bytes());
        out.extend_from_slice(key.key.as_bytes());
    }
    out
}

fn decode_keyring(bytes: &[u8]) -> Result<Unlocked> {
    let bad = |detail: &str| Error::WorkspaceFormat { detail: format!("local keyring: {detail}") };
    let (&format, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    if format != KEYRING_FORMAT {
        return Err(bad("unknown format"));
    }
    let take = |rest: &[u8], n: usize| -> Result<(Vec<u8>, Vec<u8>)> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        Ok((rest[..n].to_vec(), rest[n..].to_vec()))
    };
    let array = |bytes: Vec<u8>| -> Result<[u8; 32]> { bytes.try_into().map_err(|_| bad("truncated")) };
    let (signing, rest) = take(rest, 32)?;
    let (box_secret, rest) = take(&rest, 32)?;
    let (count, mut rest) = take(&rest, 2)?;
    let count = u16::from_le_bytes([count[0], count[1]]);
    let mut keys = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (epoch, after) = take(&rest, 4)?;
        let (key, after) = take(&after, 32)?;
        keys.push(WorkspaceKey {
            epoch: u32::from_le_bytes([epoch[0], epoch[1], epoch[2], epoch[3]]),
            key: SecretKey::from_bytes(array(key)?),
        });
        rest = after;
    }
    if !rest.is_empty() || keys.is_empty() {
        return Err(bad("trailing bytes or no key"));
    }
    keys.sort_by_key(|key| key.epoch);
    Ok(Unlocked { identity: DeviceIdentity::from_secret_bytes(array(signing)?, array(box_secret)?), keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase(text: &str) -> KeyProtection {
        KeyProtection::Passphrase(Zeroizing::new(text.to_owned()))
    }

    #[test]
    fn passphrase_unlocks_and_a_wrong_one_is_a_typed_error() {
        let created = create(ulid::Ulid::new(), passphrase("correct horse")).unwrap();
        let unlocked =
            unlock(&created.header, &created.sealed_keyring, || Some(Zeroizing::new("correct horse".into()))).unwrap();
        assert_eq!(unlocked.identity.device_id(), created.unlocked.identity.device_id());
        assert_eq!(unlocked.keys[0].key.as_bytes(), created.unlocked.keys[0].key.as_bytes());
        assert!(matches!(
            unlock(&created.header, &created.sealed_keyring, || Some(Zeroizing::new("wrong".into()))),
            Err(Error::WrongPassphrase)
        ));
        assert!(matches!(unlock(&created.header, &created.sealed_keyring, || None), Err(Error::PassphraseRequired)));
    }

    #[test]
    fn altered_header_or_keyring_never_unlocks() {
        let created = create(ulid::Ulid::new(), passphrase("pw")).unwrap();
        let ask = || Some(Zeroizing::new("pw".to_owned()));
        let mut keyring = created.sealed_keyring.clone();
        keyring[30] ^= 1;
        assert!(matches!(unlock(&created.header, &keyring, ask), Err(Error::WrongPassphrase)));
        let weakened = String::from_utf8(created.header.clone()).unwrap().replace("65536", "1024");
        assert!(matches!(
            unlock(weakened.as_bytes(), &created.sealed_keyring, ask),
            Err(Error::WorkspaceFormat { .. })
        ));
        assert!(matches!(unlock(b"{not json", &created.sealed_keyring, ask), Err(Error::WorkspaceFormat { .. })));
    }
}
