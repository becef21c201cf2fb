//! Deterministic simulation of what the store may meet: a disk that loses, reorders and tears
//! unsynced writes at a crash, whose `fdatasync` may fail (and then, as on Linux, forget the
//! pages it failed to write), whose writes may hit a full disk; and a model of sled that keeps
//! what it last flushed plus any prefix of what came after. Seeded: every failure prints the
//! seed, and `ADIUVA_SIM_SEED` replays it (`ADIUVA_SIM_POINTS` sets how many crash points the
//! long run goes through).
//!
//! After every simulated crash (or process restart) and reopen, the store must open and hold
//! exactly the acknowledged batches — plus, possibly, the one batch whose write was under way or
//! failed (its outcome was never reported), which from then on must stay.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{Disk, DiskFile};
use super::sled_tree::Tree;
use super::wal::Op;
use super::{ChunkStore, Entry, SledStore, StoreError, WriteBatch};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

const SECTOR: usize = 512;

#[derive(Default)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What is on the platter.
    durable: Vec<u8>,
    /// Written, not yet synced, oldest first: each sector of each may reach the disk at a
    /// crash or not, so they land out of order and torn (but a sector never goes back to an
    /// older version than one it held).
    pending: Vec<(usize, Vec<u8>)>,
}

#[derive(Default)]
struct TreeModel {
    current: BTreeMap<Vec<u8>, Vec<u8>>,
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Applied since the last checkpoint, in groups that a crash keeps or drops whole.
    since: Vec<Vec<Op>>,
    /// After an I/O error sled fails every call until it is opened again.
    poisoned: bool,
}

struct World {
    rng: Rng,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Directory entries as the running system sees them, and as a crash would find them.
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    tree: TreeModel,
    /// One operation in this many fails (0: none).
    pub fault_rate: u64,
    /// Operations left before the power goes out (`None`: it stays on).
    pub power_left: Option<u64>,
    /// Writes that need new space fail with ENOSPC.
    pub full: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Write,
    Sync,
    Meta,
}

impl World {
    pub fn new(seed: u64) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            rng: Rng::new(seed),
            inodes: HashMap::new(),
            next_inode: 0,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            tree: TreeModel::default(),
            fault_rate: 0,
            power_left: None,
            full: false,
        }))
    }

    /// One disk or sled operation: the power may be gone, or this one may fail.
    fn step(&mut self, kind: Kind) -> io::Result<()> {
        match &mut self.power_left {
            Some(0) => return Err(io::Error::other("the power is out")),
            Some(left) => *left -= 1,
            None => {}
        }
        if self.fault_rate > 0 && self.rng.one_in(self.fault_rate) {
            return Err(match kind {
                Kind::Write if self.rng.one_in(2) => io::Error::from(io::ErrorKind::StorageFull),
                _ => io::Error::other("EIO (simulated)"),
            });
        }
        Ok(())
    }

    fn inode(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let id = *self.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.inodes.entry(id).or_default())
    }

    fn create(&mut self, path: &Path) -> u64 {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, Inode::default());
        self.names.insert(path.to_owned(), self.next_inode);
        self.next_inode
    }

    fn write(&mut self, id: u64, offset: usize, bytes: &[u8]) -> io::Result<()> {
        self.step(Kind::Write)?;
        let grows = offset + bytes.len() > self.inodes[&id].data.len();
        let mut bytes = bytes;
        let mut result = Ok(());
        if grows && self.full {
            // Part of it may be written before the space runs out.
            bytes = &bytes[..self.rng.below(bytes.len() as u64 + 1) as usize];
            result = Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let inode = self.inodes.get_mut(&id).expect("open inode");
        write_into(&mut inode.data, offset, bytes);
        inode.pending.push((offset, bytes.to_vec()));
        result
    }

    fn sync(&mut self, id: u64) -> io::Result<()> {
        let synced = self.step(Kind::Sync);
        let inode = self.inodes.get_mut(&id).expect("open inode");
        let pending = std::mem::take(&mut inode.pending);
        if synced.is_err() {
            // Linux after a writeback error: some pages reached the disk, the others are
            // marked clean anyway (no later sync writes them), and reads still see them all.
            land_some(&mut self.rng, &mut inode.durable, pending);
            return synced;
        }
        for (offset, bytes) in pending {
            write_into(&mut inode.durable, offset, &bytes);
        }
        Ok(())
    }

    /// The machine loses power: unsynced writes reach the disk or not, sector by sector,
    /// torn inside a sector too; unsynced directory entries are kept or not; sled keeps what it
    /// flushed and a prefix of what followed.
    pub fn crash(&mut self) {
        let paths: Vec<PathBuf> = self.names.keys().chain(self.durable_names.keys()).cloned().collect();
        for path in paths {
            if self.names.get(&path) != self.durable_names.get(&path) && self.rng.one_in(2) {
                match self.names.get(&path) {
                    Some(&id) => self.durable_names.insert(path, id),
                    None => self.durable_names.remove(&path),
                };
            }
        }
        self.names = self.durable_names.clone();
        // Files no name reaches are gone for good.
        let reachable: std::collections::HashSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|id, _| reachable.contains(id));
        for inode in self.inodes.values_mut() {
            land_some(&mut self.rng, &mut inode.durable, std::mem::take(&mut inode.pending));
            inode.data = inode.durable.clone();
        }
        let state = self.sled_prefix();
        self.tree = TreeModel { current: state.clone(), durable: state, ..TreeModel::default() };
        self.power_left = None;
    }

    /// The process dies but the machine stays up: the page cache keeps everything; sled comes
    /// back with what it had written to its file, not yet durable.
    pub fn restart(&mut self) {
        let state = self.sled_prefix();
        self.tree.current = state;
        self.tree.poisoned = false;
        self.power_left = None;
    }

    /// What sled holds after losing its memory: its durable state and a random prefix of what
    /// followed (which stays in `since`).
    fn sled_prefix(&mut self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let kept = self.rng.below(self.tree.since.len() as u64 + 1) as usize;
        self.tree.since.truncate(kept);
        let mut state = self.tree.durable.clone();
        for group in &self.tree.since {
            apply(&mut state, group);
        }
        state
    }

    fn tree_step(&mut self, kind: Kind) -> Result<(), StoreError> {
        if self.tree.poisoned {
            return Err(StoreError::Io { source: io::Error::other("sled failed earlier") });
        }
        let result = self.step(kind).and_then(|()| {
            if kind == Kind::Sync && self.full && !self.tree.since.is_empty() {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            } else {
                Ok(())
            }
        });
        result.map_err(|e| {
            self.tree.poisoned = true;
            StoreError::io(e, Path::new("sled"))
        })
    }
}

/// Unsynced writes, oldest first, reaching the disk or not sector by sector, some sectors torn.
fn land_some(rng: &mut Rng, durable: &mut Vec<u8>, writes: Vec<(usize, Vec<u8>)>) {
    for (offset, bytes) in writes {
        for start in (0..bytes.len()).step_by(SECTOR) {
            let end = (start + SECTOR).min(bytes.len());
            let end = match rng.below(8) {
                0..=3 => continue,
                4 => start + rng.below((end - start) as u64) as usize,
                _ => end,
            };
            write_into(durable, offset + start, &bytes[start..end]);
        }
    }
}

fn write_into(file: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    if file.len() < offset + bytes.len() {
        file.resize(offset + bytes.len(), 0);
    }
    file[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn apply(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put(key, value) => state.insert(key.clone(), value.clone()),
            Op::Delete(key) => state.remove(key),
        };
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().expect("world lock")
}

#[derive(Clone)]
struct SimDisk(pub Arc<Mutex<World>>);

struct SimFile {
    world: Arc<Mutex<World>>,
    id: u64,
}

impl Disk for SimDisk {
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut world = lock(&self.0);
        world.step(Kind::Meta)?;
        let id = match world.names.get(path) {
            Some(&id) => id,
            None => world.create(path),
        };
        Ok(Box::new(SimFile { world: self.0.clone(), id }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(lock(&self.0).inode(path)?.data.clone())
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut world = lock(&self.0);
        world.step(Kind::Meta)?;
        let id = world.create(path);
        world.write(id, 0, bytes)?;
        world.sync(id)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut world = lock(&self.0);
        world.step(Kind::Meta)?;
        world.names.remove(path).map(drop).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut world = lock(&self.0);
        world.step(Kind::Meta)?;
        let id = world.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        world.names.insert(to.to_owned(), id);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut world = lock(&self.0);
        world.step(Kind::Sync)?;
        let World { names, durable_names, .. } = &mut *world;
        durable_names.retain(|path, _| path.parent() != Some(dir));
        durable_names
            .extend(names.iter().filter(|(path, _)| path.parent() == Some(dir)).map(|(p, &id)| (p.clone(), id)));
        Ok(())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

impl DiskFile for SimFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        lock(&self.world).write(self.id, offset as usize, bytes)
    }

    fn sync_data(&self) -> io::Result<()> {
        lock(&self.world).sync(self.id)
    }
}

struct SimTree(pub Arc<Mutex<World>>);

impl Tree for SimTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.0).tree.current.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let world = lock(&self.0);
        let entries = world.tree.current.range(prefix.to_vec()..).take_while(|(key, _)| key.starts_with(prefix));
        Ok(entries.map(|(key, value)| (key.clone(), value.clone())).collect())
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.scan_prefix(prefix)?.into_iter().map(|(key, _)| key).collect())
    }

    fn apply(&self, op: &Op) -> Result<(), StoreError> {
        self.apply_atomically(std::slice::from_ref(op))
    }

    fn apply_atomically(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut world = lock(&self.0);
        world.tree_step(Kind::Write)?;
        apply(&mut world.tree.current, ops);
        world.tree.since.push(ops.to_vec());
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        let mut world = lock(&self.0);
        world.tree_step(Kind::Sync)?;
        world.tree.durable = world.tree.current.clone();
        world.tree.since.clear();
        Ok(())
    }
}

/// The store's directory in the simulation.
const STORE: &str = "/sim/store";
/// A small log, so checkpoints and batches larger than the log come often.
const WAL_CAPACITY: u64 = 16 * 1024;

fn open(world: &Arc<Mutex<World>>) -> Result<SledStore, StoreError> {
    let disk = Arc::new(SimDisk(world.clone()));
    SledStore::open_with(Box::new(SimTree(world.clone())), disk, Path::new(STORE), WAL_CAPACITY)
}

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn read_all(store: &SledStore) -> Result<State, StoreError> {
    Ok(store.scan_prefix(b"")?.into_iter().collect())
}

/// A random batch over a small key space: small values, values large enough for files, and
/// now and then a batch too large for the log.
fn random_batch(rng: &mut Rng, serial: u64) -> WriteBatch {
    let mut batch = WriteBatch::default();
    let huge = rng.one_in(25);
    let puts = if huge { 8 } else { 1 + rng.below(4) };
    for index in 0..puts {
        let size = match rng.below(10) {
            _ if huge => 4000,
            0..=6 => 1 + rng.below(300) as usize,
            _ => 4097 + rng.below(6000) as usize,
        };
        let fill = (serial as u8).wrapping_add(index as u8);
        let mut value = vec![fill; size];
        value[..8.min(size)].copy_from_slice(&serial.to_le_bytes()[..8.min(size)]);
        batch.put(format!("k{:02}", rng.below(24)), value);
    }
    for _ in 0..rng.below(3) {
        batch.delete(format!("k{:02}", rng.below(24)));
    }
    batch
}

fn expected_after(state: &State, batch: &WriteBatch) -> State {
    let mut state = state.clone();
    for (key, value) in &batch.puts {
        state.insert(key.clone(), value.clone());
    }
    for key in &batch.deletes {
        state.remove(key);
    }
    state
}

/// The first key whose value differs, for the failure message.
fn difference(expected: &State, found: &State) -> String {
    let keys = expected.keys().chain(found.keys());
    let show = |value: Option<&Vec<u8>>| value.map(|v| format!("{} bytes, serial {:?}", v.len(), v.get(..8)));
    keys.map(|key| (key, show(expected.get(key)), show(found.get(key))))
        .find(|(_, expected, found)| expected != found)
        .map(|(key, expected, found)| {
            format!("{}: expected {expected:?}, found {found:?}", String::from_utf8_lossy(key))
        })
        .unwrap_or_default()
}

/// Runs `points` crash points from `seed`; returns how many batches were acknowledged.
/// (`base` is the seed to print: the one `ADIUVA_SIM_SEED` replays.)
fn run(base: u64, seed: u64, points: u64) -> u64 {
    let world = World::new(seed);
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut acked = State::new();
    // The state if the last unacknowledged batch took effect, until a writable open decides.
    let mut undecided: Option<State> = None;
    let mut serial = 0u64;
    let mut acknowledged = 0;
    let mut store = open(&world).unwrap_or_else(|e| panic!("seed {seed:#x}: a new store does not open: {e}"));
    for point in 0..points {
        let fail =
            |what: &str| -> ! { panic!("ADIUVA_SIM_SEED={base:x}, run seed {seed:#x}, crash point {point}: {what}") };
        {
            let mut w = lock(&world);
            w.fault_rate = [0, 40, 200][rng.below(3) as usize];
            w.power_left = (!rng.one_in(4)).then(|| rng.below(60));
        }
        loop {
            serial += 1;
            let batch = random_batch(&mut rng, serial);
            let expected = expected_after(&acked, &batch);
            match store.write(batch) {
                Ok(()) => {
                    acked = expected;
                    acknowledged += 1;
                    undecided = None;
                    let _ = store.sync();
                }
                Err(_) => {
                    // Fail-stop: no further write is taken; reads, if allowed, show no part of
                    // the failed batch.
                    if store.write(random_batch(&mut rng, 0)).is_ok() {
                        fail("a write was accepted after a failed one");
                    }
                    if let Ok(found) = read_all(&store)
                        && found != acked
                        && Some(&found) != undecided.as_ref()
                    {
                        fail("reads after a failed write do not show the acknowledged state");
                    }
                    undecided.get_or_insert(expected);
                    break;
                }
            }
            if rng.one_in(30) {
                break;
            }
        }
        drop(store);
        {
            let mut w = lock(&world);
            w.fault_rate = 0;
            if rng.one_in(2) {
                w.crash();
            } else {
                w.restart();
            }
            if rng.one_in(3) {
                w.full = !w.full;
            }
        }
        store = open(&world).unwrap_or_else(|e| fail(&format!("the store does not open: {e}")));
        let found = read_all(&store).unwrap_or_else(|e| fail(&format!("the store cannot be read: {e}")));
        let writable = store.writable();
        if found != acked {
            match &undecided {
                Some(state) if *state == found => {
                    if writable {
                        acked = found;
                        undecided = None;
                    }
                }
                _ => fail(&format!("acknowledged batches are lost: {}", difference(&acked, &found))),
            }
        } else if writable {
            undecided = None;
        }
    }
    acknowledged
}

/// The seed: `ADIUVA_SIM_SEED` if set, else one from the clock (printed, to replay a failure).
fn seed() -> u64 {
    let seed = std::env::var("ADIUVA_SIM_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
    println!("simulation seed {seed:#x} (replay with ADIUVA_SIM_SEED={seed:x})");
    seed
}

#[test]
fn ten_thousand_crash_points_lose_no_acknowledged_batch() {
    let seed = seed();
    let mut acknowledged = 0;
    for run_index in 0..20 {
        acknowledged += run(seed, seed.wrapping_add(run_index), 500);
    }
    println!("10000 crash points, {acknowledged} batches acknowledged, none lost");
}

/// The long run: `ADIUVA_SIM_POINTS` crash points (default 1,000,000).
#[test]
#[ignore = "long: run with --run-ignored"]
fn a_million_crash_points_lose_no_acknowledged_batch() {
    let seed = seed();
    let points: u64 = std::env::var("ADIUVA_SIM_POINTS").ok().and_then(|p| p.parse().ok()).unwrap_or(1_000_000);
    let mut acknowledged = 0;
    let mut done = 0;
    let mut run_index = 0;
    while done < points {
        let these = (points - done).min(1000);
        acknowledged += run(seed, seed.wrapping_add(run_index), these);
        done += these;
        run_index += 1;
    }
    println!("{done} crash points, {acknowledged} batches acknowledged, none lost");
}
