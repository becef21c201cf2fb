//! Reading a workspace's log from the relay for an audit, read-only by construction on both
//! sides: the relay grants a short-lived read (`recovery/read`) instead of authorizing a
//! device, and the copy made of what it holds commits nothing, so neither the relay's device
//! list nor the workspace's changes.

use std::path::Path;

use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::recovery::Unwrapped;
use adiuva_engine::{KeyProtection, Workspace};
use adiuva_model::ErrorCode;
use tracing::{debug, warn};

use crate::account::retry_after_wait;
use crate::client::{RelayClient, Session};
use crate::error::{Result, SyncError};
use crate::restore::{RestoreFrom, unwrap_record};
use crate::sync::{self, Progress};

/// What a proof for a read grant signs (the relay's `READ_PROOF_CONTEXT`), then the workspace,
/// the device and the challenge, each on a line.
const READ_PROOF_CONTEXT: &str = "adiuva relay recovery read v1";

/// What [`copy_for_audit`] copied.
#[derive(Debug)]
pub struct AuditCopy {
    pub workspace_id: ulid::Ulid,
    /// Units of the relay's sequence copied (blobs that are not units passed over).
    pub units: usize,
    /// The relay's sequence number reached.
    pub head: u64,
    /// What every device refuses of the log, and the units that do not open (altered, of
    /// another workspace, under an epoch the recovery key lacks), by unit number: the copy
    /// goes on without them, and the audit reports them.
    pub refused: Vec<(u64, adiuva_engine::Error)>,
}

/// Copies workspace `from.workspace` as the relay holds it into `dir` (a fresh, private
/// directory the caller removes afterwards), for reading: signs in as a throwaway device, opens
/// the recovery record with the phrase, proves the phrase for a read grant (renewed if it
/// expires during a long pull), pulls every unit with the page checks of any pull, signs the
/// throwaway session out (revoked on the relay, success or not), then builds
/// the copy with [`Workspace::copy_from_units`] (every unit opened and checked first; nothing
/// committed) and closes it, ready for `Workspace::open_read_only`. The relay's device list is
/// not touched. A wrong phrase, or a page replayed or cut short, is a typed error; a unit
/// altered or of another workspace is [`AuditCopy::refused`].
pub fn copy_for_audit(
    dir: &Path,
    protection: KeyProtection,
    from: &RestoreFrom<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<AuditCopy> {
    let identity = DeviceIdentity::generate().map_err(adiuva_engine::Error::from)?;
    let client = RelayClient::new(from.server);
    let session = client.sign_in(false, from.email, from.password, identity.device_id())?;
    let mut reader = GrantedReader { client, session, grant: String::new(), from, identity: &identity };
    let pulled = reader.pull(progress);
    // The throwaway session goes too, whatever happened: nothing granted outlives the audit.
    reader.sign_out();
    let Pulled { unwrapped, units, head } = pulled?;
    let workspace_id = unwrapped.workspace_id;
    let existed = dir.exists();
    let (copy, refused) =
        Workspace::copy_from_units(dir, protection, identity, unwrapped, &units).inspect_err(|_| {
            // A copy that did not build is of no use to anyone (units that did not open may leave
            // the root without its start).
            if !existed && let Err(error) = std::fs::remove_dir_all(dir) {
                warn!(dir = %dir.display(), %error, "could not remove a copy that did not build");
            }
        })?;
    // Closing records the copy's witness, which its read-only opening checks.
    drop(copy);
    Ok(AuditCopy { workspace_id, units: units.len(), head, refused })
}

/// What an audit pulled: the recovery record opened with the phrase, every unit of the
/// sequence with its number, and the sequence number reached.
struct Pulled {
    unwrapped: Unwrapped,
    units: Vec<(u64, Vec<u8>)>,
    head: u64,
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
    /// Opens the recovery record with the phrase, takes a read grant, and pulls every unit of
    /// the sequence (blobs that are not units passed over).
    fn pull(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<Pulled> {
        let workspace = self.from.workspace;
        let record = self.client.get_recovery(&self.session.access_token, workspace)?;
        let unwrapped = unwrap_record(&record, self.from)?;
        self.renew_grant(&unwrapped, Some(&record.challenge))?;
        let mut units = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self.call(&unwrapped, |client, token, grant| {
                client.changes_granted(token, Some(grant), workspace, cursor)
            })?;
            if page.changes.is_empty() {
                break;
            }
            for entry in page.changes {
                progress(Progress::Pulling { done: cursor, total: page.head });
                let bytes = self.call(&unwrapped, |client, token, grant| {
                    client.get_blob_granted(token, Some(grant), workspace, &entry.id)
                })?;
                if !sync::passed_over(&bytes) {
                    units.push((entry.seq, bytes));
                }
                cursor = entry.seq;
            }
        }
        progress(Progress::Pulling { done: cursor, total: cursor });
        Ok(Pulled { unwrapped, units, head: cursor })
    }

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

    /// Revokes the session on the relay (refreshed first if its access token expired).
    fn sign_out(&mut self) {
        let mut signed_out = self.client.logout(&self.session.access_token);
        if let Err(SyncError::Relay { code: ErrorCode::RelayTokenExpired, .. }) = signed_out {
            signed_out = self
                .client
                .refresh(&self.session.refresh_token)
                .and_then(|session| self.client.logout(&session.access_token));
        }
        if let Err(error) = signed_out {
            warn!(%error, "could not end the audit's session on the relay");
        }
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
