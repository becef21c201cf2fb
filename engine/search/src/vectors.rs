//! The vector side: every chunk's embedding kept as int8 (one scale per vector: 388 bytes
//! instead of 1,536), scanned with integer dot products against the int8 query, the best
//! candidates then rescored against the float query. Stored between runs as a cache keyed by
//! the hash of what was embedded, so an unchanged chunk is never embedded twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use adiuva_model::RecordId;

use crate::embed::DIMENSIONS;

/// The BLAKE3 hash of a model id and the text it embedded.
pub type ContentHash = [u8; 32];

/// An embedding in int8: `values[i] * scale` ≈ the float.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub scale: f32,
    pub values: Box<[i8]>,
}

impl Quantized {
    pub fn new(embedding: &[f32]) -> Self {
        let max = embedding.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let values = embedding.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect();
        Self { scale, values }
    }

    /// This vector, borrowed.
    pub fn view(&self) -> VectorRef<'_> {
        VectorRef { scale: self.scale, values: &self.values }
    }
}

/// An int8 embedding held elsewhere (a row of the table, a [`Quantized`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VectorRef<'a> {
    pub scale: f32,
    pub values: &'a [i8],
}

impl VectorRef<'_> {
    pub fn to_owned(self) -> Quantized {
        Quantized { scale: self.scale, values: self.values.into() }
    }

    /// The cosine with a float query (both of unit length).
    pub fn dot_f32(self, query: &[f32]) -> f32 {
        self.values.iter().zip(query).map(|(a, b)| f32::from(*a) * b).sum::<f32>() * self.scale
    }
}

/// The integer dot product of a row with the query widened to i16: one plain loop over
/// fixed-length arrays, which the compiler vectorizes (16-bit multiply-adds into 32-bit sums);
/// a product fits in i16, a row's sum of 384 in i32.
#[inline(always)]
fn dot_i8(row: &[i8; DIMENSIONS], query: &[i16; DIMENSIONS]) -> i32 {
    row.iter().zip(query).map(|(a, b)| i32::from(*a) * i32::from(*b)).sum()
}

/// The hash under which `text`'s embedding by `model` is cached.
pub fn content_hash(model: &str, text: &str) -> ContentHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(model.len() as u64).to_le_bytes());
    hasher.update(model.as_bytes());
    hasher.update(text.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Every chunk's vector in one table the scan reads straight through: row `n` is
/// `values[n * DIMENSIONS..][..DIMENSIONS]` times `scales[n]`, of chunk `chunks[n]` of
/// `records[n]`. A removed row is filled by the last one (its record's row list follows it),
/// so the table never has holes.
#[derive(Default)]
pub struct VectorTable {
    values: Vec<[i8; DIMENSIONS]>,
    scales: Vec<f32>,
    records: Vec<RecordId>,
    chunks: Vec<u32>,
    hashes: Vec<ContentHash>,
    by_record: HashMap<RecordId, Vec<usize>>,
}

/// A record found by meaning: its best chunk and that chunk's cosine with the query.
#[derive(Clone, Debug)]
pub struct VectorHit {
    pub record: RecordId,
    pub chunk: u32,
    pub score: f32,
}

impl VectorTable {
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    fn row(&self, at: usize) -> VectorRef<'_> {
        VectorRef { scale: self.scales[at], values: &self.values[at] }
    }

    /// Adds chunk `chunk` of `record` (a vector of another length is padded or cut to
    /// [`DIMENSIONS`]; the model gives none such).
    pub fn insert(&mut self, record: RecordId, chunk: u32, hash: ContentHash, vector: Quantized) {
        let mut values = [0i8; DIMENSIONS];
        for (slot, value) in values.iter_mut().zip(vector.values.iter()) {
            *slot = *value;
        }
        let at = self.len();
        self.by_record.entry(record).or_default().push(at);
        self.values.push(values);
        self.scales.push(vector.scale);
        self.records.push(record);
        self.chunks.push(chunk);
        self.hashes.push(hash);
    }

    /// Removes every chunk of `record`, returning their hashes and vectors.
    pub fn remove(&mut self, record: RecordId) -> Vec<(ContentHash, Quantized)> {
        let Some(mut rows) = self.by_record.remove(&record) else { return Vec::new() };
        // From the end, so a row still to remove is never the one moved into a hole.
        rows.sort_unstable_by(|a, b| b.cmp(a));
        let mut removed = Vec::with_capacity(rows.len());
        for at in rows {
            let last = self.len() - 1;
            removed.push((self.hashes[at], self.row(at).to_owned()));
            self.values.swap_remove(at);
            self.scales.swap_remove(at);
            self.records.swap_remove(at);
            self.chunks.swap_remove(at);
            self.hashes.swap_remove(at);
            if at != last {
                // The last row moved into the hole: its record's list follows it.
                let moved = self.records[at];
                if let Some(list) = self.by_record.get_mut(&moved) {
                    for slot in list.iter_mut().filter(|slot| **slot == last) {
                        *slot = at;
                    }
                }
            }
        }
        removed
    }

    /// Every chunk of `record`: its hash and vector.
    pub fn of_record(&self, record: RecordId) -> Vec<(ContentHash, Quantized)> {
        let rows = self.by_record.get(&record).map(Vec::as_slice).unwrap_or_default();
        rows.iter().map(|&at| (self.hashes[at], self.row(at).to_owned())).collect()
    }

    /// Every stored vector by its hash (what the cache persists).
    pub fn entries(&self) -> impl Iterator<Item = (&ContentHash, VectorRef<'_>)> {
        self.hashes.iter().enumerate().map(|(at, hash)| (hash, self.row(at)))
    }

    /// The `limit` records closest to `query`, among those `admit` lets through if there is a
    /// filter: an int8 scan keeps the best chunks (a margin of candidates beyond `limit`),
    /// rescored in float. Without a filter the scan reads the table straight through; with
    /// one, `admit` is asked once per record and only admitted rows are read.
    pub fn search(&self, query: &[f32], limit: usize, admit: Option<&dyn Fn(RecordId) -> bool>) -> Vec<VectorHit> {
        if limit == 0 || query.len() != DIMENSIONS {
            return Vec::new();
        }
        let query_q = Quantized::new(query);
        let mut wide = [0i16; DIMENSIONS];
        for (slot, value) in wide.iter_mut().zip(query_q.values.iter()) {
            *slot = i16::from(*value);
        }
        let admitted: Option<Vec<usize>> = admit.map(|admit| {
            let mut rows: Vec<usize> = self
                .by_record
                .iter()
                .filter(|(record, _)| admit(**record))
                .flat_map(|(_, rows)| rows.iter().copied())
                .collect();
            // In table order, so the scan reads memory forwards.
            rows.sort_unstable();
            rows
        });
        let scan = Scan {
            values: &self.values,
            scales: &self.scales,
            first: 0,
            rows: admitted.as_deref(),
            query: &wide,
            capacity: (limit * 8).max(64),
        };
        let best = scan.run_in_halves();
        let mut by_record: HashMap<RecordId, VectorHit> = HashMap::new();
        for at in best.rows() {
            let (record, chunk) = (self.records[at], self.chunks[at]);
            let score = self.row(at).dot_f32(query);
            let hit = by_record.entry(record).or_insert(VectorHit { record, chunk, score });
            if score > hit.score {
                *hit = VectorHit { record, chunk, score };
            }
        }
        let mut hits: Vec<VectorHit> = by_record.into_values().collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.record.cmp(&b.record)));
        hits.truncate(limit);
        hits
    }

    /// Bytes the vectors take in memory.
    pub fn memory_bytes(&self) -> usize {
        self.len()
            * (DIMENSIONS + size_of::<f32>() + size_of::<RecordId>() + size_of::<u32>() + size_of::<ContentHash>())
    }
}

/// Rows a scan must have for a second thread to take half: below it, starting the thread costs
/// more than the half it would read.
const ROWS_FOR_TWO_THREADS: usize = 32_768;

/// One pass of the int8 scan: every row (or only `rows`), the best `capacity` kept.
#[derive(Clone, Copy)]
struct Scan<'a> {
    values: &'a [[i8; DIMENSIONS]],
    scales: &'a [f32],
    /// The table's row number of `values[0]`.
    first: usize,
    /// Row numbers of the table to read instead of all of `values`.
    rows: Option<&'a [usize]>,
    query: &'a [i16; DIMENSIONS],
    capacity: usize,
}

impl Scan<'_> {
    /// Runs a long scan as two halves on two threads: it reads memory at the pace one core
    /// can ask for it, and a second core asks for as much again.
    fn run_in_halves(self) -> Best {
        let rows = self.rows.map_or(self.values.len(), <[usize]>::len);
        if rows < ROWS_FOR_TWO_THREADS {
            return self.run();
        }
        let (left, right) = match self.rows {
            None => {
                let middle = self.values.len() / 2;
                let (values_left, values_right) = self.values.split_at(middle);
                let (scales_left, scales_right) = self.scales.split_at(middle);
                (
                    Scan { values: values_left, scales: scales_left, ..self },
                    Scan { values: values_right, scales: scales_right, first: self.first + middle, ..self },
                )
            }
            Some(rows) => {
                let (rows_left, rows_right) = rows.split_at(rows.len() / 2);
                (Scan { rows: Some(rows_left), ..self }, Scan { rows: Some(rows_right), ..self })
            }
        };
        std::thread::scope(|scope| {
            let other = scope.spawn(|| right.run());
            let mut best = left.run();
            match other.join() {
                Ok(other) => best.absorb(other),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            best
        })
    }

    /// Runs the scan compiled for AVX2 and FMA when the CPU has them (found out once, at run
    /// time): the x86-64 baseline (SSE2) has no 16-bit multiply-add wide enough, and the scan
    /// is then about three times slower.
    fn run(self) -> Best {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = gemm_common::simd::V3::try_new() {
            return simd.vectorize(self);
        }
        gemm_common::simd::NullaryFnOnce::call(self)
    }
}

impl gemm_common::simd::NullaryFnOnce for Scan<'_> {
    type Output = Best;

    // Inlined into the dispatcher, so the loop is compiled with its CPU features.
    #[inline(always)]
    fn call(self) -> Best {
        let mut best = Best::new(self.capacity);
        match self.rows {
            None => {
                for (at, (row, scale)) in self.values.iter().zip(self.scales).enumerate() {
                    // Scales differ per row, so the integer dot product is scaled before comparing.
                    best.offer(dot_i8(row, self.query) as f32 * scale, self.first + at);
                }
            }
            Some(rows) => {
                for &at in rows {
                    best.offer(dot_i8(&self.values[at], self.query) as f32 * self.scales[at], at);
                }
            }
        }
        best
    }
}

/// The rows of the `capacity` best approximate scores offered: a bounded min-heap, whose
/// smallest score is kept at hand so most rows are turned away by one comparison.
struct Best {
    heap: BinaryHeap<Reverse<(u32, usize)>>,
    capacity: usize,
    floor: u32,
}

impl Best {
    fn new(capacity: usize) -> Self {
        Self { heap: BinaryHeap::with_capacity(capacity + 1), capacity, floor: 0 }
    }

    #[inline(always)]
    fn offer(&mut self, score: f32, row: usize) {
        self.offer_ordered(ordered(score), row);
    }

    #[inline(always)]
    fn offer_ordered(&mut self, score: u32, row: usize) {
        if self.heap.len() < self.capacity {
            self.heap.push(Reverse((score, row)));
        } else if score > self.floor {
            self.heap.pop();
            self.heap.push(Reverse((score, row)));
        } else {
            return;
        }
        if self.heap.len() == self.capacity {
            self.floor = self.heap.peek().map_or(0, |min| min.0.0);
        }
    }

    /// Keeps the best of both.
    fn absorb(&mut self, other: Best) {
        for Reverse((score, row)) in other.heap {
            self.offer_ordered(score, row);
        }
    }

    fn rows(self) -> impl Iterator<Item = usize> {
        self.heap.into_iter().map(|Reverse((_, row))| row)
    }
}

/// `x`'s bits in an order that sorts as the floats do (for the heap).
fn ordered(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 { !bits } else { bits | 0x8000_0000 }
}

/// The stored form of one cache shard: `ASV1`, the model id (u16 length + UTF-8), the entry
/// count (u32), then per entry its hash (32 bytes), scale (f32) and [`DIMENSIONS`] int8 values;
/// little-endian. Stored sealed, as a device setting.
pub fn encode_shard(model: &str, entries: &[(&ContentHash, VectorRef<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + model.len() + entries.len() * (36 + DIMENSIONS));
    out.extend_from_slice(b"ASV1");
    let model = &model.as_bytes()[..model.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(model.len() as u16).to_le_bytes());
    out.extend_from_slice(model);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (hash, vector) in entries {
        out.extend_from_slice(*hash);
        out.extend_from_slice(&vector.scale.to_le_bytes());
        out.extend(vector.values.iter().map(|v| *v as u8));
    }
    out
}

/// Reads a shard's fields in order.
struct Reader<'a> {
    rest: &'a [u8],
    total: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!("truncated ({} bytes)", self.total));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// The model id and entries of a stored shard; `Err` names what is wrong.
pub fn decode_shard(bytes: &[u8]) -> Result<(String, Vec<(ContentHash, Quantized)>), String> {
    let mut reader = Reader { rest: bytes, total: bytes.len() };
    if reader.take(4)? != b"ASV1" {
        return Err("not a vector shard".into());
    }
    let model_len = u16::from_le_bytes(reader.array()?) as usize;
    let model = String::from_utf8(reader.take(model_len)?.to_vec()).map_err(|_| "model id is not UTF-8".to_owned())?;
    let count = u32::from_le_bytes(reader.array()?) as usize;
    let entry = 36 + DIMENSIONS;
    if reader.rest.len() != count.saturating_mul(entry) {
        return Err(format!("{count} entries announced, {} bytes follow", reader.rest.len()));
    }
    let mut entries = Vec::with_capacity(count);
    for raw in reader.rest.chunks_exact(entry) {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&raw[..32]);
        let scale = f32::from_le_bytes([raw[32], raw[33], raw[34], raw[35]]);
        if !scale.is_finite() || scale <= 0.0 {
            return Err("a vector's scale is not a positive number".into());
        }
        let values = raw[36..].iter().map(|v| *v as i8).collect();
        entries.push((hash, Quantized { scale, values }));
    }
    Ok((model, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u32) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMENSIONS as u32).map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 - 500.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn int8_keeps_the_cosine_and_shards_round_trip() {
        let a = unit(1);
        let q = Quantized::new(&a);
        assert!((q.view().dot_f32(&a) - 1.0).abs() < 1e-3);
        let hash = content_hash("m", "text");
        let bytes = encode_shard("m", &[(&hash, q.view())]);
        let (model, entries) = decode_shard(&bytes).unwrap();
        assert_eq!((model.as_str(), entries), ("m", vec![(hash, q)]));
        for cut in 0..bytes.len() {
            assert!(decode_shard(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn removal_keeps_the_table_consistent() {
        let mut table = VectorTable::default();
        let ids: Vec<RecordId> = (0..5).map(|_| RecordId::new()).collect();
        for (n, id) in ids.iter().enumerate() {
            for chunk in 0..3 {
                let seed = (n * 3 + chunk) as u32;
                table.insert(*id, chunk as u32, content_hash("m", &seed.to_string()), Quantized::new(&unit(seed)));
            }
        }
        assert_eq!(table.remove(ids[1]).len(), 3);
        assert_eq!(table.remove(ids[1]).len(), 0);
        assert_eq!(table.len(), 12);
        let hits = table.search(&unit(13), 5, None);
        assert_eq!((hits[0].record, hits[0].chunk), (ids[4], 1));
        assert!(hits.iter().all(|h| h.record != ids[1]));
        let hits = table.search(&unit(13), 5, Some(&|r| r != ids[4]));
        assert!(hits.iter().all(|h| h.record != ids[4]));
    }

    /// A deterministic generator (xorshift) of unit vectors.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn unit(&mut self) -> Vec<f32> {
            let v: Vec<f32> = (0..DIMENSIONS).map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect()
        }
    }

    /// The `limit` best records by a float scan of every stored vector: each record's best
    /// chunk, ties broken by record id, as the table orders them.
    fn brute_force(
        stored: &HashMap<RecordId, Vec<Quantized>>,
        query: &[f32],
        limit: usize,
        admit: &dyn Fn(RecordId) -> bool,
    ) -> Vec<(RecordId, u32, f32)> {
        let mut best: Vec<(RecordId, u32, f32)> = stored
            .iter()
            .filter(|(record, _)| admit(**record))
            .filter_map(|(record, chunks)| {
                let scored = chunks.iter().enumerate().map(|(n, v)| (*record, n as u32, v.view().dot_f32(query)));
                scored.max_by(|a, b| a.2.total_cmp(&b.2))
            })
            .collect();
        best.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        best.truncate(limit);
        best
    }

    fn check(table: &VectorTable, stored: &HashMap<RecordId, Vec<Quantized>>, random: &mut Random) {
        assert_eq!(table.len(), stored.values().map(Vec::len).sum::<usize>());
        for _ in 0..8 {
            let query = random.unit();
            let found: Vec<(RecordId, u32, f32)> =
                table.search(&query, 10, None).iter().map(|h| (h.record, h.chunk, h.score)).collect();
            assert_eq!(found, brute_force(stored, &query, 10, &|_| true));
            // A filter letting through the records whose id ends in an even byte.
            let even = |record: RecordId| record.to_string().as_bytes().last().is_some_and(|b| b % 2 == 0);
            let found: Vec<(RecordId, u32, f32)> =
                table.search(&query, 10, Some(&even)).iter().map(|h| (h.record, h.chunk, h.score)).collect();
            assert_eq!(found, brute_force(stored, &query, 10, &even));
        }
    }

    #[test]
    fn the_scan_finds_what_a_float_scan_of_every_vector_finds_through_removals_and_updates() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut table = VectorTable::default();
        let mut stored: HashMap<RecordId, Vec<Quantized>> = HashMap::new();
        let add = |table: &mut VectorTable, stored: &mut HashMap<RecordId, Vec<Quantized>>, random: &mut Random| {
            let id = RecordId::new();
            let chunks = 1 + (random.next() % 3) as usize;
            for chunk in 0..chunks {
                let vector = Quantized::new(&random.unit());
                let hash = content_hash("m", &format!("{id}/{chunk}"));
                table.insert(id, chunk as u32, hash, vector.clone());
                stored.entry(id).or_default().push(vector);
            }
            id
        };
        let mut ids: Vec<RecordId> = (0..600).map(|_| add(&mut table, &mut stored, &mut random)).collect();
        check(&table, &stored, &mut random);

        // Removals, the last rows moving into their holes.
        for _ in 0..200 {
            let id = ids.swap_remove((random.next() % ids.len() as u64) as usize);
            let removed = table.remove(id);
            let expected = stored.remove(&id).unwrap_or_default();
            let mut removed: Vec<Quantized> = removed.into_iter().map(|(_, v)| v).collect();
            removed.sort_by(|a, b| a.values.cmp(&b.values));
            let mut expected = expected;
            expected.sort_by(|a, b| a.values.cmp(&b.values));
            assert_eq!(removed, expected);
        }
        check(&table, &stored, &mut random);

        // Updates: a record's chunks replaced (as the index does it: removed, then added).
        for n in 0..100 {
            let id = ids[n * 3 % ids.len()];
            table.remove(id);
            stored.remove(&id);
            for chunk in 0..2 {
                let vector = Quantized::new(&random.unit());
                table.insert(id, chunk, content_hash("m", &format!("{id}/{chunk}/{n}")), vector.clone());
                stored.entry(id).or_default().push(vector);
            }
        }
        ids.extend((0..100).map(|_| add(&mut table, &mut stored, &mut random)));
        check(&table, &stored, &mut random);

        // Enough rows for the scan to run in two halves, filtered or not.
        while table.len() < ROWS_FOR_TWO_THREADS * 3 {
            ids.push(add(&mut table, &mut stored, &mut random));
        }
        check(&table, &stored, &mut random);
        for &id in &ids {
            let expected = stored.get(&id).cloned().unwrap_or_default();
            let got: Vec<Quantized> = table.of_record(id).into_iter().map(|(_, v)| v).collect();
            assert_eq!(got, expected, "the rows of {id}");
        }
    }
}
