//! Search benchmarks, each beside its baseline measured in the same run:
//!
//! - `embedding`: sentences per second embedding the 105 test texts (repeated) in batches of
//!   32, ours (candle) vs the Python reference (`tests/reference/embed.py --batch 32`: numpy
//!   float32, the same batches and padding), each timed inside its own process, model loaded;
//! - `build`: chunks indexed per second into the full-text index, and the vectors' memory;
//! - `text`: text-only search p50/p99 over N chunks vs SQLite FTS5 (rusqlite, bundled, BM25
//!   `ORDER BY rank LIMIT 30`) over the same chunks and queries;
//! - `vector`: the int8 scan + float rescoring p50/p99 over N chunk vectors;
//! - `query`: one query's embedding by the short path vs the same query as a batch of one
//!   through candle;
//! - `hybrid`: a whole hybrid query p50/p99: the query's embedding, both sides, fusion.
//!
//! The chunks are words drawn from this machine's manual pages (their natural frequencies),
//! 120 words each; their vectors are random unit vectors (the scan's cost does not depend on
//! what they say, and embedding 100k chunks would take the model hours here).
//!
//! Run: `cargo bench -p adiuva-search --bench search [-- --chunks N --sentences N]` with
//! `ADIUVA_EMBEDDING_MODEL` and `ADIUVA_EMBEDDING_REFERENCE` set as `scripts/test` sets them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adiuva_model::{Collection, RecordId};
use adiuva_search::embed::{self, DIMENSIONS};
use adiuva_search::record::Searchable;
use adiuva_search::text::{Filter, TextIndex};
use adiuva_search::vectors::{Quantized, VectorTable, content_hash};
use adiuva_search::{Embedder, fusion};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERIES: usize = 300;
const BATCH: usize = 32;

struct Settings {
    chunks: usize,
    sentences: usize,
}

fn settings() -> Settings {
    let mut settings = Settings { chunks: 100_000, sentences: 1_024 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--chunks" => settings.chunks = value().parse().unwrap_or(settings.chunks),
            "--sentences" => settings.sentences = value().parse().unwrap_or(settings.sentences),
            _ => {} // cargo bench passes --bench
        }
    }
    settings
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A deterministic generator (xorshift), so every run sees the same corpus.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentences.txt")).unwrap();
    text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Words of manual pages in their running order (so drawing from it keeps their frequencies).
fn manual_words() -> Vec<String> {
    let mut words = Vec::new();
    let mut pages: Vec<PathBuf> =
        std::fs::read_dir("/usr/share/man/man1").unwrap().map(|e| e.unwrap().path()).collect();
    pages.sort();
    for page in pages.iter().step_by(pages.len().div_ceil(150).max(1)) {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("zcat -f '{}' | groff -t -man -Tutf8 -P -cbou 2>/dev/null", page.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        words.extend(text.split_whitespace().filter(|w| w.chars().any(char::is_alphabetic)).map(str::to_owned));
    }
    assert!(words.len() > 10_000, "too few manual page words ({})", words.len());
    words
}

fn embedding(settings: &Settings, model: &Embedder) {
    let base = sentences();
    let texts: Vec<String> = base.iter().cycle().take(settings.sentences).cloned().collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Batches as the index sends them.
    let started = Instant::now();
    for batch in refs.chunks(BATCH) {
        model.embed(batch).unwrap();
    }
    let ours = texts.len() as f64 / started.elapsed().as_secs_f64();
    let reference = std::env::var_os("ADIUVA_EMBEDDING_REFERENCE").map(|packages| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/embed.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(embed::model_dir())
            .args(["--batch", &BATCH.to_string()])
            .env("PYTHONPATH", packages)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&serde_json::to_vec(&texts).unwrap()).unwrap();
        let output = child.wait_with_output().unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        answer["sentences_per_second"].as_f64().unwrap()
    });
    match reference {
        Some(theirs) => println!(
            "embedding  {} texts, batch {BATCH}: {ours:.1} texts/s; reference (numpy) {theirs:.1} texts/s; ratio {:.2}×",
            texts.len(),
            ours / theirs
        ),
        None => println!("embedding  {} texts, batch {BATCH}: {ours:.1} texts/s (no reference)", texts.len()),
    }
}

fn unit_vector(random: &mut Random) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMENSIONS).map(|_| (random.below(2001) as f32 - 1000.0) / 1000.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn search(settings: &Settings, model: &Embedder) {
    let words = manual_words();
    let mut random = Random(0x5eed_1234_abcd);
    let chunk_text = |random: &mut Random| {
        let start = random.below(words.len() - 120);
        words[start..start + 120].join(" ")
    };
    let chunks: Vec<String> = (0..settings.chunks).map(|_| chunk_text(&mut random)).collect();
    let queries: Vec<String> = (0..QUERIES)
        .map(|_| {
            let start = random.below(words.len() - 3);
            words[start..start + 3].join(" ")
        })
        .collect();

    // Build: one record per chunk.
    let memory_before = resident_bytes();
    let mut text = TextIndex::new().unwrap();
    let ids: Vec<RecordId> = (0..chunks.len()).map(|_| RecordId::new()).collect();
    let started = Instant::now();
    for (id, chunk) in ids.iter().zip(&chunks) {
        let record = Searchable {
            id: *id,
            collection: Collection::Notes,
            title: String::new(),
            tags: Vec::new(),
            source: None,
            time: None,
            chunks: vec![chunk.clone()],
        };
        text.add(&record).unwrap();
    }
    text.commit().unwrap();
    let build = started.elapsed();
    let mut vectors = VectorTable::default();
    for id in &ids {
        let vector = unit_vector(&mut random);
        vectors.insert(*id, 0, content_hash("bench", &id.to_string()), Quantized::new(&vector));
    }
    println!(
        "build      {} chunks: {:.0} chunks/s into the full-text index; vectors {} MiB; process grew {} MiB",
        chunks.len(),
        chunks.len() as f64 / build.as_secs_f64(),
        vectors.memory_bytes() >> 20,
        resident_bytes().saturating_sub(memory_before) >> 20
    );

    let filter = Filter::default();
    let time = |run: &mut dyn FnMut(&str)| {
        let mut times: Vec<Duration> = queries
            .iter()
            .map(|q| {
                let started = Instant::now();
                run(q);
                started.elapsed()
            })
            .collect();
        times.sort();
        (percentile(&times, 0.5), percentile(&times, 0.99))
    };
    // Snippets are cut from the text as the index reads a record's from its read view.
    let chunk_of: HashMap<RecordId, &str> = ids.iter().copied().zip(chunks.iter().map(String::as_str)).collect();
    let (t50, t99) = time(&mut |q| {
        let found = text.search(q, &filter, 10).unwrap();
        let snippets: Vec<String> = found
            .hits
            .iter()
            .map(|hit| found.marker.snippet("", chunk_of.get(&hit.record).copied().unwrap_or("")))
            .collect();
        std::hint::black_box(snippets);
    });

    let sqlite = rusqlite::Connection::open_in_memory().unwrap();
    sqlite.execute_batch("CREATE VIRTUAL TABLE chunks USING fts5(body)").unwrap();
    let started = Instant::now();
    sqlite.execute_batch("BEGIN").unwrap();
    {
        let mut insert = sqlite.prepare("INSERT INTO chunks(body) VALUES (?1)").unwrap();
        for chunk in &chunks {
            insert.execute([chunk]).unwrap();
        }
    }
    sqlite.execute_batch("COMMIT").unwrap();
    let fts_build = started.elapsed();
    let mut select =
        sqlite.prepare("SELECT rowid, snippet(chunks, 0, '**', '**', '…', 24) FROM chunks WHERE chunks MATCH ?1 ORDER BY rank LIMIT 10").unwrap();
    let (s50, s99) = time(&mut |q| {
        // The same words, any of them, as FTS5 phrases.
        let expression: Vec<String> = q.split_whitespace().map(|w| format!("\"{}\"", w.replace('"', ""))).collect();
        let rows: Vec<(i64, String)> = select
            .query_map([expression.join(" OR ")], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        std::hint::black_box(rows);
    });
    println!(
        "text       p50 {:.3} ms, p99 {:.3} ms (with snippets); SQLite FTS5 p50 {:.3} ms, p99 {:.3} ms; FTS5 build {:.0} chunks/s",
        ms(t50),
        ms(t99),
        ms(s50),
        ms(s99),
        chunks.len() as f64 / fts_build.as_secs_f64()
    );

    let query_vectors: Vec<Vec<f32>> = (0..QUERIES).map(|_| unit_vector(&mut random)).collect();
    let mut next = 0;
    let (v50, v99) = time(&mut |_| {
        vectors.search(&query_vectors[next % QUERIES], 30, None);
        next += 1;
    });
    println!(
        "vector     p50 {:.3} ms, p99 {:.3} ms (int8 scan of {} vectors, float rescoring)",
        ms(v50),
        ms(v99),
        vectors.len()
    );

    // Both on one thread of their own, as a query's embedding runs.
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let (e50, e99) = time(&mut |q| {
        std::hint::black_box(single.install(|| model.embed_one(q).unwrap()));
    });
    let (c50, c99) = time(&mut |q| {
        std::hint::black_box(single.install(|| model.embed(&[q]).unwrap()));
    });
    println!(
        "query      p50 {:.3} ms, p99 {:.3} ms (embedding one query of 3 words alone, short path); as a batch of one through candle p50 {:.3} ms, p99 {:.3} ms",
        ms(e50),
        ms(e99),
        ms(c50),
        ms(c99)
    );

    // As `Index::search` runs it: the text side while the query is embedded, then the vectors.
    let (h50, h99) = time(&mut |q| {
        let (embedding, words) = model.embed_query_beside(q, || text.search(q, &filter, 30).unwrap());
        let words: Vec<RecordId> = words.hits.iter().map(|h| h.record).collect();
        let meaning: Vec<RecordId> = vectors.search(&embedding.unwrap(), 30, None).iter().map(|h| h.record).collect();
        std::hint::black_box(fusion::hybrid(&words, &meaning, 30));
    });
    println!("hybrid     p50 {:.3} ms, p99 {:.3} ms (query embedding + both sides + fusion)", ms(h50), ms(h99));
}

fn main() {
    let settings = settings();
    let model = Embedder::locate().expect("the embedding model: set ADIUVA_EMBEDDING_MODEL");
    embedding(&settings, &model);
    search(&settings, &model);
}
