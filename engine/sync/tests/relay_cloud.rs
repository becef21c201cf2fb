//! The relay on its cloud backend (a real PostgreSQL and a real S3-compatible server, which
//! `scripts/test-servers` starts): two devices converge through it, and a marker written into
//! a task and a note — synced, and in a restore point — is found nowhere in clear in the
//! bucket's files or the database cluster's (tables and write-ahead log).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_model::Collection;
use common::*;

#[test]
fn a_marker_in_a_task_is_nowhere_in_clear_in_the_bucket_or_the_database() {
    const MARKER: &[u8] = b"cloud-marker-5d81-rhubarb";
    let Some(cloud) = Cloud::from_env("a_marker_in_a_task_is_nowhere_in_clear_in_the_bucket_or_the_database") else {
        return;
    };
    let mut relay = Relay::start_cloud(&cloud);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "cloud-marker@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    let marker = std::str::from_utf8(MARKER).unwrap();
    add_task(&mut a, &format!("task holding {marker}"));
    add_note(&mut a, "a note", &format!("a body holding {marker}"));
    sync(&mut a);
    adiuva_sync::backup_now(&mut a, &mut |_| {}).unwrap();
    sync(&mut b);
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), 1);
    assert_eq!(snapshot(&mut a), snapshot(&mut b));

    let bucket = files_under(&cloud.bucket_dir);
    assert!(!bucket.is_empty(), "the bucket holds the blobs");
    let database = files_under(&cloud.postgres_dir);
    assert!(!database.is_empty());
    for (path, bytes) in bucket.iter().chain(&database) {
        assert!(!contains(bytes, MARKER), "{} holds the marker in clear", path.display());
    }
    // The search does see what the relay keeps in clear: the account's email.
    assert!(
        database.iter().any(|(_, bytes)| contains(bytes, email.as_bytes())),
        "the search reads the database's files"
    );
}
