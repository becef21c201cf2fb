//! Secret material is wiped from memory when it is dropped, and never printed.
//!
//! Reading freed memory would need `unsafe`, which this workspace forbids; what is checked
//! instead is the property the wiping relies on: every type that holds a key is
//! `ZeroizeOnDrop` (removing the wipe from one of them stops this file from compiling), and
//! wiping a key leaves zeros.

use adiuva_engine::crypto::{SecretKey, WorkspaceKey, open, seal};
use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::keystore::Keyring;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

fn wiped_when_dropped<T: ZeroizeOnDrop + ?Sized>() {}

#[test]
fn every_type_holding_keys_wipes_them_when_dropped() {
    wiped_when_dropped::<SecretKey>();
    wiped_when_dropped::<WorkspaceKey>();
    wiped_when_dropped::<DeviceIdentity>();
    wiped_when_dropped::<Keyring>();
    wiped_when_dropped::<adiuva_engine::keystore::PassphraseKey>();
    wiped_when_dropped::<adiuva_engine::Ticket>();
    wiped_when_dropped::<adiuva_engine::PendingJoin>();
    wiped_when_dropped::<adiuva_engine::recovery::RecoveryKeys>();
    // What passphrases and decoded keyrings travel in.
    wiped_when_dropped::<Zeroizing<String>>();
    wiped_when_dropped::<Zeroizing<Vec<u8>>>();
}

#[test]
fn a_wiped_key_is_zeros() {
    let mut key = SecretKey::from_bytes([0xA5; 32]);
    key.zeroize();
    // Keys have no equality (it would invite comparisons that are not constant-time): a blob
    // sealed under the wiped key opens under the all-zero key.
    let sealed = seal(&key, b"context", b"text").unwrap();
    assert_eq!(open(&SecretKey::from_bytes([0; 32]), b"context", &sealed).unwrap(), b"text");
}

#[test]
fn keys_never_show_their_bytes_in_debug_output() {
    let key = WorkspaceKey { epoch: 1, key: SecretKey::from_bytes([0xA5; 32]) };
    let printed = format!("{key:?}");
    assert!(!printed.contains("165") && !printed.to_lowercase().contains("a5a5"), "{printed}");
}
