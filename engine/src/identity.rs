//! A device's identity: an Ed25519 signing key (its [`DeviceId`], later also its iroh node key)
//! and an X25519 box key, to which other devices seal the workspace key when adding it.
//!
//! The secret halves never leave the device; at rest they live inside the sealed local keyring
//! (see [`crate::keystore`]).

use adiuva_model::DeviceId;
use crypto_box::aead::Aead;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::crypto::{RandomUnavailable, SealError, random_bytes};

pub const SIGNATURE_LEN: usize = 64;

pub struct DeviceIdentity {
    signing: SigningKey,
    box_secret: crypto_box::SecretKey,
}

/// Both keys wipe themselves when dropped: ed25519-dalek's `SigningKey` is `ZeroizeOnDrop`,
/// crypto_box's `SecretKey` zeroizes its scalar in `Drop`.
impl zeroize::ZeroizeOnDrop for DeviceIdentity {}

impl DeviceIdentity {
    pub fn generate() -> Result<Self, RandomUnavailable> {
        Ok(Self::from_secret_bytes(Zeroizing::new(random_bytes()?), Zeroizing::new(random_bytes()?)))
    }

    pub(crate) fn from_secret_bytes(signing: Zeroizing<[u8; 32]>, box_secret: Zeroizing<[u8; 32]>) -> Self {
        Self { signing: SigningKey::from_bytes(&signing), box_secret: crypto_box::SecretKey::from_bytes(*box_secret) }
    }

    /// The identity whose secret halves are these 32-byte slices; `None` if they are not.
    pub(crate) fn from_secret_slices(signing: &[u8], box_secret: &[u8]) -> Option<Self> {
        let signing = SigningKey::try_from(signing).ok()?;
        let box_secret = crypto_box::SecretKey::from_slice(box_secret).ok()?;
        Some(Self { signing, box_secret })
    }

    pub(crate) fn signing_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub(crate) fn box_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.box_secret.to_bytes())
    }

    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.signing.verifying_key().to_bytes())
    }

    /// The X25519 public key others seal the workspace key to.
    pub fn box_public_key(&self) -> [u8; 32] {
        *self.box_secret.public_key().as_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// Opens what [`seal_to`] sealed to this device's box key; `None` if it was not sealed to
    /// it or was altered.
    pub fn unseal(&self, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (ephemeral, rest) = sealed.split_at_checked(32)?;
        let (nonce, ciphertext) = rest.split_at_checked(24)?;
        let ephemeral = crypto_box::PublicKey::from_slice(ephemeral).ok()?;
        let salsa = crypto_box::SalsaBox::new(&ephemeral, &self.box_secret);
        salsa.decrypt(crypto_box::Nonce::from_slice(nonce), ciphertext).ok().map(Zeroizing::new)
    }
}

/// Seals `plaintext` to the holder of the X25519 box key `recipient`: a fresh ephemeral key
/// pair and a random nonce each time (`ephemeral public 32 | nonce 24 | box`), so the sealer
/// needs no key of its own and nothing links two sealed messages. Who sealed it is proven by
/// what carries it (a signed event), not by the box.
pub fn seal_to(recipient: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let ephemeral = crypto_box::SecretKey::from_bytes(*Zeroizing::new(random_bytes::<32>()?));
    let nonce: [u8; 24] = random_bytes()?;
    let salsa = crypto_box::SalsaBox::new(&crypto_box::PublicKey::from_bytes(*recipient), &ephemeral);
    let sealed = salsa.encrypt(crypto_box::Nonce::from_slice(&nonce), plaintext).map_err(|_| SealError::TooLong)?;
    let mut out = Vec::with_capacity(56 + sealed.len());
    out.extend_from_slice(ephemeral.public_key().as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Checks that `signature` over `message` was made by `device`, strictly: a weak (small-order)
/// key or a non-canonical signature is refused, since with those one signature can verify for
/// several messages or keys.
pub fn verify(device: &DeviceId, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&device.0) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let device = DeviceIdentity::generate().unwrap();
        let other = DeviceIdentity::generate().unwrap();
        let signature = device.sign(b"event");
        assert!(verify(&device.device_id(), b"event", &signature));
        assert!(!verify(&device.device_id(), b"evenT", &signature));
        assert!(!verify(&other.device_id(), b"event", &signature));
        let restored = DeviceIdentity::from_secret_slices(&*device.signing_secret(), &*device.box_secret()).unwrap();
        assert_eq!(restored.device_id(), device.device_id());
        assert_eq!(restored.box_public_key(), device.box_public_key());
    }

    #[test]
    fn sealed_messages_open_only_for_their_recipient() {
        let device = DeviceIdentity::generate().unwrap();
        let other = DeviceIdentity::generate().unwrap();
        let sealed = seal_to(&device.box_public_key(), b"epoch key").unwrap();
        assert_eq!(device.unseal(&sealed).unwrap().as_slice(), b"epoch key");
        assert!(other.unseal(&sealed).is_none());
        for index in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[index] ^= 1;
            assert!(device.unseal(&flipped).is_none(), "byte {index}");
        }
        assert!(device.unseal(&sealed[..40]).is_none());
    }

    #[test]
    fn a_small_order_key_and_its_trivial_signature_are_refused() {
        // The identity point as the key and (R = identity, s = 0) as the signature: the lax
        // check accepts it for every message.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let weak = DeviceId(identity_point);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature[..32].copy_from_slice(&identity_point);
        assert!(!verify(&weak, b"any message", &signature));
        assert!(!verify(&weak, b"another message", &signature));
    }
}
