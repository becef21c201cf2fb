//! Every provider, through its double: completion, streaming, usage, tool calls, and each
//! failure its service really produces (429 with `Retry-After`, 5xx, 401, an error event in a
//! stream, a cut or malformed stream, a server that never answers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod doubles;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_llm::{
    ApiKey, CallRecord, ChatRequest, CooldownPolicy, FinishReason, Health, LlmError, Message, ProviderConfig,
    ProviderKind, ProviderSettings, RetryPolicy, Router, RouterConfig, StreamEvent, StreamOptions, Timeouts,
    ToolDefinition,
};
use adiuva_model::ErrorCode;
use doubles::dialects::{self, event};
use doubles::{Double, End, Reply};
use serde_json::json;

const CLOUD: [ProviderKind; 6] = [
    ProviderKind::OpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
    ProviderKind::Mistral,
    ProviderKind::Groq,
    ProviderKind::Ollama,
];

/// A marker key: it must never appear in an error, a record or a log.
const KEY: &str = "sk-MARKER-4f1c9e2ab7d05e31";

fn model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "gpt-4o-mini",
        ProviderKind::Anthropic => "claude-3-5-haiku-latest",
        ProviderKind::Gemini => "gemini-2.0-flash",
        ProviderKind::Mistral => "mistral-small-latest",
        ProviderKind::Groq => "llama-3.1-8b-instant",
        _ => "llama3.2",
    }
}

fn provider(double: &Double, name: &str) -> ProviderConfig {
    let mut settings = ProviderSettings::new(name, double.kind, model(double.kind));
    settings.base_url = Some(double.base_url());
    settings.timeouts = Timeouts {
        connect: Duration::from_secs(10),
        first_token: Duration::from_secs(20),
        idle: Duration::from_secs(20),
        total: Duration::from_secs(60),
    };
    ProviderConfig { settings, api_key: Some(ApiKey::new(KEY)) }
}

fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy { max_retries, base_backoff: Duration::from_millis(1), max_wait: Duration::from_millis(50) }
}

struct Harness {
    router: Router,
    records: Arc<Mutex<Vec<CallRecord>>>,
}

fn router(chain: Vec<ProviderConfig>, retry: RetryPolicy) -> Harness {
    router_with(chain, retry, CooldownPolicy::default(), Health::new())
}

fn router_with(
    chain: Vec<ProviderConfig>,
    retry: RetryPolicy,
    cooldown: CooldownPolicy,
    health: Arc<Health>,
) -> Harness {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    let router = Router::new(RouterConfig { chain, retry, cooldown }, health)
        .unwrap()
        .with_recorder(Arc::new(move |record| sink.lock().unwrap().push(record)))
        .with_correlation("01TESTCORRELATION");
    Harness { router, records }
}

fn hello() -> ChatRequest {
    ChatRequest::new(vec![Message::system("Be brief."), Message::user("Say hello")])
}

/// Every event of a stream, and the error that ended it, if one did.
async fn collect(
    router: &Router,
    request: ChatRequest,
    options: StreamOptions,
) -> (Vec<StreamEvent>, Option<LlmError>) {
    let mut stream = router.stream(request, options);
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => return (events, Some(error)),
        }
    }
    (events, None)
}

fn tokens(events: &[StreamEvent]) -> Vec<String> {
    events.iter().filter_map(|e| if let StreamEvent::Token { text } = e { Some(text.clone()) } else { None }).collect()
}

fn done(events: &[StreamEvent]) -> adiuva_llm::Completion {
    events
        .iter()
        .find_map(|e| if let StreamEvent::Done { completion } = e { Some(completion.clone()) } else { None })
        .expect("a Done event")
}

#[tokio::test]
async fn completion_reads_text_and_usage_from_every_provider() {
    for kind in CLOUD {
        let double = Double::start(kind, vec![dialects::completion(kind, "Hello there.", (21, 4))]).await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(0));
        let answer = harness.router.complete(&hello()).await.unwrap();
        assert_eq!(answer.text, "Hello there.", "{kind}");
        assert_eq!((answer.usage.input_tokens, answer.usage.output_tokens), (Some(21), Some(4)), "{kind}");
        assert_eq!(answer.finish_reason, FinishReason::Stop);
        assert!(answer.cost.usd.is_some(), "{kind}: every model of these doubles has a known price");
        let received = double.received();
        assert_eq!(received[0].path, format!("{}/chat/completions", dialects::path_prefix(kind)));
        assert_eq!(received[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(received[0].body["model"], model(kind));
        let records = harness.records.lock().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].outcome.as_str(), records[0].correlation.as_deref()), ("ok", Some("01TESTCORRELATION")));
    }
}

#[tokio::test]
async fn streaming_yields_tokens_and_counts_usage_wherever_the_provider_reports_it() {
    for kind in CLOUD {
        let double =
            Double::start(kind, vec![Reply::sse(dialects::text_stream(kind, &["Hel", "lo", "!"], (12, 3)))]).await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(0));
        let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
        assert!(error.is_none(), "{kind}: {error:?}");
        assert_eq!(tokens(&events), ["Hel", "lo", "!"], "{kind}");
        let completion = done(&events);
        assert_eq!(completion.text, "Hello!");
        assert_eq!((completion.usage.input_tokens, completion.usage.output_tokens), (Some(12), Some(3)), "{kind}");
        // Mistral answers 422 to stream_options; Groq reports usage in x_groq without it.
        let asked_usage = double.received()[0].body.get("stream_options").is_some();
        assert_eq!(asked_usage, !matches!(kind, ProviderKind::Mistral | ProviderKind::Groq), "{kind}");
    }
}

#[tokio::test]
async fn a_stream_without_usage_reports_it_as_unknown_not_zero() {
    let kind = ProviderKind::OpenAi;
    let mut events = dialects::text_stream(kind, &["Hi"], (1, 1));
    events.retain(|e| !e.contains("\"usage\""));
    let double = Double::start(kind, vec![Reply::sse(events)]).await;
    let harness = router(vec![provider(&double, "primary")], quick_retries(0));
    let (events, _) = collect(&harness.router, hello(), StreamOptions::default()).await;
    let completion = done(&events);
    assert_eq!((completion.usage.input_tokens, completion.usage.output_tokens), (None, None));
    assert_eq!(completion.cost.usd, None);
}

fn add_task_tool() -> ToolDefinition {
    ToolDefinition {
        name: "add_task".into(),
        description: "Adds a task to the person's list".into(),
        parameters: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {"title": {"type": "string"}, "kind": {"const": "task"}},
            "required": ["title"],
        }),
    }
}

#[tokio::test]
async fn tool_calls_arrive_whole_with_usable_ids_and_go_back_to_the_provider() {
    for kind in CLOUD {
        let double = Double::start(
            kind,
            vec![
                Reply::sse(dialects::tool_call_stream(kind, "add_task", &["{\"title\":", " \"milk\"}"])),
                dialects::completion(kind, "Added.", (30, 2)),
            ],
        )
        .await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(0));
        let mut request = ChatRequest::new(vec![Message::user("Remind me to buy milk")]);
        request.tools = vec![add_task_tool()];
        let (events, error) = collect(&harness.router, request.clone(), StreamOptions::default()).await;
        assert!(error.is_none(), "{kind}: {error:?}");
        let completion = done(&events);
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls, "{kind}");
        let call = &completion.tool_calls[0];
        assert_eq!((call.name.as_str(), call.arguments.as_str()), ("add_task", "{\"title\": \"milk\"}"), "{kind}");
        assert!(!call.id.is_empty(), "{kind}: Gemini's empty id is replaced");
        assert!(events.iter().any(|e| matches!(e, StreamEvent::ToolCall { .. })));

        // The next turn carries the call and its result back; the doubles of providers with
        // id rules refuse ids they do not accept.
        request.messages.push(Message::assistant_calls(completion.tool_calls.clone()));
        request.messages.push(Message::tool_result(call.id.clone(), "{\"id\": \"01J\"}"));
        let answer = harness.router.complete(&request).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(answer.text, "Added.");
        let sent = &double.received()[1].body;
        assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], sent["messages"][2]["tool_call_id"], "{kind}");
    }
}

#[tokio::test]
async fn fields_and_schema_keys_a_provider_refuses_are_left_out_for_it() {
    for kind in CLOUD {
        let double = Double::start(kind, vec![dialects::completion(kind, "ok", (5, 1))]).await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(0));
        let mut request = hello();
        request.messages[1].name = Some("sam".into());
        request.logprobs = true;
        request.max_tokens = Some(64);
        request.tools = vec![add_task_tool()];
        // The Gemini, Mistral and Groq doubles answer 400/422 as their services do otherwise.
        let answer = harness.router.complete(&request).await;
        assert!(answer.is_ok(), "{kind}: {answer:?}");
    }
}

#[tokio::test]
async fn a_tool_call_moves_to_another_provider_after_a_fallback() {
    // OpenAI made the call; it is down for the next turn, and Mistral (9-character ids) and
    // Anthropic (no dots or slashes) must accept the conversation.
    let openai = Double::start(
        ProviderKind::OpenAi,
        vec![Reply::sse(dialects::tool_call_stream(ProviderKind::OpenAi, "add_task", &["{}"]))],
    )
    .await;
    let mistral =
        Double::start(ProviderKind::Mistral, vec![dialects::completion(ProviderKind::Mistral, "Done.", (40, 2))]).await;
    let harness = router(vec![provider(&openai, "openai"), provider(&mistral, "mistral")], quick_retries(0));
    let mut request = ChatRequest::new(vec![Message::user("Add milk")]);
    request.tools = vec![add_task_tool()];
    let (events, _) = collect(&harness.router, request.clone(), StreamOptions::default()).await;
    let calls = done(&events).tool_calls;
    request.messages.push(Message::assistant_calls(calls.clone()));
    request.messages.push(Message::tool_result(calls[0].id.clone(), "ok"));
    openai.push(dialects::server_error(ProviderKind::OpenAi));
    let answer = harness.router.complete(&request).await.unwrap();
    assert_eq!((answer.provider.as_str(), answer.text.as_str()), ("mistral", "Done."));
    assert_eq!(answer.fallbacks[0].code, ErrorCode::LlmServerError);
    let sent = &mistral.received()[0].body;
    let id = sent["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
    assert!(id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    assert_eq!(sent["messages"][2]["tool_call_id"], id);

    let anthropic =
        Double::start(ProviderKind::Anthropic, vec![dialects::completion(ProviderKind::Anthropic, "Done.", (40, 2))])
            .await;
    let harness = router(vec![provider(&anthropic, "anthropic")], quick_retries(0));
    let mut odd = request.clone();
    odd.messages[1].tool_calls[0].id = "call.7/abc".into();
    odd.messages[2].tool_call_id = Some("call.7/abc".into());
    assert!(harness.router.complete(&odd).await.is_ok());
}

#[tokio::test]
async fn a_rate_limit_waits_what_retry_after_asks_in_seconds() {
    for kind in CLOUD {
        let double =
            Double::start(kind, vec![dialects::rate_limited(kind, "1"), dialects::completion(kind, "ok", (1, 1))])
                .await;
        let retry =
            RetryPolicy { max_retries: 1, base_backoff: Duration::from_millis(1), max_wait: Duration::from_secs(5) };
        let harness = router(vec![provider(&double, "primary")], retry);
        let answer = harness.router.complete(&hello()).await.unwrap();
        let waited = answer.fallbacks[0].waited_ms.unwrap();
        assert_eq!(answer.fallbacks[0].code, ErrorCode::LlmRateLimited, "{kind}");
        assert!(
            (1000..=1100).contains(&waited),
            "{kind}: waited {waited} ms for Retry-After: 1 (plus at most 10% jitter)"
        );
        assert_eq!(double.received().len(), 2);
    }
}

#[tokio::test]
async fn a_rate_limit_with_an_http_date_is_honoured() {
    let kind = ProviderKind::OpenAi;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let double =
        Double::start(kind, vec![dialects::rate_limited(kind, &date), dialects::completion(kind, "ok", (1, 1))]).await;
    let retry =
        RetryPolicy { max_retries: 1, base_backoff: Duration::from_millis(1), max_wait: Duration::from_secs(5) };
    let harness = router(vec![provider(&double, "primary")], retry);
    let answer = harness.router.complete(&hello()).await.unwrap();
    let waited = answer.fallbacks[0].waited_ms.unwrap();
    // The date has whole seconds: between one and two seconds from now, plus jitter.
    assert!((500..=2300).contains(&waited), "waited {waited} ms");
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_falls_back_at_once_and_cools_the_provider_down() {
    let kind = ProviderKind::Groq;
    let primary = Double::start(kind, vec![dialects::rate_limited(kind, "120")]).await;
    let secondary =
        Double::start(ProviderKind::OpenAi, vec![dialects::completion(ProviderKind::OpenAi, "from b", (1, 1)); 2])
            .await;
    let harness = router(vec![provider(&primary, "a"), provider(&secondary, "b")], quick_retries(3));
    let answer = harness.router.complete(&hello()).await.unwrap();
    assert_eq!(answer.provider, "b");
    assert_eq!(answer.fallbacks.len(), 1, "no retry of a provider asking for 120 s");
    assert_eq!(answer.fallbacks[0].waited_ms, None);
    let again = harness.router.complete(&hello()).await.unwrap();
    assert_eq!(again.fallbacks[0].code, ErrorCode::LlmCoolingDown);
    assert_eq!(primary.received().len(), 1, "the cooling provider was not called again");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    for kind in CLOUD {
        let double = Double::start(
            kind,
            vec![dialects::server_error(kind), dialects::server_error(kind), dialects::completion(kind, "ok", (1, 1))],
        )
        .await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(2));
        let answer = harness.router.complete(&hello()).await.unwrap();
        assert_eq!(answer.fallbacks.len(), 2, "{kind}");
        assert!(answer.fallbacks.iter().all(|a| a.code == ErrorCode::LlmServerError && a.waited_ms.is_some()));
        let records = harness.records.lock().unwrap();
        let outcomes: Vec<_> = records.iter().map(|r| r.outcome.as_str()).collect();
        assert_eq!(outcomes, ["llm.server_error", "llm.server_error", "ok"]);
    }
}

#[tokio::test]
async fn a_refused_key_is_never_retried_and_never_repeated() {
    for kind in CLOUD {
        let double = Double::start(kind, vec![dialects::unauthorized(kind, KEY)]).await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(3));
        let error = harness.router.complete(&hello()).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::LlmUnauthorized, "{kind}: {error}");
        assert_eq!(double.received().len(), 1, "{kind}: no retry");
        let shown = format!("{error} {error:?}");
        assert!(
            !shown.contains(KEY) && !shown.contains(&KEY[..6]) && !shown.contains(&KEY[KEY.len() - 4..]),
            "{kind}: {shown}"
        );
    }
}

#[tokio::test]
async fn an_error_event_before_the_first_token_reaches_retry_and_fallback() {
    for kind in CLOUD {
        let overloaded = Reply::sse(vec![dialects::stream_error(kind)]);
        let primary = Double::start(kind, vec![overloaded.clone(), overloaded]).await;
        let secondary = Double::start(
            ProviderKind::OpenAi,
            vec![Reply::sse(dialects::text_stream(ProviderKind::OpenAi, &["fine"], (1, 1)))],
        )
        .await;
        let harness = router(vec![provider(&primary, "a"), provider(&secondary, "b")], quick_retries(1));
        let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
        assert!(error.is_none(), "{kind}: {error:?}");
        let completion = done(&events);
        assert_eq!((completion.provider.as_str(), completion.text.as_str()), ("b", "fine"));
        let codes: Vec<_> = completion.fallbacks.iter().map(|a| a.code).collect();
        assert_eq!(codes, [ErrorCode::LlmServerError, ErrorCode::LlmServerError], "{kind}: retried, then fell back");
    }
}

#[tokio::test]
async fn a_stream_cut_before_any_token_is_retried() {
    for kind in CLOUD {
        let mut cut = dialects::text_stream(kind, &["never"], (1, 1));
        cut.truncate(1); // The role chunk only, then the connection closes.
        let double =
            Double::start(kind, vec![Reply::sse(cut), Reply::sse(dialects::text_stream(kind, &["whole"], (1, 1)))])
                .await;
        let harness = router(vec![provider(&double, "primary")], quick_retries(1));
        let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
        assert!(error.is_none(), "{kind}: {error:?}");
        assert_eq!(done(&events).text, "whole");
        assert_eq!(done(&events).fallbacks[0].code, ErrorCode::LlmMalformedResponse);
    }
}

/// Streams that break off after "Hel": an error event, a cut without `[DONE]`, a chunk that is
/// not JSON, and OpenRouter-style `finish_reason: "error"`.
fn broken_after_first_token(kind: ProviderKind) -> Vec<(&'static str, Vec<String>)> {
    let start = dialects::text_stream(kind, &["Hel"], (1, 1))[..2].to_vec();
    let with = |tail: Vec<String>| [start.clone(), tail].concat();
    let error_finish = json!({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]});
    vec![
        ("error event", with(vec![dialects::stream_error(kind)])),
        ("cut", start.clone()),
        ("malformed", with(vec!["data: {\"choices\": [{\"delta\": {\"content\": \"lo\"\n\n".to_owned()])),
        ("finish_reason error", with(vec![event(&error_finish)])),
    ]
}

#[tokio::test]
async fn primary_fails_after_the_first_token_a_clear_error_and_no_silent_switch() {
    for kind in CLOUD {
        for (case, events) in broken_after_first_token(kind) {
            let primary = Double::start(kind, vec![Reply::sse(events)]).await;
            let secondary = Double::start(
                ProviderKind::OpenAi,
                vec![Reply::sse(dialects::text_stream(ProviderKind::OpenAi, &["other"], (1, 1)))],
            )
            .await;
            let harness = router(vec![provider(&primary, "a"), provider(&secondary, "b")], quick_retries(2));
            let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
            assert_eq!(tokens(&events), ["Hel"], "{kind} {case}");
            let error = error.unwrap_or_else(|| panic!("{kind} {case}: a broken stream ended as a success"));
            assert_eq!(error.code(), ErrorCode::LlmStreamInterrupted, "{kind} {case}: {error}");
            assert!(matches!(error, LlmError::StreamInterrupted { received_chars: 3, .. }));
            assert!(!events.iter().any(|e| matches!(e, StreamEvent::Done { .. })), "{kind} {case}");
            assert_eq!(secondary.received().len(), 0, "{kind} {case}: no silent switch");
            assert_eq!(primary.received().len(), 1, "{kind} {case}: output was sent, so no retry");
        }
    }
}

#[tokio::test]
async fn a_restart_after_the_first_token_is_explicit_when_the_caller_allows_it() {
    let kind = ProviderKind::Anthropic;
    let (_, broken) = broken_after_first_token(kind).swap_remove(0);
    let primary = Double::start(kind, vec![Reply::sse(broken)]).await;
    let secondary = Double::start(
        ProviderKind::Mistral,
        vec![Reply::sse(dialects::text_stream(ProviderKind::Mistral, &["Hello"], (2, 1)))],
    )
    .await;
    let harness = router(vec![provider(&primary, "claude"), provider(&secondary, "mistral")], quick_retries(0));
    let (events, error) = collect(&harness.router, hello(), StreamOptions { allow_restart: true }).await;
    assert!(error.is_none(), "{error:?}");
    let restarted = events.iter().position(|e| matches!(e, StreamEvent::Restarted { .. })).expect("a Restarted event");
    let StreamEvent::Restarted { from, to, code, .. } = &events[restarted] else { unreachable!() };
    assert_eq!((from.as_str(), to.as_str(), *code), ("claude", "mistral", ErrorCode::LlmStreamInterrupted));
    assert_eq!(tokens(&events[..restarted]), ["Hel"]);
    assert_eq!(tokens(&events[restarted..]), ["Hello"]);
    let completion = done(&events);
    assert_eq!((completion.provider.as_str(), completion.text.as_str()), ("mistral", "Hello"));
    assert_eq!(completion.fallbacks[0].code, ErrorCode::LlmStreamInterrupted);
}

#[tokio::test]
async fn primary_hangs_before_the_first_token_secondary_answers() {
    for kind in CLOUD {
        for hang in [Reply::Hang, Reply::Sse { events: vec![], end: End::Hang }] {
            let primary = Double::start(kind, vec![hang.clone(), hang]).await;
            let secondary = Double::start(
                ProviderKind::Mistral,
                vec![
                    Reply::sse(dialects::text_stream(ProviderKind::Mistral, &["here"], (1, 1))),
                    dialects::completion(ProviderKind::Mistral, "here", (1, 1)),
                ],
            )
            .await;
            let mut slow = provider(&primary, "a");
            slow.settings.timeouts.first_token = Duration::from_millis(300);
            let harness = router(vec![slow, provider(&secondary, "b")], quick_retries(0));
            let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
            assert!(error.is_none(), "{kind}: {error:?}");
            let completion = done(&events);
            assert_eq!((completion.provider.as_str(), completion.text.as_str()), ("b", "here"));
            assert_eq!(completion.fallbacks[0].code, ErrorCode::LlmTimeoutFirstToken, "{kind}");
            let answer = harness.router.complete(&hello()).await.unwrap();
            assert_eq!(answer.provider, "b");
            assert_eq!(answer.fallbacks[0].code, ErrorCode::LlmTimeoutFirstToken, "{kind}");
        }
    }
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_an_idle_timeout() {
    let kind = ProviderKind::Ollama;
    let start = dialects::text_stream(kind, &["Hel"], (1, 1))[..2].to_vec();
    let double = Double::start(kind, vec![Reply::Sse { events: start, end: End::Hang }]).await;
    let mut config = provider(&double, "local-ollama");
    config.settings.timeouts.idle = Duration::from_millis(300);
    let harness = router(vec![config], quick_retries(0));
    let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
    assert_eq!(tokens(&events), ["Hel"]);
    let error = error.unwrap();
    assert_eq!(error.code(), ErrorCode::LlmStreamInterrupted);
    assert!(error.to_string().contains("silent"), "{error}");
}

#[tokio::test]
async fn a_total_limit_ends_a_stream_that_keeps_talking_too_long() {
    let kind = ProviderKind::OpenAi;
    let start = dialects::text_stream(kind, &["Hel"], (1, 1))[..2].to_vec();
    let double = Double::start(kind, vec![Reply::Sse { events: start, end: End::Hang }]).await;
    let mut config = provider(&double, "primary");
    config.settings.timeouts.total = Duration::from_millis(400);
    let harness = router(vec![config], quick_retries(0));
    let (_, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
    assert!(error.unwrap().to_string().contains("longer than 400 ms"));
}

#[tokio::test]
async fn an_unreachable_provider_falls_back() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let secondary =
        Double::start(ProviderKind::Groq, vec![dialects::completion(ProviderKind::Groq, "up", (1, 1))]).await;
    let mut gone = ProviderSettings::new("gone", ProviderKind::OpenAi, "gpt-4o-mini");
    gone.base_url = Some(format!("http://{closed}/v1"));
    let harness =
        router(vec![ProviderConfig { settings: gone, api_key: None }, provider(&secondary, "groq")], quick_retries(1));
    let answer = harness.router.complete(&hello()).await.unwrap();
    assert_eq!(answer.provider, "groq");
    assert!(answer.fallbacks.iter().all(|a| a.code == ErrorCode::LlmUnreachable));
}

#[tokio::test]
async fn every_provider_failing_reports_each_reason() {
    let a = Double::start(ProviderKind::Gemini, vec![dialects::unauthorized(ProviderKind::Gemini, KEY)]).await;
    let b = Double::start(ProviderKind::Mistral, vec![dialects::server_error(ProviderKind::Mistral)]).await;
    let harness = router(vec![provider(&a, "gemini"), provider(&b, "mistral")], quick_retries(0));
    let error = harness.router.complete(&hello()).await.unwrap_err();
    let LlmError::AllFailed { attempts } = &error else { panic!("{error}") };
    let reasons: Vec<_> = attempts.iter().map(|a| (a.provider.as_str(), a.code)).collect();
    assert_eq!(reasons, [("gemini", ErrorCode::LlmUnauthorized), ("mistral", ErrorCode::LlmServerError)]);
    assert!(!error.to_string().contains(KEY), "{error}");
}

#[tokio::test]
async fn cooldown_skips_a_failing_provider_until_it_is_over() {
    let primary = Double::start(
        ProviderKind::OpenAi,
        vec![dialects::server_error(ProviderKind::OpenAi), dialects::completion(ProviderKind::OpenAi, "back", (1, 1))],
    )
    .await;
    let secondary =
        Double::start(ProviderKind::Groq, vec![dialects::completion(ProviderKind::Groq, "b", (1, 1)); 2]).await;
    let health = Health::new();
    let chain = || vec![provider(&primary, "a"), provider(&secondary, "b")];
    let long = CooldownPolicy { failures: 1, duration: Duration::from_secs(3600) };
    let harness = router_with(chain(), quick_retries(0), long, health.clone());
    assert_eq!(harness.router.complete(&hello()).await.unwrap().provider, "b");
    assert!(health.is_cooling("a"));
    // A second router of the same process shares the provider's health.
    let harness = router_with(chain(), quick_retries(0), long, health.clone());
    let answer = harness.router.complete(&hello()).await.unwrap();
    assert_eq!((answer.provider.as_str(), answer.fallbacks[0].code), ("b", ErrorCode::LlmCoolingDown));
    assert_eq!(primary.received().len(), 1);

    // With every provider cooling, the chain is tried anyway rather than failing unasked.
    let only_primary = router_with(vec![provider(&primary, "a")], quick_retries(0), long, health.clone());
    assert_eq!(only_primary.router.complete(&hello()).await.unwrap().text, "back");
    assert!(!health.is_cooling("a"), "a success ends the cooldown");
}

#[tokio::test]
async fn a_request_too_long_for_the_context_window_is_refused_before_the_call() {
    let ollama = Double::start(ProviderKind::Ollama, vec![]).await;
    let openai =
        Double::start(ProviderKind::OpenAi, vec![dialects::completion(ProviderKind::OpenAi, "read it all", (9000, 3))])
            .await;
    let harness = router(vec![provider(&ollama, "ollama"), provider(&openai, "openai")], quick_retries(0));
    // Ollama's documented default window is 4096 tokens; it would silently drop the start.
    let long = ChatRequest::new(vec![Message::user("lorem ipsum ".repeat(3000))]);
    let answer = harness.router.complete(&long).await.unwrap();
    assert_eq!(answer.provider, "openai");
    assert_eq!(answer.fallbacks[0].code, ErrorCode::LlmContextOverflow);
    assert!(ollama.received().is_empty(), "no request was sent to be truncated");
}

#[tokio::test]
async fn empty_finish_reasons_and_extra_fields_never_break_decoding() {
    let kind = ProviderKind::Ollama;
    let chunk = |content: &str, finish: &str| {
        event(
            &json!({"id": "c", "object": "chat.completion.chunk", "model": "llama3.2", "system_fingerprint": "fp_ollama",
            "service_tier": null, "usage": null, "provider_specific": {"x": 1},
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": content, "reasoning": null}, "finish_reason": finish, "logprobs": null}]}),
        )
    };
    let events = vec![chunk("a", ""), chunk("b", ""), chunk("", "stop"), "data: [DONE]\n\n".to_owned()];
    let double = Double::start(kind, vec![Reply::sse(events)]).await;
    let harness = router(vec![provider(&double, "ollama")], quick_retries(0));
    let (events, error) = collect(&harness.router, hello(), StreamOptions::default()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(done(&events).text, "ab");
}

#[tokio::test]
async fn models_and_embeddings() {
    let kind = ProviderKind::OpenAi;
    let double = Double::start(kind, vec![
        Reply::json(200, json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "system"}]}).to_string()),
        Reply::json(200, json!({"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 4, "total_tokens": 4},
            "data": [{"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}, {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}).to_string()),
    ])
    .await;
    let mut config = provider(&double, "openai");
    config.settings.embedding_model = Some("text-embedding-3-small".into());
    let harness = router(vec![config], quick_retries(0));
    assert_eq!(harness.router.models("openai").await.unwrap(), ["gpt-4o-mini"]);
    let vectors = harness.router.embed(&["a".into(), "b".into()]).await.unwrap();
    assert_eq!(vectors, [vec![0.1, 0.2], vec![0.3, 0.4]]);
    assert_eq!(double.received()[1].body["input"], json!(["a", "b"]));
    assert_eq!(harness.router.models("nope").await.unwrap_err().code(), ErrorCode::LlmUnknownProvider);
}
