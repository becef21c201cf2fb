//! Background work: one registry, so whatever must run beside the API (compaction, the search
//! index, live sync with the relay and listening for peers now; plugins as they land) is started and
//! stopped in one place. Each job runs on a blocking thread, never while the daemon is
//! stopping, and `stop` waits for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

use super::Shared;

/// How often documents in memory get their tails folded into snapshots. Commits compact a
/// document once its tail is long; this folds the short tails an idle daemon leaves, so the
/// next process to open the workspace replays nothing.
const COMPACT_EVERY: Duration = Duration::from_secs(300);

/// How often the search index takes in what was committed or imported since it last looked
/// (the first time: builds it), so new text is embedded off the search path and outside the
/// workspace lock.
const INDEX_EVERY: Duration = Duration::from_secs(2);

pub struct Registry {
    stopping: watch::Receiver<bool>,
    jobs: Vec<(&'static str, JoinHandle<()>)>,
}

impl Registry {
    pub fn new(stopping: watch::Receiver<bool>) -> Self {
        Self { stopping, jobs: Vec::new() }
    }

    /// Runs `work` every `period` (first after one period) until the daemon stops.
    pub fn every(&mut self, name: &'static str, period: Duration, work: impl Fn() + Send + Sync + 'static) {
        let stopping = self.stopping.clone();
        let work = Arc::new(work);
        let job = async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    _ = super::stopped(stopping.clone()) => break,
                    _ = ticks.tick() => {
                        let work = work.clone();
                        if let Err(error) = tokio::task::spawn_blocking(move || work()).await {
                            warn!(%error, "background job failed");
                        }
                    }
                }
            }
            debug!("stopped");
        };
        self.jobs.push((name, tokio::spawn(job.instrument(info_span!("background", job = name)))));
    }

    /// Runs `work` once, on a blocking thread of its own, for as long as it likes: it must
    /// return soon after [`Stopping::is_set`] turns true.
    pub fn thread(&mut self, name: &'static str, work: impl FnOnce(Stopping) + Send + 'static) {
        let stopping = Stopping(self.stopping.clone());
        let span = info_span!("background", job = name);
        let job = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            work(stopping);
            debug!("stopped");
        });
        self.jobs.push((name, job));
    }

    /// Runs `job` (given the daemon's stopping flag) as a task of its own; it must return soon
    /// after the flag turns true.
    pub fn task<F>(&mut self, name: &'static str, job: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let job = job(self.stopping.clone());
        self.jobs.push((name, tokio::spawn(job.instrument(info_span!("background", job = name)))));
    }

    /// Waits for every job to finish its current run and stop.
    pub async fn stop(self) {
        for (name, job) in self.jobs {
            if let Err(error) = job.await {
                warn!(job = name, %error, "background job ended abnormally");
            }
        }
    }
}

/// What a long-running blocking job looks at to know the daemon is stopping.
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Sleeps for `duration`, or less if the daemon stops meanwhile.
    pub fn sleep(&self, duration: Duration) {
        let until = std::time::Instant::now() + duration;
        while !self.is_set() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(200)));
        }
    }
}

/// The daemon's background jobs.
pub fn register_all(registry: &mut Registry, shared: &Arc<Shared>, dir: &std::path::Path) {
    let compacting = shared.clone();
    registry.every("compaction", COMPACT_EVERY, move || {
        let compacted = compacting.workspace().compact_loaded();
        if let Err(error) = compacted {
            warn!(%error, "compaction failed; will retry");
        }
    });
    let indexing = shared.clone();
    registry.every("search-index", INDEX_EVERY, move || {
        if let Err(error) = indexing.update_search_index(false, &mut |_| {}) {
            warn!(%error, "indexing failed; will retry");
        }
    });
    let syncing = shared.clone();
    registry.thread("relay-sync", move |stopping| super::live_sync::run_sync(&syncing, &stopping));
    let listening = shared.clone();
    registry.thread("relay-live", move |stopping| super::live_sync::run_socket(&listening, &stopping));
    let peering = shared.clone();
    let dir = dir.to_owned();
    registry.task("peer-listener", move |stopping| super::peers::listen(peering, dir, stopping));
}
