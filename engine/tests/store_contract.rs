//! The contract every `ChunkStore` backend must honour (see the trait's documentation), run
//! against each backend. A new backend adds one line to `backends()`.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use adiuva_engine::store::{ChunkStore, SledStore, WriteBatch};

type Opener = fn(&Path) -> Box<dyn ChunkStore>;

fn backends() -> Vec<(&'static str, Opener)> {
    vec![("sled", |path| Box::new(SledStore::open(path).unwrap()))]
}

fn batch(puts: &[(&[u8], &[u8])], deletes: &[&[u8]]) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for (key, value) in puts {
        batch.put(*key, *value);
    }
    for key in deletes {
        batch.delete(*key);
    }
    batch
}

#[test]
fn reads_see_writes_at_once_and_in_order() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("store"));
        assert_eq!(store.get(b"a").unwrap(), None, "{name}");
        store.write(batch(&[(b"a", b"1")], &[])).unwrap();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]), "{name}");
        store.write(batch(&[(b"a", b"2")], &[])).unwrap();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"2"[..]), "{name}");
        store.write(batch(&[], &[b"a"])).unwrap();
        assert_eq!(store.get(b"a").unwrap(), None, "{name}");
    }
}

#[test]
fn a_batch_applies_puts_then_deletes() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("store"));
        store.write(batch(&[(b"k", b"v"), (b"gone", b"x")], &[b"gone"])).unwrap();
        assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "{name}");
        assert_eq!(store.get(b"gone").unwrap(), None, "{name}");
    }
}

#[test]
fn scans_are_ordered_and_bounded_by_their_prefix() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("store"));
        let keys: [&[u8]; 6] = [b"c/b\0\x02", b"c/a\0\x01", b"c/a\0\x00", b"c/a/x\0\x00", b"c/a\0\xff", b"d"];
        store.write(batch(&keys.map(|k| (k, k)), &[])).unwrap();
        let scanned = store.scan_prefix(b"c/a\0").unwrap();
        let expected: Vec<Vec<u8>> = vec![b"c/a\0\x00".to_vec(), b"c/a\0\x01".to_vec(), b"c/a\0\xff".to_vec()];
        assert_eq!(scanned.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), expected, "{name}");
        assert!(scanned.iter().all(|(k, v)| k == v), "{name}");
        assert_eq!(store.keys_with_prefix(b"c/a\0").unwrap(), expected, "{name}");
        assert!(store.scan_prefix(b"zzz").unwrap().is_empty(), "{name}");
    }
}

#[test]
fn synced_writes_survive_reopening() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = open(&path);
            for index in 0u32..500 {
                store.write(batch(&[(&index.to_be_bytes(), &[7u8; 300])], &[])).unwrap();
            }
            store.write(batch(&[], &[&7u32.to_be_bytes()])).unwrap();
            store.sync().unwrap();
            assert!(store.size_on_disk().unwrap() > 0, "{name}");
        }
        let store = open(&path);
        assert_eq!(store.keys_with_prefix(b"").unwrap().len(), 499, "{name}");
        assert_eq!(store.get(&7u32.to_be_bytes()).unwrap(), None, "{name}");
        assert_eq!(store.get(&8u32.to_be_bytes()).unwrap().map(|v| v.len()), Some(300), "{name}");
    }
}

#[test]
fn values_up_to_the_chunk_limit_round_trip() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let value: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        {
            let store = open(&path);
            store.write(batch(&[(b"big", &value)], &[])).unwrap();
            store.sync().unwrap();
        }
        assert_eq!(open(&path).get(b"big").unwrap(), Some(value), "{name}");
    }
}

#[test]
fn damaged_store_files_are_an_error_not_a_panic() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = open(&path);
            store.write(batch(&[(b"k", b"v")], &[])).unwrap();
            store.sync().unwrap();
        }
        for entry in std::fs::read_dir(&path).unwrap() {
            let file = entry.unwrap().path();
            if file.is_file() {
                std::fs::write(&file, b"\xde\xad\xbe\xef garbage that is no store file").unwrap();
            }
        }
        let reopened = std::panic::catch_unwind(|| SledStore::open(&path).map(|_| ()));
        assert!(matches!(reopened, Ok(Err(_))), "{name}: damaged files must give Err, got {reopened:?}");
    }
}
