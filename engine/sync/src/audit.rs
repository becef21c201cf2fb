//! Reading a workspace's log from the relay for an audit, read-only by construction on both
//! sides: the relay grants a short-lived read (`recovery/read`) instead of authorizing a
//! device, and the copy made of what it holds commits nothing, so neither the relay's device
//! list nor the workspace's changes.

use std::path::Path;

use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::recovery::Unwrapped;
use adiuva_engine::{KeyProtection, Workspace};
use adiuva_model::ErrorCode;
use tracing::debug;

use crate::account::retry_after_wait;
use crate::client::{RelayClient, Session};
use crate::error::{Result, SyncError};
use crate::restore::{RestoreFrom, unwrap_record};
use crate::sync::{self, Progress};

/// What a proof for a read grant signs (the relay's `READ_PROOF_CONTEXT`), then the workspace,
/// the device and the challenge, each on a line.
const READ_PROOF_CONTEXT: &str = "adiuva relay recovery read v1";

/// What [`copy_for_audit`] copied.
#[derive(Clone, Copy, Debug)]
pub struct AuditCopy {
    pub workspace_id: ulid::Ulid,
    /// Units of the relay's sequence copied (blobs that are not units passed over).
    pub units: usize,
    /// The relay's sequence number reached.
    pub head: u64,
}

/// Copies workspace `from.workspace` as the relay holds it into `dir` (a fresh, private
/// directory the caller removes afterwards), for reading: signs in as a throwaway device, opens
/// the recovery record with the phrase, proves the phrase for a read grant (renewed if it
/// expires during a long pull), pulls every unit with the page checks of any pull, then builds
/// the copy with [`Workspace::copy_from_units`] (every unit opened and checked first; nothing
/// committed) and closes it, ready for `Workspace::open_read_only`. The relay's device list is
/// not touched. A wrong phrase, a unit altered or of another workspace, or a page replayed or
/// cut short is a typed error.
pub fn copy_for_audit(
    dir: &Path,
    protection: KeyProtection,
    from: &RestoreFrom<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<AuditCopy> {
    let identity = DeviceIdentity::generate().map_err(adiuva_engine::Error::from)?;
    let client = RelayClient::new(from.server);
    let session = client.sign_in(false, from.email, from.password, identity.device_id())?;
    let record = client.get_recovery(&session.access_token, from.workspace)?;
    let unwrapped = unwrap_record(&record, from)?;
    let mut reader = GrantedReader { client, session, grant: String::new(), from, identity: &identity };
    reader.renew_grant(&unwrapped, Some(&record.challenge))?;
    let mut units = Vec::new();
    let mut cursor = 0;
    loop {
        let page = reader.call(&unwrapped, |client, token, grant| {
            client.changes_granted(token, Some(grant), from.workspace, cursor)
        })?;
        if page.changes.is_empty() {
            break;
        }
        for entry in page.changes {
            progress(Progress::Pulling { done: cursor, total: page.head });
            let bytes = reader.call(&unwrapped, |client, token, grant| {
                client.get_blob_granted(token, Some(grant), from.workspace, &entry.id)
            })?;
            if !sync::passed_over(&bytes) {
                units.push((entry.seq, bytes));
            }
            cursor = entry.seq;
        }
    }
    progress(Progress::Pulling { done: cursor, total: cursor });
    let workspace_id = unwrapped.workspace_id;
    let copy = Workspace::copy_from_units(dir, protection, identity, unwrapped, &units)?;
    // Closing records the copy's witness, which its read-only opening checks.
    drop(copy);
    Ok(AuditCopy { workspace_id, units: units.len(), head: cursor })
}

/// A session reading with a read grant: an expired access token is refreshed, an expired
/// grant proved for again, transient failures retried with backoff.
struct GrantedReader<'a> {
    client: RelayClient,
    session: Session,
    grant: String,
    from: &'a RestoreFrom<'a>,
    identity: &'a DeviceIdentity,
}

impl GrantedReader<'_> {
    /// A new grant, from `challenge` if one is at hand, else from a fresh recovery record's.
    fn renew_grant(&mut self, unwrapped: &Unwrapped, challenge: Option<&str>) -> Result<()> {
        let fresh;
        let challenge = match challenge {
            Some(challenge) => challenge,
            None => {
                fresh = self.client.get_recovery(&self.session.access_token, self.from.workspace)?.challenge;
                &fresh
            }
        };
        let message =
            format!("{READ_PROOF_CONTEXT}\n{}\n{}\n{challenge}", self.from.workspace, self.identity.device_id());
        let signature = unwrapped.keys.identity.sign(message.as_bytes());
        let grant = self.client.read_grant(&self.session.access_token, self.from.workspace, challenge, &signature)?;
        debug!(expires_at = %grant.expires_at, "read grant");
        self.grant = grant.grant;
        Ok(())
    }

    fn call<T>(&mut self, unwrapped: &Unwrapped, request: impl Fn(&RelayClient, &str, &str) -> Result<T>) -> Result<T> {
        let (mut refreshed, mut regranted, mut attempt) = (false, false, 0);
        loop {
            match request(&self.client, &self.session.access_token, &self.grant) {
                Err(SyncError::Relay { code: ErrorCode::RelayTokenExpired, .. }) if !refreshed => {
                    refreshed = true;
                    self.session = self.client.refresh(&self.session.refresh_token)?;
                }
                Err(SyncError::Relay { code: ErrorCode::RelayGrantExpired, .. }) if !regranted => {
                    regranted = true;
                    self.renew_grant(unwrapped, None)?;
                }
                Err(error) if retry_after_wait(&error, &mut attempt) => {}
                other => return other,
            }
        }
    }
}
