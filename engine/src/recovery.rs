//! Recovery: a 12-word BIP39 phrase that, with the account's stored blob, brings a workspace
//! back on a machine that holds nothing of it.
//!
//! The phrase's 128 bits of entropy go through Argon2id (t=3, m=64 MiB, p=1, a random 16-byte
//! salt kept beside the blob) to a **recovery secret**, from which BLAKE3 derives:
//! - the **wrap key**, which seals every workspace key epoch into the blob
//!   ([`RecoveryKeys::wrap`]) that the relay stores (it cannot open it);
//! - the **recovery identity**, an Ed25519 and X25519 key pair that is a device of the
//!   workspace (`device.added`, named "recovery phrase"). A restored machine proves itself
//!   through it: it signs, as that identity, the event that adds the machine as a new device
//!   with its own keys and its own Automerge actor.
//!
//! ```text
//! wrapped = "ADVR" | version u8 (=1) | workspace id 16 | salt 16
//!           | XChaCha20-Poly1305 under the wrap key, associated data the 37 bytes before it, of
//!             count u16 LE | (epoch u32 LE | key 32) × count
//! ```

use bip39::{Language, Mnemonic};
use zeroize::Zeroizing;

use crate::crypto::{self, SecretKey, WorkspaceKey};
use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;
use crate::keystore;

const MAGIC: &[u8; 4] = b"ADVR";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 37;
const WRAP_CONTEXT: &str = "adiuva 2026-12-02 recovery wrap key v1";
const SIGNING_CONTEXT: &str = "adiuva 2026-12-02 recovery identity signing key v1";
const BOX_CONTEXT: &str = "adiuva 2026-12-02 recovery identity box key v1";

/// A fresh 12-word phrase (128 bits from the OS random source).
pub fn new_phrase() -> Result<Zeroizing<String>> {
    let entropy = Zeroizing::new(crypto::random_bytes::<16>()?);
    let mnemonic = Mnemonic::from_entropy_in(Language::English, entropy.as_slice())
        .map_err(|e| Error::RecoveryPhraseInvalid { detail: e.to_string() })?;
    Ok(Zeroizing::new(mnemonic.to_string()))
}

/// The 16 bytes of entropy a phrase spells; the words may be in any case and spacing.
fn phrase_entropy(phrase: &str) -> Result<Zeroizing<[u8; 16]>> {
    let normalized = Zeroizing::new(phrase.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" "));
    let mnemonic = Mnemonic::parse_in_normalized(Language::English, &normalized)
        .map_err(|e| Error::RecoveryPhraseInvalid { detail: e.to_string() })?;
    if mnemonic.word_count() != 12 {
        return Err(Error::RecoveryPhraseInvalid {
            detail: format!("{} words; a recovery phrase has 12", mnemonic.word_count()),
        });
    }
    let (entropy, length) = mnemonic.to_entropy_array();
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(
        entropy
            .get(..16)
            .filter(|_| length == 16)
            .ok_or_else(|| Error::RecoveryPhraseInvalid { detail: "not 128 bits of entropy".into() })?,
    );
    Ok(out)
}

/// What a phrase and a salt give. Its keys wipe themselves when dropped.
pub struct RecoveryKeys {
    /// Kept (sealed) on the devices, so a later epoch can be wrapped without the phrase.
    pub secret: SecretKey,
    pub salt: [u8; 16],
    wrap: SecretKey,
    pub identity: DeviceIdentity,
}

impl RecoveryKeys {
    /// Derives the keys from `phrase` (Argon2id: a deliberate fraction of a second).
    pub fn from_phrase(phrase: &str, salt: [u8; 16]) -> Result<Self> {
        let entropy = phrase_entropy(phrase)?;
        let hex = Zeroizing::new(adiuva_model::hex::encode(entropy.as_slice()));
        let secret = keystore::passphrase_kek(
            &hex,
            &salt,
            keystore::ARGON2_MEMORY_KIB,
            keystore::ARGON2_ITERATIONS,
            keystore::ARGON2_PARALLELISM,
        )?;
        Ok(Self::from_secret(secret, salt))
    }

    pub fn from_secret(secret: SecretKey, salt: [u8; 16]) -> Self {
        let derive = |context| Zeroizing::new(blake3::derive_key(context, secret.as_bytes()));
        let wrap = SecretKey::from_bytes(*derive(WRAP_CONTEXT));
        let identity = DeviceIdentity::from_secret_bytes(derive(SIGNING_CONTEXT), derive(BOX_CONTEXT));
        Self { secret, salt, wrap, identity }
    }

    /// Every epoch of `keys`, wrapped for workspace `workspace_id`.
    pub fn wrap(&self, workspace_id: ulid::Ulid, keys: &[WorkspaceKey]) -> Result<Vec<u8>> {
        let mut out = header(workspace_id, &self.salt);
        let mut plaintext = Zeroizing::new(Vec::with_capacity(2 + keys.len() * 36));
        let count = u16::try_from(keys.len()).map_err(|_| Error::Encode { what: "recovery key" })?;
        plaintext.extend_from_slice(&count.to_le_bytes());
        for key in keys {
            plaintext.extend_from_slice(&key.epoch.to_le_bytes());
            plaintext.extend_from_slice(key.key.as_bytes());
        }
        let sealed = crypto::seal(&self.wrap, &out, &plaintext)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

impl zeroize::ZeroizeOnDrop for RecoveryKeys {}

fn header(workspace_id: ulid::Ulid, salt: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 128);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&workspace_id.to_bytes());
    out.extend_from_slice(salt);
    out
}

/// What a wrapped blob and its phrase open to.
pub struct Unwrapped {
    pub workspace_id: ulid::Ulid,
    pub keys: RecoveryKeys,
    pub epochs: Vec<WorkspaceKey>,
}

/// Opens a wrapped blob with its phrase: a malformed blob, or one altered, or a wrong phrase,
/// is a typed error.
pub fn unwrap(phrase: &str, wrapped: &[u8]) -> Result<Unwrapped> {
    unwrap_with(wrapped, |salt| RecoveryKeys::from_phrase(phrase, salt))
}

/// [`unwrap`] with the keys `derive` makes from the blob's salt: the phrase through Argon2id, or
/// (the fuzz targets, which cannot afford Argon2id per input) a known secret.
#[doc(hidden)]
pub fn unwrap_with(wrapped: &[u8], derive: impl FnOnce([u8; 16]) -> Result<RecoveryKeys>) -> Result<Unwrapped> {
    let malformed = |detail: &str| Error::RecoveryBlobMalformed { detail: detail.into() };
    let (header, sealed) = wrapped.split_at_checked(HEADER_LEN).ok_or_else(|| malformed("truncated"))?;
    if &header[..4] != MAGIC {
        return Err(malformed("bad magic"));
    }
    if header[4] != VERSION {
        return Err(malformed("a newer version than this build reads"));
    }
    let workspace_id: [u8; 16] = header[5..21].try_into().map_err(|_| malformed("truncated"))?;
    let salt: [u8; 16] = header[21..37].try_into().map_err(|_| malformed("truncated"))?;
    let keys = derive(salt)?;
    let plaintext = Zeroizing::new(crypto::open(&keys.wrap, header, sealed).map_err(|_| Error::RecoveryWrongPhrase)?);
    let epochs = decode_epochs(&plaintext)?;
    Ok(Unwrapped { workspace_id: ulid::Ulid::from_bytes(workspace_id), keys, epochs })
}

/// `count u16 LE | (epoch u32 LE | key 32) × count`: what a wrapped blob seals (at least one
/// epoch, nothing after the last).
#[doc(hidden)]
pub fn decode_epochs(plaintext: &[u8]) -> Result<Vec<WorkspaceKey>> {
    let malformed = |detail: &str| Error::RecoveryBlobMalformed { detail: detail.into() };
    let (count, mut rest) = plaintext.split_at_checked(2).ok_or_else(|| malformed("no epochs"))?;
    let count = u16::from_le_bytes([count[0], count[1]]);
    let mut epochs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (entry, tail) = rest.split_at_checked(36).ok_or_else(|| malformed("truncated epochs"))?;
        let epoch = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let key = SecretKey::from_slice(&entry[4..]).ok_or_else(|| malformed("truncated epochs"))?;
        epochs.push(WorkspaceKey { epoch, key });
        rest = tail;
    }
    if !rest.is_empty() || epochs.is_empty() {
        return Err(malformed("trailing bytes or no epoch"));
    }
    Ok(epochs)
}
