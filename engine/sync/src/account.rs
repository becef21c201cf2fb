//! The device's relay account: the relay's address, the email and the session tokens, kept in
//! the device setting `sync/account` (sealed under this device's storage key, never synced),
//! and [`Relay`], the authorized connection every sync step goes through: it refreshes an
//! expired access token once (storing the rotated refresh token before anything else) and
//! retries transient failures with backoff.

use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::ErrorCode;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::client::{AccountView, RelayClient, Session};
use crate::error::{Result, SyncError};

/// The device setting holding the account.
const ACCOUNT_SETTING: &str = "sync/account";
/// Attempts of a request that fails transiently, the first included.
const ATTEMPTS: u32 = 4;
/// The first wait between attempts; each later one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait honoured from a `Retry-After`.
const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// The account this device syncs through.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub server: String,
    pub email: String,
    session: Session,
}

impl Account {
    /// The account stored on this device, if any.
    pub fn load(workspace: &Workspace) -> Result<Option<Account>> {
        let Some(bytes) = workspace.device_setting(ACCOUNT_SETTING)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            SyncError::Engine(adiuva_engine::Error::WorkspaceFormat {
                detail: format!("the stored relay account {}", adiuva_engine::json_error(&error)),
            })
        })
    }

    /// The session's access token (it may have expired: [`account_view`] refreshes it).
    pub(crate) fn access_token(&self) -> &str {
        &self.session.access_token
    }

    fn store(&self, workspace: &mut Workspace) -> Result<()> {
        let bytes = serde_json::to_vec(self)
            .map_err(|_| SyncError::Engine(adiuva_engine::Error::Encode { what: "relay account" }))?;
        Ok(workspace.set_device_setting(ACCOUNT_SETTING, &bytes)?)
    }
}

/// Creates an account (`register`) or signs in to one for this device, stores the session on
/// the device, and makes sure the relay holds this workspace (the first device of the
/// account to sign in creates it; later ones are authorized by a device already there, at its
/// next sync).
pub fn sign_in(
    workspace: &mut Workspace,
    server: &str,
    email: &str,
    password: &str,
    register: bool,
) -> Result<AccountView> {
    let client = RelayClient::new(server);
    let session = client.sign_in(register, email, password, workspace.device_id())?;
    let account = Account { server: client.server().to_owned(), email: email.trim().to_owned(), session };
    account.store(workspace)?;
    let mut relay = Relay { client, account };
    let ws = workspace.workspace_id().to_string();
    if relay.call(workspace, |client, token| client.create_workspace(token, &ws))? {
        info!(workspace = %ws, "the relay holds this workspace now");
    }
    relay.call(workspace, |client, token| client.me(token))
}

/// Forgets the account on this device (the relay keeps what it holds).
pub fn sign_out(workspace: &mut Workspace) -> Result<bool> {
    let had = Account::load(workspace)?.is_some();
    workspace.remove_device_setting(ACCOUNT_SETTING)?;
    Ok(had)
}

/// The account as the relay shows it now.
pub fn account_view(workspace: &mut Workspace) -> Result<AccountView> {
    let mut relay = Relay::of(workspace)?;
    relay.call(workspace, |client, token| client.me(token))
}

/// An authorized connection to the account's relay.
pub(crate) struct Relay {
    pub client: RelayClient,
    pub account: Account,
}

impl Relay {
    /// The connection of the account stored on this device.
    pub fn of(workspace: &Workspace) -> Result<Self> {
        let account = Account::load(workspace)?.ok_or(SyncError::NotSignedIn)?;
        Ok(Self { client: RelayClient::new(&account.server), account })
    }

    /// A connection for a session not stored in a workspace yet (a restore in progress).
    pub fn unstored(client: RelayClient, email: &str, session: Session) -> Self {
        let account = Account { server: client.server().to_owned(), email: email.to_owned(), session };
        Self { client, account }
    }

    /// Stores the session in `workspace` (a restore, once the workspace exists).
    pub fn store(&self, workspace: &mut Workspace) -> Result<()> {
        self.account.store(workspace)
    }

    /// Runs `request` with the access token: an expired token is refreshed once (the new
    /// session stored at once, since the old refresh token is spent), transient failures are
    /// retried with exponential backoff (or the relay's `Retry-After`, capped).
    pub fn call<T>(
        &mut self,
        workspace: &mut Workspace,
        request: impl Fn(&RelayClient, &str) -> Result<T>,
    ) -> Result<T> {
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            match request(&self.client, &self.account.session.access_token) {
                Err(SyncError::Relay { code: ErrorCode::RelayTokenExpired, .. }) if !refreshed => {
                    refreshed = true;
                    self.account.session = self.client.refresh(&self.account.session.refresh_token)?;
                    self.account.store(workspace)?;
                    debug!("access token refreshed");
                }
                Err(error) if retry_after_wait(&error, &mut attempt) => {}
                other => return other,
            }
        }
    }
}

/// Whether a request that failed with `error` on attempt number `attempt` (from 0) is worth
/// another: if the failure is transient and attempts remain, waits (exponential backoff, or
/// the relay's `Retry-After`, capped), counts the attempt and says yes.
pub(crate) fn retry_after_wait(error: &SyncError, attempt: &mut u32) -> bool {
    if !error.is_transient() || *attempt + 1 >= ATTEMPTS {
        return false;
    }
    let wait = match error {
        SyncError::Relay { retry_after: Some(seconds), .. } => Duration::from_secs(*seconds).min(LONGEST_WAIT),
        _ => FIRST_BACKOFF * 2u32.pow(*attempt),
    };
    debug!(%error, attempt = *attempt, wait_ms = wait.as_millis() as u64, "retrying");
    std::thread::sleep(wait);
    *attempt += 1;
    true
}
