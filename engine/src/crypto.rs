//! Keys and authenticated encryption.
//!
//! - A workspace has a random 32-byte [`WorkspaceKey`] per epoch. Removing a device starts a new
//!   epoch; old epochs stay readable to the devices that hold them.
//! - Purpose keys are derived from it with BLAKE3 `derive_key`, one context string per purpose, so
//!   a key leaked for one purpose (say, bundles sent to the relay) opens nothing else.
//! - [`seal`] / [`open`] are XChaCha20-Poly1305 with a random 24-byte nonce; the caller's
//!   associated data binds the workspace, epoch, blob kind and blob id, so a blob moved to another
//!   place or workspace fails authentication just like a flipped bit.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// Fills `buf` from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| RandomUnavailable)?;
    Ok(buf)
}

/// The OS random source failed: nothing can be keyed or sealed safely.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random source is unavailable")]
pub struct RandomUnavailable;

/// Sealing failed: no randomness for the nonce, or a message beyond the cipher's length limit
/// (256 GiB; no caller produces one, but an empty blob must never be stored in its place).
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error("the message is too long to encrypt")]
    TooLong,
}

/// A secret 32-byte key, wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl SecretKey {
    pub fn random() -> Result<Self, RandomUnavailable> {
        random_bytes().map(Self)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key read straight from a slice (no copy left behind); `None` unless it is 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Self([0; 32]);
        key.0.copy_from_slice(bytes.get(..32).filter(|_| bytes.len() == 32)?);
        Some(key)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn as_mut_bytes(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    /// A key for one purpose, derived from this one.
    pub fn derive(&self, purpose: KeyPurpose) -> SecretKey {
        SecretKey(blake3::derive_key(purpose.context(), &self.0))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The workspace key of one epoch.
#[derive(Clone, Debug)]
pub struct WorkspaceKey {
    pub epoch: u32,
    pub key: SecretKey,
}

/// Its only secret is a [`SecretKey`], which wipes itself.
impl ZeroizeOnDrop for WorkspaceKey {}

/// What a derived key is for. The context strings are fixed forever: changing one makes every
/// blob sealed under it unreadable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Chunks, snapshots and manifests in the local store, as format 1 sealed them (today each
    /// device has a storage key of its own, see [`crate::keystore`]).
    LocalStorage,
    /// Bundles of changes pushed to the relay or a peer.
    Bundles,
    /// Compacted snapshots uploaded as restore points.
    Snapshots,
}

impl KeyPurpose {
    fn context(self) -> &'static str {
        match self {
            KeyPurpose::LocalStorage => "adiuva 2026-11-29 local storage key v1",
            KeyPurpose::Bundles => "adiuva 2026-11-29 sync bundle key v1",
            KeyPurpose::Snapshots => "adiuva 2026-11-29 snapshot key v1",
        }
    }
}

/// Encrypts `plaintext` under `key` with a fresh random nonce; returns `nonce || ciphertext || tag`.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let nonce: [u8; NONCE_LEN] = random_bytes()?;
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    let ciphertext =
        cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad }).map_err(|_| SealError::TooLong)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts what [`seal`] produced. Any change to the bytes, the key or the associated data is
/// [`Unauthentic`].
pub fn open(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Unauthentic);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unauthentic)?;
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad }).map_err(|_| Unauthentic)
}

/// Authentication failed: wrong key, or the bytes or their context were altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct Unauthentic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_same_key_and_context() {
        let key = SecretKey::random().unwrap();
        let sealed = seal(&key, b"context", b"secret text").unwrap();
        assert_eq!(open(&key, b"context", &sealed).unwrap(), b"secret text");
        assert_eq!(open(&key, b"other", &sealed), Err(Unauthentic));
        assert_eq!(open(&SecretKey::random().unwrap(), b"context", &sealed), Err(Unauthentic));
        for index in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[index] ^= 0x01;
            assert_eq!(open(&key, b"context", &flipped), Err(Unauthentic), "byte {index}");
        }
        for length in 0..sealed.len() {
            assert_eq!(open(&key, b"context", &sealed[..length]), Err(Unauthentic));
        }
    }

    #[test]
    fn purposes_derive_distinct_keys() {
        let key = SecretKey::random().unwrap();
        let local = key.derive(KeyPurpose::LocalStorage);
        assert_ne!(local.as_bytes(), key.derive(KeyPurpose::Bundles).as_bytes());
        assert_ne!(local.as_bytes(), key.derive(KeyPurpose::Snapshots).as_bytes());
        assert_eq!(local.as_bytes(), key.derive(KeyPurpose::LocalStorage).as_bytes());
    }
}
