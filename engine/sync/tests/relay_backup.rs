//! Restore points on a real `adiuva-server`: made from the whole workspace, kept as sealed blobs
//! the relay cannot read, listed, and applied on a device that lacks what they hold; devices
//! syncing pass over them. A restore point altered, of another workspace, or not a restore
//! point at all is a typed error and leaves the device's data as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_model::Collection;
use common::*;

#[test]
fn a_restore_point_brings_back_what_a_device_lacks_and_syncing_passes_over_it() {
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "backup@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    for n in 0..20 {
        add_task(&mut a, &format!("task {n}: quince-marker-2209"));
    }
    add_note(&mut a, "a note", "its body: quince-marker-2209");
    sync(&mut a);
    let point = adiuva_sync::backup_now(&mut a, &mut |_| {}).unwrap();
    assert_eq!(point.chunk_count, 1);
    assert!(point.size_bytes.is_power_of_two(), "padded to a size bucket: {}", point.size_bytes);
    let listed = adiuva_sync::backup_list(&mut b).unwrap();
    assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), [point.id]);

    // b holds the root only; the restore point brings back the rest.
    assert!(b.list(Collection::Tasks).unwrap().is_empty());
    let restored = adiuva_sync::restore_point(&mut b, &point.id.to_string(), &mut |_| {}).unwrap();
    assert!(restored.applied >= 21, "{restored:?}");
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), 20);
    assert_eq!(b.list(Collection::Notes).unwrap().len(), 1);
    // Applying it again changes nothing.
    assert_eq!(adiuva_sync::restore_point(&mut b, &point.id.to_string(), &mut |_| {}).unwrap().applied, 0);

    // Both sync through the sequence that holds the restore point's blob, and converge.
    add_task(&mut b, "written on b after the restore");
    sync(&mut b);
    sync(&mut a);
    sync(&mut b);
    assert_eq!(snapshot(&mut a), snapshot(&mut b));

    // The relay holds the point sealed.
    for (path, bytes) in files_under(&relay.data) {
        assert!(!contains(&bytes, b"quince-marker-2209"), "{} holds the marker in clear", path.display());
    }
}

/// Uploads `blobs` to `device`'s workspace and records them as a restore point, as a relay
/// (or anyone holding the account) could: the relay checks nothing it cannot read.
fn forged_point(relay: &Relay, device: &adiuva_engine::Workspace, email: &str, blobs: &[Vec<u8>]) -> String {
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, device.device_id()).unwrap().access_token;
    let ws = device.workspace_id().to_string();
    let ids: Vec<String> = blobs.iter().map(|blob| client.put_blob(&token, &ws, blob).unwrap().id).collect();
    let mut hasher = blake3::Hasher::new();
    for blob in blobs {
        hasher.update(blob);
    }
    let size = blobs.iter().map(|b| b.len() as u64).sum();
    client.put_backup(&token, &ws, &hasher.finalize().to_hex(), size, &ids).unwrap().id.to_string()
}

#[test]
fn an_altered_foreign_or_false_restore_point_is_refused_and_changes_nothing() {
    let mut relay = Relay::start();
    let (a_dir, b_dir, other_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "tamper-backup@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    add_task(&mut a, "held by a");
    sync(&mut a);
    add_task(&mut b, "held by b");
    let before = snapshot(&mut b);
    let code = |result: adiuva_sync::Result<adiuva_sync::PointRestored>| result.unwrap_err().code().as_str();

    // A bit flipped inside the sealed frame.
    let mut altered = a.restore_point(&relay.url).unwrap().blobs;
    let middle = altered[0].len() / 2;
    altered[0][middle] ^= 1;
    let id = forged_point(&relay, &a, email, &altered);
    assert_eq!(code(adiuva_sync::restore_point(&mut b, &id, &mut |_| {})), "sync.unit_corrupt");

    // Another workspace's restore point.
    let mut other = adiuva_engine::Workspace::init(other_dir.path(), protection(), "other").unwrap();
    add_task(&mut other, "of another workspace");
    let foreign = other.restore_point(&relay.url).unwrap().blobs;
    let id = forged_point(&relay, &a, email, &foreign);
    assert_eq!(code(adiuva_sync::restore_point(&mut b, &id, &mut |_| {})), "sync.unit_foreign");

    // A relay unit named as a restore point.
    let unit = a.relay_outbox("elsewhere").unwrap();
    let id = forged_point(&relay, &a, email, &unit);
    assert_eq!(code(adiuva_sync::restore_point(&mut b, &id, &mut |_| {})), "sync.unit_malformed");

    // Not a restore point id at all, or none there.
    assert_eq!(code(adiuva_sync::restore_point(&mut b, "../../auth/me", &mut |_| {})), "input.invalid");
    assert_eq!(code(adiuva_sync::restore_point(&mut b, "01J00000000000000000000000", &mut |_| {})), "relay.not_found");

    assert_eq!(snapshot(&mut b), before, "nothing of b changed");
    sync(&mut b);
    sync(&mut a);
    assert_eq!(snapshot(&mut a), snapshot(&mut b), "and sync goes on over the refused points' blobs");
}
