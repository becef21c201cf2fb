//! A device's identity: an Ed25519 signing key (its [`DeviceId`], later also its iroh node key)
//! and an X25519 box key, to which other devices seal the workspace key when adding it.
//!
//! The secret halves never leave the device; at rest they live inside the sealed local keyring
//! (see [`crate::keystore`]).

use adiuva_model::DeviceId;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::crypto::{RandomUnavailable, random_bytes};

pub const SIGNATURE_LEN: usize = 64;

pub struct DeviceIdentity {
    signing: SigningKey,
    box_secret: crypto_box::SecretKey,
}

impl DeviceIdentity {
    pub fn generate() -> Result<Self, RandomUnavailable> {
        Ok(Self::from_secret_bytes(random_bytes()?, random_bytes()?))
    }

    pub(crate) fn from_secret_bytes(signing: [u8; 32], box_secret: [u8; 32]) -> Self {
        Self { signing: SigningKey::from_bytes(&signing), box_secret: crypto_box::SecretKey::from(box_secret) }
    }

    pub(crate) fn signing_secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub(crate) fn box_secret(&self) -> [u8; 32] {
        self.box_secret.to_bytes()
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
}

/// Checks that `signature` over `message` was made by `device`.
pub fn verify(device: &DeviceId, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&device.0) else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(signature)).is_ok()
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
        let restored = DeviceIdentity::from_secret_bytes(device.signing_secret(), device.box_secret());
        assert_eq!(restored.device_id(), device.device_id());
        assert_eq!(restored.box_public_key(), device.box_public_key());
    }
}
