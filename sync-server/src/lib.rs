//! `adiuva-server`, the blind relay: accounts, workspaces of opaque ciphertext blobs in a
//! per-workspace sequence, device key envelopes, recovery records, invites, restore points,
//! tiers and rate limits. It never holds a key that decrypts user data: everything it stores
//! about a workspace is bytes chosen by clients, plus sizes and times.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use adiuva_server::{Config, storage::Embedded};
//! let storage = std::sync::Arc::new(Embedded::open("relay-data".as_ref())?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! adiuva_server::serve(listener, storage, Config::default(), std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! Design decisions, with their reasons:
//! - Storage is one narrow trait ([`storage::Storage`]): small records with compare-and-swap,
//!   and blob logs. Accounts, sessions, devices and the rest are built here on top of it, so a
//!   backend is small and both backends pass one contract suite.
//! - Blob uploads are acknowledged only once durable, and grouped: the embedded backend's one
//!   writer thread makes a whole group durable with one `fdatasync`.
//! - Authorization is per device, not only per account: a token names its device, and every
//!   workspace route checks that device against the workspace's device list.
//! - The crate is a library that builds the router; `main.rs` only parses configuration.

pub mod api;
pub mod auth;
pub mod backup;
pub mod blobs;
pub mod error;
pub mod grants;
pub mod limits;
pub mod storage;
pub mod workspaces;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::auth::Tokens;
use crate::blobs::Live;
use crate::limits::Limits;
use crate::storage::Storage;

/// What the server is started with, beyond where it stores and listens.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long an access token is valid.
    pub access_token_ttl: Duration,
    /// How long a read grant (`recovery/read`) is valid.
    pub read_grant_ttl: Duration,
    /// Requests per minute per client address on the routes without a token.
    pub anonymous_per_minute: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            read_grant_ttl: Duration::from_secs(10 * 60),
            anonymous_per_minute: 60,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub live: Live,
    /// Password hashes running at once (each takes 64 MiB).
    pub hashing: Semaphore,
}

impl AppState {
    pub async fn new(storage: Arc<dyn Storage>, config: &Config) -> Result<Self, storage::StorageError> {
        Ok(Self {
            tokens: Tokens::load(storage.as_ref(), config.access_token_ttl, config.read_grant_ttl).await?,
            storage,
            limits: Limits::new(config.anonymous_per_minute),
            live: Live::default(),
            hashing: Semaphore::new(auth::HASHING_AT_ONCE),
        })
    }
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests in
/// flight (so every acknowledged upload is durable) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    storage: Arc<dyn Storage>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(AppState::new(storage, &config).await?);
    let address = listener.local_addr()?;
    // Without TCP_NODELAY a small answer on a kept-alive connection waits for a delayed ACK.
    let listener = listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    info!(%address, "relay listening");
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    info!("relay stopped");
    Ok(())
}
