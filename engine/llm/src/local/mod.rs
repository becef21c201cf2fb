//! A model run in this process, with no network at all: a llama-architecture GGUF file
//! (SmolLM2, Llama, Qwen-style ChatML models). Files whose weights are `Q4_0`, `Q4_1` or `Q8_0`
//! run on this crate's own forward pass (`llama.rs` over `quant.rs`: 5× candle's speed on a
//! `Q4_1` file, see BENCHMARKS.md); any other file runs on candle's quantized llama.
//!
//! The GGUF file carries its own vocabulary and merges, so the byte-level BPE tokenizer is
//! built from them (no `tokenizer.json`, no download). The prompt is ChatML built by hand,
//! `<|im_start|>role\ncontent<|im_end|>\n` per message and an open assistant turn; generation
//! stops at `<|im_end|>` or the file's end-of-sequence token. Decoding is greedy, so the same
//! prompt always gives the same answer. One answer is generated at a time per model (the
//! model's attention cache is its working memory), on a thread of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

mod llama;
mod quant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};
use tokio::sync::mpsc;

use crate::config::ProviderSettings;
use crate::error::{LlmError, Result};
use crate::stream::Piece;
use crate::types::{ChatRequest, Role, Usage};

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";
/// What SmolLM2's own chat template says when a conversation has no system message.
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
/// Answer length when the request sets none.
const DEFAULT_MAX_TOKENS: u32 = 512;

/// A loaded GGUF model and its tokenizer.
pub struct LocalModel {
    path: PathBuf,
    weights: Mutex<Weights>,
    /// The threads a forward pass shares its products among: as many as the CPU has cores.
    threads: rayon::ThreadPool,
    tokenizer: Tokenizer,
    stop_tokens: Vec<u32>,
    context_window: u64,
}

/// Models loaded by this process, by file: loading costs a second and the model's size in
/// memory, so every router of the process shares one.
static LOADED: LazyLock<Mutex<HashMap<PathBuf, Arc<LocalModel>>>> = LazyLock::new(Default::default);

impl LocalModel {
    /// The model of `settings.model_path`, loaded once per process.
    pub fn load_cached(settings: &ProviderSettings) -> Result<Arc<LocalModel>> {
        let path = settings.model_path.clone().ok_or_else(|| LlmError::LocalModel {
            path: String::new(),
            detail: "no model file is configured (--model-path)".into(),
        })?;
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(model) = loaded.get(&path) {
            return Ok(model.clone());
        }
        let model = Arc::new(LocalModel::load(&path)?);
        loaded.insert(path, model.clone());
        Ok(model)
    }

    /// Loads a GGUF file.
    pub fn load(path: &Path) -> Result<LocalModel> {
        let fail = |detail: String| LlmError::LocalModel { path: path.display().to_string(), detail };
        let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| fail(format!("not a GGUF file: {e}")))?;
        let tokenizer = tokenizer_of(&content).map_err(fail)?;
        let mut stop_tokens: Vec<u32> = tokenizer.token_to_id(IM_END).into_iter().collect();
        if let Some(eos) = content.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()) {
            stop_tokens.push(eos);
        }
        let trained =
            u64::from(content.metadata.get("llama.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(2048));
        let (weights, context_window) = match llama::Llama::from_gguf(&content, &mut file).map_err(&fail)? {
            Some(own) => (Weights::Own(Box::new(own)), trained),
            None => {
                let weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
                    .map_err(|e| fail(format!("loading weights: {e}")))?;
                // candle's rotary embeddings are precomputed for MAX_SEQ_LEN positions.
                (Weights::Candle(Box::new(weights)), trained.min(MAX_SEQ_LEN as u64))
            }
        };
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .thread_name(|i| format!("local-model-{i}"))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(LocalModel {
            path: path.to_owned(),
            weights: Mutex::new(weights),
            threads,
            tokenizer,
            stop_tokens,
            context_window,
        })
    }

    pub fn context_window(&self) -> u64 {
        self.context_window
    }

    /// The tokens that end an answer: `<|im_end|>` and the file's end of sequence.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    fn fail(&self, detail: impl std::fmt::Display) -> LlmError {
        LlmError::LocalModel { path: self.path.display().to_string(), detail: detail.to_string() }
    }

    /// The ChatML prompt of `request`, ending with an open assistant turn.
    pub fn prompt(request: &ChatRequest) -> String {
        let mut prompt = String::new();
        if request.messages.first().is_none_or(|m| m.role != Role::System) {
            prompt.push_str(&format!("{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n"));
        }
        for message in &request.messages {
            let role = match message.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            prompt.push_str(&format!("{IM_START}{role}\n{}{IM_END}\n", message.content));
        }
        prompt.push_str(&format!("{IM_START}assistant\n"));
        prompt
    }

    /// The token ids of `request`'s prompt.
    pub fn prompt_tokens(&self, request: &ChatRequest) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(LocalModel::prompt(request), false).map_err(|e| self.fail(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn count_prompt_tokens(&self, request: &ChatRequest) -> Result<u64> {
        Ok(self.prompt_tokens(request)?.len() as u64)
    }

    /// Starts generating the answer to `request` on a thread of its own.
    pub fn generate(self: &Arc<Self>, request: &ChatRequest) -> Result<LocalStream> {
        if !request.tools.is_empty() {
            return Err(LlmError::Unsupported { provider: self.path.display().to_string(), operation: "tool calling" });
        }
        let prompt = self.prompt_tokens(request)?;
        let room = self.context_window.saturating_sub(prompt.len() as u64);
        let max_tokens = u64::from(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)).min(room) as usize;
        let (pieces, receiver) = mpsc::channel(32);
        let model = self.clone();
        std::thread::Builder::new()
            .name("local-model".into())
            .spawn(move || {
                if let Err(error) = model.run(&prompt, max_tokens, &pieces) {
                    let _ = pieces.blocking_send(Err(error));
                }
            })
            .map_err(|e| self.fail(e))?;
        Ok(LocalStream { receiver })
    }

    /// Greedy decoding of up to `max_tokens` after `prompt`, sending text as it forms; on the
    /// model's own threads, so that its products never wait for a thread to wake.
    fn run(&self, prompt: &[u32], max_tokens: usize, pieces: &mpsc::Sender<Result<Piece>>) -> Result<()> {
        self.threads.install(|| self.generate_greedily(prompt, max_tokens, pieces))
    }

    fn generate_greedily(&self, prompt: &[u32], max_tokens: usize, pieces: &mpsc::Sender<Result<Piece>>) -> Result<()> {
        let mut weights = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        let mut generated: Vec<u32> = Vec::new();
        let mut shown = 0;
        let mut input = prompt.to_vec();
        let mut finish = "length";
        while generated.len() < max_tokens {
            let position = if generated.is_empty() { 0 } else { prompt.len() + generated.len() - 1 };
            let next = weights.next_token(&input, position).map_err(|e| self.fail(e))?;
            if self.stop_tokens.contains(&next) {
                finish = "stop";
                break;
            }
            generated.push(next);
            input = vec![next];
            // Decoding everything so far and sending what grew keeps multi-byte characters
            // split across tokens whole.
            let text = self.tokenizer.decode(&generated, true).map_err(|e| self.fail(e))?;
            if text.len() > shown && !text.ends_with('\u{fffd}') {
                if pieces.blocking_send(Ok(Piece::Text(text[shown..].to_owned()))).is_err() {
                    return Ok(()); // Nobody listens any more.
                }
                shown = text.len();
            }
        }
        let usage = Usage { input_tokens: Some(prompt.len() as u64), output_tokens: Some(generated.len() as u64) };
        let _ = pieces.blocking_send(Ok(Piece::Finish(finish.into())));
        let _ = pieces.blocking_send(Ok(Piece::Usage(usage)));
        Ok(())
    }
}

/// The weights of a loaded model and its attention cache.
enum Weights {
    Own(Box<llama::Llama>),
    Candle(Box<ModelWeights>),
}

impl Weights {
    /// The most likely token after `tokens`, which stand at positions `position..` (the cache
    /// holds the positions before; 0 starts a new answer).
    fn next_token(&mut self, tokens: &[u32], position: usize) -> std::result::Result<u32, String> {
        match self {
            Weights::Own(llama) => {
                let logits = llama.forward(tokens, position)?;
                // The first of equal maxima, so that a tie always breaks the same way.
                let best = logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, l)| match *l > best.1 {
                    true => (i, *l),
                    false => best,
                });
                Ok(best.0 as u32)
            }
            Weights::Candle(weights) => {
                if position == 0 {
                    weights.clear_kv_cache();
                }
                let tensor =
                    Tensor::new(tokens, &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(|e| e.to_string())?;
                let logits =
                    weights.forward(&tensor, position).and_then(|l| l.squeeze(0)).map_err(|e| e.to_string())?;
                logits.argmax(0).and_then(|t| t.to_scalar::<u32>()).map_err(|e| e.to_string())
            }
        }
    }
}

/// The byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.tokens` and `.merges`),
/// with its ChatML markers as special tokens.
fn tokenizer_of(content: &gguf_file::Content) -> std::result::Result<Tokenizer, String> {
    let strings = |key: &str| -> std::result::Result<Vec<String>, String> {
        let values = content.metadata.get(key).ok_or_else(|| format!("no {key} in the file"))?;
        let values = values.to_vec().map_err(|e| format!("{key}: {e}"))?;
        values.iter().map(|v| v.to_string().cloned().map_err(|e| format!("{key}: {e}"))).collect()
    };
    let model = content.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok());
    if model.is_some_and(|m| m != "gpt2") {
        return Err(format!("tokenizer {model:?} is not supported (byte-level BPE, \"gpt2\", is)"));
    }
    let tokens = strings("tokenizer.ggml.tokens")?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(id, token)| (token.clone(), id as u32)).collect();
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|merge| {
            merge.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or(format!("bad merge {merge:?}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true))).with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = [IM_START, IM_END]
        .iter()
        .filter(|t| tokens.iter().any(|x| x == *t))
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(specials).map_err(|e| e.to_string())?;
    Ok(tokenizer)
}

/// An answer being generated by a local model.
pub struct LocalStream {
    receiver: mpsc::Receiver<Result<Piece>>,
}

impl LocalStream {
    pub async fn next(&mut self) -> Result<Option<Piece>> {
        self.receiver.recv().await.transpose()
    }
}
