//! Work spread over the machine's cores: a run of items per core, the results in the items'
//! order. Used where the items are independent (blocks of a read view, the documents of a group
//! commit) and a run is worth more than starting a thread.

use std::sync::OnceLock;
use std::sync::mpsc::Receiver;

/// How many cores this process may use, read once: the standard library reads the cgroup's
/// quota files each time it is asked, which cost a single-event commit a tenth of its time.
pub(crate) fn count() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Where a piece of work may run: across the cores, or only on the calling thread when that is
/// already one of a thread per core (spreading again would put a square of threads on them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Spread {
    AcrossCores,
    OnThisThread,
}

impl Spread {
    /// For work done on each of `threads` threads at once.
    pub(crate) fn within(threads: usize) -> Self {
        if threads > 1 { Spread::OnThisThread } else { Spread::AcrossCores }
    }
}

/// `work` over `items` cut into one run per core, each a multiple of `align` long but the last,
/// the results in order; in one run on one core or below `min` items.
pub(crate) fn across<I: Sync, O: Send>(
    items: &[I],
    align: usize,
    min: usize,
    work: impl Fn(&[I]) -> O + Sync,
) -> Vec<O> {
    match run_length(items.len(), align, min) {
        Some(length) => on_threads(items.chunks(length), work),
        None => vec![work(items)],
    }
}

/// [`across`] for work that changes its items.
pub(crate) fn across_mut<I: Send, O: Send>(items: &mut [I], min: usize, work: impl Fn(&mut [I]) -> O + Sync) -> Vec<O> {
    match run_length(items.len(), 1, min) {
        Some(length) => on_threads(items.chunks_mut(length), work),
        None => vec![work(items)],
    }
}

/// The length of one core's run, or `None` when one run on this thread is best.
fn run_length(items: usize, align: usize, min: usize) -> Option<usize> {
    if items < min.max(2) {
        return None;
    }
    let cores = count();
    (cores > 1).then(|| items.div_ceil(cores).div_ceil(align).max(1) * align)
}

/// `work` on each run, the first on this thread and each other on a thread of its own.
fn on_threads<R: Send, O: Send>(runs: impl Iterator<Item = R>, work: impl Fn(R) -> O + Sync) -> Vec<O> {
    let mut runs = runs;
    let Some(first) = runs.next() else { return Vec::new() };
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = runs.map(|run| scope.spawn(move || work(run))).collect();
        let mut results = vec![work(first)];
        // The work returns its errors; a panic in it is the bug to see.
        results.extend(
            others.into_iter().map(|other| other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))),
        );
        results
    })
}

/// `items` dealt like cards into `hands` runs (at least one): run `k` holds items `k`,
/// `k + hands`, … in order, so loaders each taking a run finish about together and their results
/// can be taken back in the items' order with [`Dealt`].
pub(crate) fn deal<T>(items: impl IntoIterator<Item = T>, hands: usize) -> Vec<Vec<T>> {
    let hands = hands.max(1);
    let mut runs: Vec<Vec<T>> = (0..hands).map(|_| Vec::new()).collect();
    for (index, item) in items.into_iter().enumerate() {
        runs[index % hands].push(item);
    }
    runs
}

/// The results of loaders given the runs of [`deal`], one channel each, taken back in the order
/// of the items dealt.
pub(crate) struct Dealt<T> {
    loaders: Vec<Receiver<T>>,
    taken: usize,
}

impl<T> Dealt<T> {
    pub(crate) fn new(loaders: Vec<Receiver<T>>) -> Self {
        Self { loaders, taken: 0 }
    }

    /// The next item's result; `None` if its loader ended without sending it.
    pub(crate) fn next(&mut self) -> Option<T> {
        let loader = self.loaders.get(self.taken % self.loaders.len().max(1))?;
        self.taken += 1;
        loader.recv().ok()
    }
}
