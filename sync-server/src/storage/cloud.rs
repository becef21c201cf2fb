//! The backend for several stateless instances serving one user: blob bytes in S3
//! (`aws-sdk-s3`, path-style, any S3-compatible server), everything else in PostgreSQL
//! (`tokio-postgres`). Instances share nothing but these two, so any instance answers any
//! request, and numbering stays exact across them:
//!
//! - a blob's bytes are stored in S3 (durable once S3 acknowledges) *before* its row exists, so
//!   a listed blob always has its bytes; a crash in between leaves an unlisted object that the
//!   retry overwrites;
//! - the row is numbered in one transaction that locks the account's usage row, then the
//!   workspace's head row (always in that order, so two uploads never deadlock), checks the
//!   quota, takes `head + 1` and inserts; a concurrent upload of the same id waits on the head
//!   row and then finds the id taken, and rolls back, so no number is skipped or given twice.
//!
//! Tables (created at open if missing): `relay_records(key, value)`, `relay_blobs(workspace, id,
//! seq, size)`, `relay_heads(workspace, head)`, `relay_usage(account, bytes)`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use super::{BlobId, Change, NewBlob, Result, Storage, StorageError, StoredBlob};

/// PostgreSQL connections per instance; each runs one statement or transaction at a time.
const CONNECTIONS: usize = 8;

const SCHEMA: &str = "
    SELECT pg_advisory_xact_lock(7412001);
    CREATE TABLE IF NOT EXISTS relay_records (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE IF NOT EXISTS relay_blobs (
        workspace TEXT NOT NULL, id BYTEA NOT NULL, seq BIGINT NOT NULL, size BIGINT NOT NULL,
        PRIMARY KEY (workspace, id), UNIQUE (workspace, seq));
    CREATE TABLE IF NOT EXISTS relay_heads (workspace TEXT PRIMARY KEY, head BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS relay_usage (account TEXT PRIMARY KEY, bytes BIGINT NOT NULL);
";

/// Where the cloud backend's two services are. `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct CloudConfig {
    /// A `postgresql://` connection string.
    pub postgres_url: String,
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

impl fmt::Debug for CloudConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudConfig")
            .field("postgres_url", &"<redacted>")
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_access_key", &self.s3_access_key)
            .field("s3_secret_key", &"<redacted>")
            .finish()
    }
}

/// The S3 + PostgreSQL backend (see the module docs).
pub struct Cloud {
    connections: Vec<Mutex<Client>>,
    next: AtomicUsize,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

fn object_store(operation: &'static str, error: impl std::error::Error) -> StorageError {
    StorageError::ObjectStore { operation, message: DisplayErrorContext(error).to_string() }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Cloud {
    /// Connects to both services, creates the tables and the bucket if missing.
    pub async fn open(config: &CloudConfig) -> Result<Self> {
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let (client, connection) = tokio_postgres::connect(&config.postgres_url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    warn!(%error, "a PostgreSQL connection ended");
                }
            });
            connections.push(Mutex::new(client));
        }
        {
            let mut first = connections[0].lock().await;
            let transaction = first.transaction().await?;
            transaction.batch_execute(SCHEMA).await?;
            transaction.commit().await?;
        }
        let s3_config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&config.s3_endpoint)
            .credentials_provider(Credentials::new(
                &config.s3_access_key,
                &config.s3_secret_key,
                None,
                None,
                "adiuva-server",
            ))
            .force_path_style(true)
            // Checksums only where S3 requires them: the blob's id is its checksum.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(s3_config);
        match s3.create_bucket().bucket(&config.s3_bucket).send().await {
            Ok(_) => {}
            Err(error) => {
                let service = error.as_service_error();
                if !service.is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()) {
                    // Some servers answer differently for an existing bucket: check it is usable.
                    s3.head_bucket()
                        .bucket(&config.s3_bucket)
                        .send()
                        .await
                        .map_err(|e| object_store("creating the bucket", e))?;
                }
            }
        }
        Ok(Self { connections, next: AtomicUsize::new(0), s3, bucket: config.s3_bucket.clone() })
    }

    /// A connection, taken in turn.
    async fn connection(&self) -> tokio::sync::MutexGuard<'_, Client> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[index].lock().await
    }

    fn object_key(workspace: &str, id: &BlobId) -> String {
        format!("{workspace}/{id}")
    }

    async fn existing(&self, workspace: &str, id: &BlobId) -> Result<Option<(u64, u64)>> {
        let row = self
            .connection()
            .await
            .query_opt("SELECT seq, size FROM relay_blobs WHERE workspace = $1 AND id = $2", &[&workspace, &&id.0[..]])
            .await?;
        Ok(row.map(|row| (to_u64(row.get(0)), to_u64(row.get(1)))))
    }
}

#[async_trait]
impl Storage for Cloud {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = self.connection().await.query_opt("SELECT value FROM relay_records WHERE key = $1", &[&key]).await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .connection()
            .await
            .query(
                "SELECT key, value FROM relay_records WHERE starts_with(key, $1) ORDER BY key COLLATE \"C\"",
                &[&prefix],
            )
            .await?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool> {
        let connection = self.connection().await;
        let changed = match (expected, new) {
            (None, Some(new)) => {
                connection
                    .execute(
                        "INSERT INTO relay_records (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                        &[&key, &new],
                    )
                    .await?
            }
            (Some(expected), Some(new)) => {
                connection
                    .execute(
                        "UPDATE relay_records SET value = $3 WHERE key = $1 AND value = $2",
                        &[&key, &expected, &new],
                    )
                    .await?
            }
            (Some(expected), None) => {
                connection
                    .execute("DELETE FROM relay_records WHERE key = $1 AND value = $2", &[&key, &expected])
                    .await?
            }
            (None, None) => {
                let present =
                    connection.query_opt("SELECT 1 FROM relay_records WHERE key = $1", &[&key]).await?.is_some();
                u64::from(!present)
            }
        };
        Ok(changed == 1)
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.connection()
            .await
            .execute(
                "INSERT INTO relay_records (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .await?;
        Ok(())
    }

    async fn put_blob(&self, blob: NewBlob) -> Result<StoredBlob> {
        if let Some((seq, size)) = self.existing(&blob.workspace, &blob.id).await? {
            return Ok(StoredBlob { seq, size, created: false });
        }
        let size = blob.bytes.len() as u64;
        // Refuse early what the quota will refuse, before sending the bytes anywhere.
        if let Some(quota) = blob.quota {
            let used = self.usage(&blob.account).await?;
            if used + size > quota {
                return Err(StorageError::QuotaExceeded { used, size, quota });
            }
        }
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(Self::object_key(&blob.workspace, &blob.id))
            .body(ByteStream::from(blob.bytes.clone()))
            .send()
            .await
            .map_err(|e| object_store("storing a blob", e))?;
        let mut connection = self.connection().await;
        let transaction = connection.transaction().await?;
        transaction
            .execute(
                "INSERT INTO relay_usage (account, bytes) VALUES ($1, 0) ON CONFLICT (account) DO NOTHING",
                &[&blob.account],
            )
            .await?;
        let used: i64 = transaction
            .query_one("SELECT bytes FROM relay_usage WHERE account = $1 FOR UPDATE", &[&blob.account])
            .await?
            .get(0);
        let used = to_u64(used);
        if let Some(quota) = blob.quota
            && used + size > quota
        {
            transaction.rollback().await?;
            return Err(StorageError::QuotaExceeded { used, size, quota });
        }
        let seq: i64 = transaction
            .query_one(
                "INSERT INTO relay_heads (workspace, head) VALUES ($1, 1)
                 ON CONFLICT (workspace) DO UPDATE SET head = relay_heads.head + 1 RETURNING head",
                &[&blob.workspace],
            )
            .await?
            .get(0);
        let inserted = transaction
            .execute(
                "INSERT INTO relay_blobs (workspace, id, seq, size) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace, id) DO NOTHING",
                &[&blob.workspace, &&blob.id.0[..], &seq, &to_i64(size)],
            )
            .await?;
        if inserted == 0 {
            // Stored by a concurrent upload meanwhile: its number stands, ours is given back.
            transaction.rollback().await?;
            drop(connection);
            let (seq, size) = self
                .existing(&blob.workspace, &blob.id)
                .await?
                .ok_or_else(|| StorageError::Corrupt { what: "a blob row vanished".into() })?;
            return Ok(StoredBlob { seq, size, created: false });
        }
        transaction
            .execute("UPDATE relay_usage SET bytes = bytes + $2 WHERE account = $1", &[&blob.account, &to_i64(size)])
            .await?;
        transaction.commit().await?;
        Ok(StoredBlob { seq: to_u64(seq), size, created: true })
    }

    async fn get_blob(&self, workspace: &str, id: &BlobId) -> Result<Option<Bytes>> {
        if self.existing(workspace, id).await?.is_none() {
            return Ok(None);
        }
        let object = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(Self::object_key(workspace, id))
            .send()
            .await
            .map_err(|e| object_store("reading a blob", e))?;
        let bytes = object.body.collect().await.map_err(|e| object_store("reading a blob", e))?.into_bytes();
        Ok(Some(bytes))
    }

    async fn blob_seq(&self, workspace: &str, id: &BlobId) -> Result<Option<u64>> {
        Ok(self.existing(workspace, id).await?.map(|(seq, _)| seq))
    }

    async fn changes(&self, workspace: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        let rows = self
            .connection()
            .await
            .query(
                "SELECT seq, id, size FROM relay_blobs WHERE workspace = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&workspace, &to_i64(after), &to_i64(limit as u64)],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                let id: Vec<u8> = row.get(1);
                let id = BlobId(
                    id.try_into().map_err(|_| StorageError::Corrupt { what: "a blob id in the database".into() })?,
                );
                Ok(Change { seq: to_u64(row.get(0)), id, size: to_u64(row.get(2)) })
            })
            .collect()
    }

    async fn head(&self, workspace: &str) -> Result<u64> {
        let row = self
            .connection()
            .await
            .query_opt("SELECT head FROM relay_heads WHERE workspace = $1", &[&workspace])
            .await?;
        Ok(row.map_or(0, |row| to_u64(row.get(0))))
    }

    async fn usage(&self, account: &str) -> Result<u64> {
        let row =
            self.connection().await.query_opt("SELECT bytes FROM relay_usage WHERE account = $1", &[&account]).await?;
        Ok(row.map_or(0, |row| to_u64(row.get(0))))
    }
}
