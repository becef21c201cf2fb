//! Live sync with the account's relay, while the daemon runs: a sync shortly after local
//! commits (debounced, so a burst of writes goes out as one push), whenever the relay's live
//! socket announces new blobs, and again with growing waits while the relay cannot be
//! reached. `POST /v1/sync` (what `adiuva sync` uses while a daemon runs) is the same sync, run
//! at once. The outcome (online or not, the last error) is what `GET /v1/sync` adds to the
//! stored sync state. After a sync that went through, a restore point once a day.
//!
//! Each sync holds the workspace for as long as it takes, like any request; to keep an
//! unreachable relay from holding every request for the length of its retries, the relay is
//! asked whether it answers at all first, without the workspace.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use adiuva_model::ErrorCode;
use adiuva_sync::{LiveEndpoint, LiveSocket, RelayClient, SyncError};
use tracing::{debug, info, warn};

use super::Shared;
use super::background::Stopping;
use crate::relay::SyncOutcome;

/// How long a commit waits for more before the sync it triggers starts.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// The first wait before trying an unreachable relay again; each later one doubles.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries (and between syncs when nothing wakes the daemon: the live
/// socket may have missed something while it reconnected).
const LONGEST_WAIT: Duration = Duration::from_secs(60);
/// How often the daemon makes a restore point (after a sync that went through).
const RESTORE_POINT_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// The device setting holding when this device last made one (RFC 3339).
const LAST_RESTORE_POINT: &str = "sync/last-restore-point";
/// How often a waiting job looks whether the daemon is stopping.
const STOP_POLL: Duration = Duration::from_millis(500);

/// The live sync's shared state: the wake-up flag and the last outcome.
#[derive(Default)]
pub struct LiveSync {
    woken: Mutex<bool>,
    signal: Condvar,
    state: Mutex<LiveState>,
}

/// What the last sync attempt found.
#[derive(Clone, Debug, Default)]
pub struct LiveState {
    /// Whether the relay answered the last attempt (`None` before the first).
    pub online: Option<bool>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
}

impl LiveSync {
    /// Asks for a sync soon (a local commit, or the relay announced something).
    pub fn wake(&self) {
        *lock(&self.woken) = true;
        self.signal.notify_all();
    }

    pub fn state(&self) -> LiveState {
        lock(&self.state).clone()
    }

    /// Waits up to `timeout` for a wake-up; whether one came (and takes it).
    fn wait(&self, timeout: Duration) -> bool {
        let mut woken = lock(&self.woken);
        if !*woken {
            woken =
                self.signal.wait_timeout(woken, timeout).map(|(guard, _)| guard).unwrap_or_else(|p| p.into_inner().0);
        }
        std::mem::take(&mut *woken)
    }

    fn forget_wake(&self) {
        *lock(&self.woken) = false;
    }

    fn record(&self, online: bool, error: Option<&SyncError>) {
        let mut state = lock(&self.state);
        state.online = Some(online);
        state.last_error = error.map(ToString::to_string);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Syncs once now. `None` without an account.
pub fn sync_now(shared: &Shared) -> Result<Option<SyncOutcome>, SyncError> {
    let Some(account) = adiuva_sync::Account::load(&shared.workspace())? else { return Ok(None) };
    let result = RelayClient::new(&account.server).health().and_then(|()| {
        let mut workspace = shared.workspace();
        let result = adiuva_sync::sync_once(&mut workspace, &mut |_| {});
        // The workspace was held throughout: the commits that woke the job meanwhile were its own.
        shared.live.forget_wake();
        result
    });
    let error = match result {
        Ok(report) => {
            shared.live.record(true, None);
            return Ok(Some(SyncOutcome::synced(&report)));
        }
        Err(error) => error,
    };
    shared.live.record(!error.is_transient(), Some(&error));
    if !error.is_transient() {
        return Err(error);
    }
    let waiting = shared.workspace().relay_waiting(&account.server)?;
    Ok(Some(SyncOutcome::offline(&error, waiting)))
}

/// The live sync job: syncs when woken (after a short debounce), at start, after each retry
/// wait while offline, and at the latest every [`LONGEST_WAIT`].
pub fn run_sync(shared: &Shared, stopping: &Stopping) {
    let mut retry: Option<Duration> = None;
    let mut next = Instant::now();
    while !stopping.is_set() {
        let now = Instant::now();
        if now < next {
            if !shared.live.wait((next - now).min(STOP_POLL)) {
                continue;
            }
            // A burst of commits goes out as one push.
            std::thread::sleep(DEBOUNCE);
            shared.live.forget_wake();
        }
        next = match sync_now(shared) {
            Ok(Some(outcome)) if outcome.offline.is_some() => {
                let wait = retry.map_or(FIRST_RETRY, |wait| (wait * 2).min(LONGEST_WAIT));
                debug!(wait_ms = wait.as_millis() as u64, "relay unreachable; trying again later");
                retry = Some(wait);
                Instant::now() + wait
            }
            Ok(Some(outcome)) => {
                if retry.take().is_some() {
                    info!("the relay answers again");
                }
                debug!(pushed = outcome.pushed, pulled = outcome.pulled, "live sync");
                restore_point_if_due(shared);
                Instant::now() + LONGEST_WAIT
            }
            Ok(None) => Instant::now() + LONGEST_WAIT,
            Err(error) => {
                warn!(%error, "live sync failed; will retry");
                Instant::now() + LONGEST_WAIT
            }
        };
    }
}

/// Makes a restore point if this device made none in the last [`RESTORE_POINT_EVERY`]; a
/// failure is tried again after the next sync.
fn restore_point_if_due(shared: &Shared) {
    let mut workspace = shared.workspace();
    let last = workspace
        .device_setting(LAST_RESTORE_POINT)
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok());
    let now = chrono::Utc::now();
    if last.is_some_and(|last| now.signed_duration_since(last) < RESTORE_POINT_EVERY) {
        return;
    }
    match adiuva_sync::backup_now(&mut workspace, &mut |_| {}) {
        Ok(point) => {
            info!(id = %point.id, bytes = point.size_bytes, "restore point made");
            if let Err(error) = workspace.set_device_setting(LAST_RESTORE_POINT, now.to_rfc3339().as_bytes()) {
                warn!(%error, "cannot record when the restore point was made");
            }
        }
        Err(error) => warn!(%error, "making a restore point failed; will try again after the next sync"),
    }
}

/// The live socket job: keeps the relay's live socket open (reconnecting with growing waits,
/// refreshing the access token when it expired) and wakes the sync job at each announcement,
/// the first one, at each connection, included.
pub fn run_socket(shared: &Shared, stopping: &Stopping) {
    let mut retry = FIRST_RETRY;
    while !stopping.is_set() {
        // Its own statement: a guard in a match's scrutinee would be held through the arms' sleeps.
        let endpoint = LiveEndpoint::of(&shared.workspace());
        let endpoint = match endpoint {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => {
                stopping.sleep(LONGEST_WAIT);
                continue;
            }
            Err(error) => {
                warn!(%error, "cannot read the relay account");
                stopping.sleep(LONGEST_WAIT);
                continue;
            }
        };
        match LiveSocket::connect(&endpoint, STOP_POLL) {
            Ok(mut socket) => {
                retry = FIRST_RETRY;
                debug!("live socket open");
                while !stopping.is_set() {
                    match socket.next_head() {
                        Ok(Some(_)) => shared.live.wake(),
                        Ok(None) => {}
                        Err(error) => {
                            debug!(%error, "live socket closed");
                            break;
                        }
                    }
                }
            }
            Err(SyncError::Relay { code: ErrorCode::RelayTokenExpired, .. }) => {
                // Asking for the account refreshes the session.
                let refreshed = adiuva_sync::account_view(&mut shared.workspace());
                if let Err(error) = refreshed {
                    debug!(%error, "cannot refresh the relay session");
                    stopping.sleep(retry);
                    retry = (retry * 2).min(LONGEST_WAIT);
                }
            }
            Err(error) => {
                debug!(%error, "live socket unavailable");
                stopping.sleep(retry);
                retry = (retry * 2).min(LONGEST_WAIT);
            }
        }
    }
}
