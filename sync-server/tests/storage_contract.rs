//! The storage contract: one suite that every backend of `Storage` must pass — the embedded
//! one always, the S3 + PostgreSQL one against the real servers `scripts/test` starts (skipped,
//! saying why, only when their addresses are not given).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use adiuva_server::storage::{BlobId, Cloud, CloudConfig, Embedded, NewBlob, Storage, StorageError};
use bytes::Bytes;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Every check, on a fresh store; `reopen` gives the same store opened again (a restart).
async fn contract(storage: Arc<dyn Storage>, prefix: &str) {
    small_records(storage.as_ref(), prefix).await;
    blob_logs(storage.as_ref(), prefix).await;
    concurrent_uploads(storage.clone(), prefix).await;
}

async fn small_records(storage: &dyn Storage, prefix: &str) {
    let key = |name: &str| format!("{prefix}/records/{name}");
    assert_eq!(storage.get(&key("a")).await.unwrap(), None);
    assert!(storage.compare_and_swap(&key("a"), None, Some(b"one")).await.unwrap());
    assert!(!storage.compare_and_swap(&key("a"), None, Some(b"two")).await.unwrap(), "created twice");
    assert!(!storage.compare_and_swap(&key("a"), Some(b"wrong"), Some(b"two")).await.unwrap());
    assert_eq!(storage.get(&key("a")).await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(storage.compare_and_swap(&key("a"), Some(b"one"), Some(b"two")).await.unwrap());
    assert_eq!(storage.get(&key("a")).await.unwrap().as_deref(), Some(&b"two"[..]));
    storage.put(&key("b/1"), b"x").await.unwrap();
    storage.put(&key("b/2"), b"y").await.unwrap();
    assert_eq!(storage.get(&key("b/2")).await.unwrap().as_deref(), Some(&b"y"[..]));
    storage.put(&key("b/2"), b"z").await.unwrap();
    assert_eq!(storage.get(&key("b/2")).await.unwrap().as_deref(), Some(&b"z"[..]), "a read after a write sees it");
    storage.put(&key("c"), &[0, 255, 1]).await.unwrap();
    let scanned = storage.scan(&key("b/")).await.unwrap();
    assert_eq!(scanned, vec![(key("b/1"), b"x".to_vec()), (key("b/2"), b"z".to_vec())]);
    assert_eq!(storage.get(&key("c")).await.unwrap(), Some(vec![0, 255, 1]), "binary values round-trip");
    assert!(storage.compare_and_swap(&key("a"), Some(b"two"), None).await.unwrap());
    assert_eq!(storage.get(&key("a")).await.unwrap(), None);
    assert!(storage.scan(&key("nothing/")).await.unwrap().is_empty());

    // Of many racing swaps from the same value, exactly one wins.
    storage.put(&key("race"), b"start").await.unwrap();
    let wins = futures_util::future::join_all(
        (0..16u8)
            .map(|i| async move { storage.compare_and_swap(&key("race"), Some(b"start"), Some(&[i])).await.unwrap() }),
    )
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
}

fn blob(workspace: &str, account: &str, bytes: &[u8], quota: Option<u64>) -> NewBlob {
    NewBlob {
        workspace: workspace.into(),
        account: account.into(),
        id: BlobId::of(bytes),
        bytes: Bytes::copy_from_slice(bytes),
        quota,
    }
}

async fn blob_logs(storage: &dyn Storage, prefix: &str) {
    let (ws, other_ws, account) = (format!("{prefix}-ws"), format!("{prefix}-ws2"), format!("{prefix}-acct"));
    assert_eq!(storage.head(&ws).await.unwrap(), 0);
    assert_eq!(storage.usage(&account).await.unwrap(), 0);
    let first = storage.put_blob(blob(&ws, &account, b"first", None)).await.unwrap();
    assert_eq!((first.seq, first.size, first.created), (1, 5, true));
    let second = storage.put_blob(blob(&ws, &account, b"second!", None)).await.unwrap();
    assert_eq!((second.seq, second.created), (2, true));
    let again = storage.put_blob(blob(&ws, &account, b"first", None)).await.unwrap();
    assert_eq!((again.seq, again.created), (1, false), "a retry keeps its number");
    assert_eq!(storage.usage(&account).await.unwrap(), 12, "a retry charges nothing");
    // Another workspace has its own sequence; the same bytes there are its own entry.
    assert_eq!(storage.put_blob(blob(&other_ws, &account, b"first", None)).await.unwrap().seq, 1);
    assert_eq!(storage.usage(&account).await.unwrap(), 17);

    assert_eq!(storage.get_blob(&ws, &BlobId::of(b"second!")).await.unwrap().as_deref(), Some(&b"second!"[..]));
    assert_eq!(storage.get_blob(&ws, &BlobId::of(b"missing")).await.unwrap(), None);
    assert_eq!(storage.get_blob(&format!("{prefix}-none"), &BlobId::of(b"first")).await.unwrap(), None);
    assert_eq!(storage.blob_seq(&ws, &BlobId::of(b"second!")).await.unwrap(), Some(2));
    assert_eq!(storage.blob_seq(&ws, &BlobId::of(b"missing")).await.unwrap(), None);
    assert_eq!(storage.head(&ws).await.unwrap(), 2);

    for i in 0..5u8 {
        storage.put_blob(blob(&ws, &account, &[i; 10], None)).await.unwrap();
    }
    let all = storage.changes(&ws, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(all[1].id, BlobId::of(b"second!"));
    assert_eq!(all[1].size, 7);
    let page = storage.changes(&ws, 2, 3).await.unwrap();
    assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(storage.changes(&ws, 7, 10).await.unwrap().is_empty());

    // Quotas: refused past the quota, nothing stored or charged; exactly at it is fine.
    let quota_account = format!("{prefix}-quota");
    storage.put_blob(blob(&ws, &quota_account, &[1; 60], Some(100))).await.unwrap();
    match storage.put_blob(blob(&ws, &quota_account, &[2; 41], Some(100))).await {
        Err(StorageError::QuotaExceeded { used: 60, size: 41, quota: 100 }) => {}
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    assert_eq!(storage.blob_seq(&ws, &BlobId::of(&[2; 41])).await.unwrap(), None);
    assert_eq!(storage.head(&ws).await.unwrap(), 8);
    storage.put_blob(blob(&ws, &quota_account, &[3; 40], Some(100))).await.unwrap();
    assert_eq!(storage.usage(&quota_account).await.unwrap(), 100);
    // A retry of a stored blob is not refused by a full quota.
    assert!(!storage.put_blob(blob(&ws, &quota_account, &[3; 40], Some(0))).await.unwrap().created);
    assert!(matches!(
        storage.put_blob(blob(&ws, &quota_account, &[4], Some(0))).await,
        Err(StorageError::QuotaExceeded { .. })
    ));
}

async fn concurrent_uploads(storage: Arc<dyn Storage>, prefix: &str) {
    let (ws, account) = (format!("{prefix}-concurrent"), format!("{prefix}-acct"));
    // 200 distinct blobs, each uploaded twice at once, all concurrently.
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let (storage, ws, account) = (storage.clone(), ws.clone(), account.clone());
            tokio::spawn(async move {
                let bytes = format!("blob {}", i % 200).into_bytes();
                storage.put_blob(blob(&ws, &account, &bytes, None)).await.unwrap()
            })
        })
        .collect();
    let mut stored = Vec::new();
    for task in tasks {
        stored.push(task.await.unwrap());
    }
    assert_eq!(stored.iter().filter(|s| s.created).count(), 200);
    for i in 0..200 {
        assert_eq!(stored[i].seq, stored[i + 200].seq, "both uploads of one blob got its one number");
    }
    let mut seqs: Vec<u64> = stored.iter().filter(|s| s.created).map(|s| s.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert_eq!(storage.changes(&ws, 0, 1000).await.unwrap().len(), 200);
}

#[test]
fn embedded_backend_passes_the_contract_and_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(Embedded::open(dir.path()).unwrap());
        contract(storage.clone(), "t").await;
        drop(storage);
        let reopened = Embedded::open(dir.path()).unwrap();
        assert_eq!(reopened.head("t-ws").await.unwrap(), 9);
        assert_eq!(reopened.usage("t-quota").await.unwrap(), 100);
        assert_eq!(reopened.get_blob("t-ws", &BlobId::of(b"first")).await.unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(reopened.put_blob(blob("t-ws", "t-acct", b"after reopen", None)).await.unwrap().seq, 10);
        assert_eq!(reopened.get("t/records/c").await.unwrap(), Some(vec![0, 255, 1]));
    });
}

#[test]
fn embedded_backend_refuses_a_second_open_of_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Embedded::open(dir.path()).unwrap();
    assert!(matches!(Embedded::open(dir.path()), Err(StorageError::Locked)));
}

#[test]
fn cloud_backend_passes_the_contract_and_instances_share_it() {
    let Some(servers) = common::CloudServers::from_env("cloud_backend_passes_the_contract_and_instances_share_it")
    else {
        return;
    };
    let config = CloudConfig {
        postgres_url: servers.fresh_database(),
        s3_endpoint: servers.s3_endpoint.clone(),
        s3_bucket: format!("contract-{}", ulid::Ulid::new().to_string().to_lowercase()),
        s3_access_key: servers.s3_access_key.clone(),
        s3_secret_key: servers.s3_secret_key.clone(),
    };
    runtime().block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(Cloud::open(&config).await.unwrap());
        contract(storage.clone(), "t").await;
        // A second instance on the same services sees the same state and continues the numbering.
        let other: Arc<dyn Storage> = Arc::new(Cloud::open(&config).await.unwrap());
        assert_eq!(other.head("t-ws").await.unwrap(), 9);
        assert_eq!(other.usage("t-quota").await.unwrap(), 100);
        assert_eq!(other.get_blob("t-ws", &BlobId::of(b"first")).await.unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(other.put_blob(blob("t-ws", "t-acct", b"from the other instance", None)).await.unwrap().seq, 10);
        assert_eq!(storage.blob_seq("t-ws", &BlobId::of(b"from the other instance")).await.unwrap(), Some(10));
        // Two instances racing on the same blobs number each once.
        let racing: Vec<_> = (0..40u32)
            .map(|i| {
                let target = if i % 2 == 0 { storage.clone() } else { other.clone() };
                tokio::spawn(async move {
                    target.put_blob(blob("t-race", "t-acct", format!("{}", i / 2).as_bytes(), None)).await.unwrap()
                })
            })
            .collect();
        let mut created = 0;
        for task in racing {
            created += usize::from(task.await.unwrap().created);
        }
        assert_eq!(created, 20);
        assert_eq!(storage.head("t-race").await.unwrap(), 20);
    });
}
