//! The vector side: every chunk's embedding kept as int8 (one scale per vector: 388 bytes
//! instead of 1,536), scanned with integer dot products against the int8 query, the best
//! candidates then rescored against the float query. Stored between runs as a cache keyed by
//! the hash of what was embedded, so an unchanged chunk is never embedded twice.

use std::collections::HashMap;

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

    fn dot_i8(&self, other: &[i8]) -> i32 {
        self.values.iter().zip(other).map(|(a, b)| i32::from(*a) * i32::from(*b)).sum()
    }

    fn dot_f32(&self, query: &[f32]) -> f32 {
        self.values.iter().zip(query).map(|(a, b)| f32::from(*a) * b).sum::<f32>() * self.scale
    }
}

/// The hash under which `text`'s embedding by `model` is cached.
pub fn content_hash(model: &str, text: &str) -> ContentHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(model.len() as u64).to_le_bytes());
    hasher.update(model.as_bytes());
    hasher.update(text.as_bytes());
    *hasher.finalize().as_bytes()
}

struct Row {
    record: RecordId,
    chunk: u32,
    hash: ContentHash,
    vector: Quantized,
}

/// Every chunk's vector, contiguous for the scan.
#[derive(Default)]
pub struct VectorTable {
    rows: Vec<Row>,
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
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds chunk `chunk` of `record`.
    pub fn insert(&mut self, record: RecordId, chunk: u32, hash: ContentHash, vector: Quantized) {
        self.by_record.entry(record).or_default().push(self.rows.len());
        self.rows.push(Row { record, chunk, hash, vector });
    }

    /// Removes every chunk of `record`, returning their hashes and vectors.
    pub fn remove(&mut self, record: RecordId) -> Vec<(ContentHash, Quantized)> {
        let Some(mut rows) = self.by_record.remove(&record) else { return Vec::new() };
        rows.sort_unstable_by(|a, b| b.cmp(a));
        let mut removed = Vec::with_capacity(rows.len());
        for at in rows {
            let last = self.rows.len() - 1;
            let row = self.rows.swap_remove(at);
            if at != last {
                // The last row moved into the hole: its record's list follows it.
                let moved = self.rows[at].record;
                if let Some(list) = self.by_record.get_mut(&moved) {
                    for slot in list.iter_mut().filter(|slot| **slot == last) {
                        *slot = at;
                    }
                }
            }
            removed.push((row.hash, row.vector));
        }
        removed
    }

    /// Every chunk of `record`: its hash and vector.
    pub fn of_record(&self, record: RecordId) -> Vec<(ContentHash, Quantized)> {
        let rows = self.by_record.get(&record).map(Vec::as_slice).unwrap_or_default();
        rows.iter().filter_map(|&at| self.rows.get(at)).map(|row| (row.hash, row.vector.clone())).collect()
    }

    /// Every stored vector by its hash (what the cache persists).
    pub fn entries(&self) -> impl Iterator<Item = (&ContentHash, &Quantized)> {
        self.rows.iter().map(|row| (&row.hash, &row.vector))
    }

    /// The `limit` records closest to `query` among those `admit` lets through: an int8 scan
    /// keeps the best chunks (a margin of candidates beyond `limit`), rescored in float.
    pub fn search(&self, query: &[f32], limit: usize, admit: &dyn Fn(RecordId) -> bool) -> Vec<VectorHit> {
        if limit == 0 || query.len() != DIMENSIONS {
            return Vec::new();
        }
        let query_q = Quantized::new(query);
        let candidates = (limit * 8).max(64);
        // A bounded min-heap of (approximate score, row).
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u32, usize)>> =
            std::collections::BinaryHeap::with_capacity(candidates + 1);
        let mut admitted: HashMap<RecordId, bool> = HashMap::new();
        for (at, row) in self.rows.iter().enumerate() {
            if !*admitted.entry(row.record).or_insert_with(|| admit(row.record)) {
                continue;
            }
            // Scales differ per row, so the integer dot product is scaled before comparing.
            let approx = ordered(row.vector.dot_i8(&query_q.values) as f32 * row.vector.scale);
            if heap.len() < candidates {
                heap.push(std::cmp::Reverse((approx, at)));
            } else if heap.peek().is_some_and(|min| approx > min.0.0) {
                heap.pop();
                heap.push(std::cmp::Reverse((approx, at)));
            }
        }
        let mut best: HashMap<RecordId, VectorHit> = HashMap::new();
        for std::cmp::Reverse((_, at)) in heap {
            let row = &self.rows[at];
            let score = row.vector.dot_f32(query);
            let hit = best.entry(row.record).or_insert(VectorHit { record: row.record, chunk: row.chunk, score });
            if score > hit.score {
                *hit = VectorHit { record: row.record, chunk: row.chunk, score };
            }
        }
        let mut hits: Vec<VectorHit> = best.into_values().collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.record.cmp(&b.record)));
        hits.truncate(limit);
        hits
    }

    /// Bytes the vectors take in memory.
    pub fn memory_bytes(&self) -> usize {
        self.rows.len() * (std::mem::size_of::<Row>() + DIMENSIONS)
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
pub fn encode_shard(model: &str, entries: &[(&ContentHash, &Quantized)]) -> Vec<u8> {
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
        assert!((q.dot_f32(&a) - 1.0).abs() < 1e-3);
        let hash = content_hash("m", "text");
        let bytes = encode_shard("m", &[(&hash, &q)]);
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
        let hits = table.search(&unit(13), 5, &|_| true);
        assert_eq!((hits[0].record, hits[0].chunk), (ids[4], 1));
        assert!(hits.iter().all(|h| h.record != ids[1]));
        let hits = table.search(&unit(13), 5, &|r| r != ids[4]);
        assert!(hits.iter().all(|h| h.record != ids[4]));
    }
}
