//! The embedding model against an independent reference: the same weights run through a BERT
//! forward pass written in numpy (`tests/reference/embed.py`, run with the packages
//! `scripts/test` installs into `ADIUVA_EMBEDDING_REFERENCE`), on varied texts: short, long
//! (past 256 tokens), code, and fifteen-odd languages and scripts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use adiuva_model::ErrorCode;
use adiuva_search::embed::{self, Embedder, MAX_TOKENS, cosine};

fn embedder() -> Embedder {
    Embedder::locate().expect("the embedding model (scripts/test installs it and names it in ADIUVA_EMBEDDING_MODEL)")
}

fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentences.txt")).unwrap();
    text.lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

fn reference(texts: &[String]) -> Vec<Vec<f32>> {
    let packages = std::env::var_os("ADIUVA_EMBEDDING_REFERENCE")
        .expect("ADIUVA_EMBEDDING_REFERENCE names numpy, safetensors and tokenizers: scripts/test installs them");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/embed.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(embed::model_dir())
        .env("PYTHONPATH", packages)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(texts).unwrap()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the reference failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn embeddings_match_the_reference_on_varied_texts() {
    let model = embedder();
    let texts = sentences();
    assert!(texts.len() >= 100, "{} texts", texts.len());
    let truncated = texts.iter().filter(|t| model.token_count(t).unwrap() == MAX_TOKENS).count();
    assert!(truncated >= 4, "only {truncated} texts reach {MAX_TOKENS} tokens");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = model.embed(&refs).unwrap();
    let theirs = reference(&texts);
    assert_eq!(ours.len(), theirs.len());
    let mut worst = (1.0f32, "");
    for ((a, b), text) in ours.iter().zip(&theirs).zip(&texts) {
        assert_eq!(a.len(), embed::DIMENSIONS);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let c = cosine(a, b);
        if c < worst.0 {
            worst = (c, text);
        }
    }
    println!("worst cosine {:.6} over {} texts ({truncated} truncated)", worst.0, texts.len());
    assert!(worst.0 >= 0.999, "cosine {} for {:?}", worst.0, worst.1);
}

#[test]
fn a_text_embeds_the_same_alone_as_in_a_batch() {
    let model = embedder();
    let texts = sentences();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = model.embed(&refs).unwrap();
    for (text, in_batch) in refs.iter().zip(&batched).step_by(7) {
        let alone = model.embed(&[text]).unwrap().remove(0);
        let diff = alone.iter().zip(in_batch).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff} for {text:?}");
    }
}

/// A short text (a search query) takes a path of its own over the same weights: it must give
/// what the batched path and the reference give.
#[test]
fn a_short_text_embeds_the_same_by_its_own_path() {
    let model = embedder();
    let texts: Vec<String> = sentences()
        .into_iter()
        .filter(|text| model.token_count(text).unwrap() <= embed::SHORT_TOKENS)
        .chain(["a", "ls", "the file descriptor", "日本語", "Ελληνικά"].map(String::from))
        .collect();
    assert!(texts.len() >= 30, "only {} short texts", texts.len());
    let theirs = reference(&texts);
    for (text, reference) in texts.iter().zip(&theirs) {
        let short = model.embed_one(text).unwrap();
        let batched = model.embed(&[text]).unwrap().remove(0);
        let diff = short.iter().zip(&batched).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff} for {text:?}");
        assert!(cosine(&short, reference) >= 0.999, "cosine {} for {text:?}", cosine(&short, reference));
    }
    // One token past the short path: the batched path, the same embedding.
    let long = "word ".repeat(embed::SHORT_TOKENS);
    assert!(model.token_count(&long).unwrap() > embed::SHORT_TOKENS);
    assert_eq!(model.embed_one(&long).unwrap(), model.embed(&[&long]).unwrap().remove(0));
}

#[test]
fn long_texts_are_read_to_256_tokens_not_to_the_shipped_128() {
    let model = embedder();
    // One token per word, so word i is token i + 1 (after [CLS]).
    let words: Vec<&str> = "the cat sat on a mat with one red hat".split(' ').cycle().take(400).collect();
    let text = |changed: usize| {
        let mut words = words.clone();
        words[changed] = "thunderstorm";
        words.join(" ")
    };
    assert_eq!(model.token_count(&words.join(" ")).unwrap(), MAX_TOKENS);
    assert_eq!(model.token_count("the cat sat").unwrap(), 5);
    let full = model.embed(&[&words.join(" ")]).unwrap().remove(0);
    // A word at token 200 counts (the shipped tokenizer would have cut it); one at token 300 does not.
    let at_200 = model.embed(&[&text(199)]).unwrap().remove(0);
    let at_300 = model.embed(&[&text(299)]).unwrap().remove(0);
    assert!(cosine(&full, &at_200) < 0.9999, "{}", cosine(&full, &at_200));
    assert!(cosine(&full, &at_300) > 0.99999, "{}", cosine(&full, &at_300));
}

#[test]
fn a_missing_or_damaged_model_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Embedder::load(dir.path()).err().unwrap();
    assert_eq!(missing.code(), ErrorCode::SearchModelMissing);
    let source = embed::model_dir();
    for file in ["tokenizer.json", "config.json"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors at all").unwrap();
    let damaged = Embedder::load(dir.path()).err().unwrap();
    assert_eq!(damaged.code(), ErrorCode::SearchModelFailed);
}
