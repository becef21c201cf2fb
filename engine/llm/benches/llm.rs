//! Benchmarks of the language model client, each beside its baseline measured in the same run:
//!
//! - the local model (SmolLM2-135M-Instruct, Q4_1 GGUF): time to first token and generation
//!   tokens/s, beside llama.cpp (`llama-cpp-python`) and beside candle's own quantized llama
//!   driven directly (the library adiuva-llm is built on, alone), on the same file, prompt
//!   tokens and greedy decoding; and the memory each loaded model takes;
//! - the router's own cost per call against a provider double on loopback, beside a bare HTTP
//!   call of the same request to the same double.
//!
//! Run with `scripts/bench-llm` (it installs the llama.cpp baseline); `ADIUVA_SMOLLM2_GGUF` names
//! the model file and `LLAMA_CPP_PYTHON` the Python that has `llama_cpp`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/doubles/mod.rs"]
mod doubles;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use adiuva_llm::local::LocalModel;
use adiuva_llm::{
    ChatRequest, Health, Message, ProviderConfig, ProviderKind, ProviderSettings, Router, RouterConfig, StreamEvent,
    StreamOptions,
};
use doubles::{Double, dialects};

const PROMPT: &str = "Write a short paragraph about why people keep a to-do list.";
const MAX_TOKENS: u32 = 128;
const ROUNDS: usize = 5;
const CALLS: usize = 2000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("machine: {}", machine());
    let model = PathBuf::from(std::env::var("ADIUVA_SMOLLM2_GGUF").expect("ADIUVA_SMOLLM2_GGUF"));
    raw_candle(&model);
    runtime.block_on(local_model(&model));
    llama_cpp(&model);
    runtime.block_on(router_overhead());
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpu}, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn local_model(path: &std::path::Path) {
    let before = resident_kib();
    let started = Instant::now();
    drop(LocalModel::load(path).unwrap());
    let load = started.elapsed();
    let mut settings = ProviderSettings::new("local", ProviderKind::Local, "smollm2");
    settings.model_path = Some(path.to_owned());
    let before_router = resident_kib();
    let router = Router::new(
        RouterConfig { chain: vec![ProviderConfig { settings, api_key: None }], ..RouterConfig::default() },
        Health::new(),
    )
    .unwrap();
    let loaded = resident_kib();
    let mut request = ChatRequest::new(vec![Message::user(PROMPT)]);
    request.max_tokens = Some(MAX_TOKENS);
    let (mut first_token, mut rate, mut generated) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut first = None;
        let mut stream = router.stream(request.clone(), StreamOptions::default());
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                StreamEvent::Token { .. } if first.is_none() => first = Some(started.elapsed()),
                StreamEvent::Done { completion } => generated = completion.usage.output_tokens.unwrap_or(0),
                _ => {}
            }
        }
        let total = started.elapsed();
        let first = first.unwrap_or(total);
        first_token.push(first.as_secs_f64() * 1e3);
        rate.push((generated.saturating_sub(1)) as f64 / (total - first).as_secs_f64());
    }
    println!(
        "adiuva-llm local (own Q4_1 forward pass): load {:.0} ms, resident +{} MiB (process {} MiB before), first token p50 {:.1} ms, generation p50 {:.1} tokens/s ({} tokens, {ROUNDS} rounds)",
        load.as_secs_f64() * 1e3,
        (loaded.saturating_sub(before_router)) / 1024,
        before / 1024,
        median(first_token),
        median(rate),
        generated
    );
}

/// candle-transformers' quantized llama alone: the same file and prompt tokens, greedy argmax,
/// its own attention cache, one `forward` for the prompt then one per token, no adiuva-llm code
/// in the loop (adiuva-llm only supplies the prompt's token ids and the stop tokens).
fn raw_candle(path: &std::path::Path) {
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;

    let ours = LocalModel::load(path).unwrap();
    let mut request = ChatRequest::new(vec![Message::user(PROMPT)]);
    request.max_tokens = Some(MAX_TOKENS);
    let prompt = ours.prompt_tokens(&request).unwrap();
    let stop = ours.stop_tokens().to_vec();
    drop(ours);
    let before = resident_kib();
    let started = Instant::now();
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let load = started.elapsed();
    let loaded = resident_kib();
    let argmax = |logits: Tensor| logits.squeeze(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
    let (mut first_token, mut rate, mut generated) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        weights.clear_kv_cache();
        let started = Instant::now();
        let input = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mut next = argmax(weights.forward(&input, 0).unwrap());
        let first = started.elapsed();
        generated = 0;
        while !stop.contains(&next) && generated < MAX_TOKENS as usize {
            generated += 1;
            let input = Tensor::new(&[next], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            next = argmax(weights.forward(&input, prompt.len() + generated - 1).unwrap());
        }
        let total = started.elapsed();
        first_token.push(first.as_secs_f64() * 1e3);
        rate.push(generated.saturating_sub(1) as f64 / (total - first).as_secs_f64());
    }
    println!(
        "candle alone (quantized_llama::ModelWeights, candle 0.11.1): load {:.0} ms, resident +{} MiB, first token p50 {:.1} ms, generation p50 {:.1} tokens/s ({generated} tokens, {} prompt tokens, {ROUNDS} rounds)",
        load.as_secs_f64() * 1e3,
        loaded.saturating_sub(before) / 1024,
        median(first_token),
        median(rate),
        prompt.len()
    );
}

/// The same prompt (ChatML, as the model's template renders it), file and greedy decoding in
/// llama.cpp, through `llama-cpp-python`.
fn llama_cpp(path: &std::path::Path) {
    let Ok(python) = std::env::var("LLAMA_CPP_PYTHON") else {
        println!("llama.cpp baseline: skipped (LLAMA_CPP_PYTHON is not set; scripts/bench-llm sets it)");
        return;
    };
    let prompt = LocalModel::prompt(&ChatRequest::new(vec![Message::user(PROMPT)]));
    let script = include_str!("llama_cpp_baseline.py");
    let output = std::process::Command::new(python)
        .args(["-c", script, &path.display().to_string(), &MAX_TOKENS.to_string(), &ROUNDS.to_string()])
        .env("PROMPT", prompt)
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() {
        println!("llama.cpp baseline failed: {}", String::from_utf8_lossy(&output.stderr));
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction) as usize].as_secs_f64() * 1e6
}

async fn router_overhead() {
    let kind = ProviderKind::OpenAi;
    let reply = dialects::completion(kind, "Hello there.", (21, 4));
    let double = Double::start(kind, vec![reply; 2 * CALLS + 200]).await;
    let mut settings = ProviderSettings::new("bench", kind, "gpt-4o-mini");
    settings.base_url = Some(double.base_url());
    let router = Router::new(
        RouterConfig {
            chain: vec![ProviderConfig { settings, api_key: Some(adiuva_llm::ApiKey::new("sk-bench")) }],
            ..RouterConfig::default()
        },
        Health::new(),
    )
    .unwrap()
    .with_recorder(std::sync::Arc::new(|_| {}));
    let request = ChatRequest::new(vec![Message::user("Say hello")]);
    let body = adiuva_llm::quirks::chat_body(kind, "gpt-4o-mini", &request, false);
    let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let url = format!("{}/chat/completions", double.base_url());
    let bare = || async {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-bench")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        let bytes = response.bytes().await.unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(parsed["choices"][0]["message"]["content"].is_string());
    };
    // Warm both connection pools.
    for _ in 0..100 {
        bare().await;
        router.complete(&request).await.unwrap();
    }
    let (mut bare_times, mut router_times) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    for _ in 0..CALLS {
        let started = Instant::now();
        bare().await;
        bare_times.push(started.elapsed());
        let started = Instant::now();
        router.complete(&request).await.unwrap();
        router_times.push(started.elapsed());
    }
    bare_times.sort();
    router_times.sort();
    let (bare_p50, router_p50) = (percentile(&bare_times, 0.5), percentile(&router_times, 0.5));
    println!(
        "router overhead per call ({CALLS} calls, interleaved): bare HTTP p50 {bare_p50:.0} µs p99 {:.0} µs; router p50 {router_p50:.0} µs p99 {:.0} µs; overhead p50 {:.0} µs",
        percentile(&bare_times, 0.99),
        percentile(&router_times, 0.99),
        router_p50 - bare_p50
    );
}
