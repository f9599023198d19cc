//! The `openai-chat` and `openai-responses` upstreams (SPEC §10), over real loopback sockets:
//! mock servers answering as OpenAI's API reference shows (a `chat.completion.chunk` stream
//! ending with a usage chunk; Responses events from `response.created` to
//! `response.completed` with usage), what agentgate sends them (path, body, history,
//! `previous_response_id`, headers), every front reaching them, and the tokens priced into
//! the charge.

mod harness;

use agentgate::config::Config;
use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

/// The client's key must never reach a backend; the agent's own credential does.
const UPSTREAM_TOKEN: &str = "sk-upstream-secret";

/// `credits_per_message = 1`, 0.5 per 1k input tokens, 2 per 1k output tokens.
const PRICING: &str = "credits_per_message = 1\nmax_usage_credits = 100\n\
                       credits_per_1k_input_tokens = 0.5\ncredits_per_1k_output_tokens = 2";
/// The usage both mocks report: 1200 input and 3000 output tokens.
const INPUT_TOKENS: u64 = 1200;
const OUTPUT_TOKENS: u64 = 3000;
/// 1 + 1.2 × 0.5 + 3 × 2.
const CHARGE: f64 = 7.6;

const ANSWER: &str = "Hello there ✓";

/// A Chat Completions stream as the API reference shows it: the role first, content deltas,
/// the `finish_reason` chunk, then (with `stream_options.include_usage`) the usage chunk with
/// `choices: []`, and `[DONE]`. `usage`: whether the server sends the usage chunk.
fn chat_completion_stream(deltas: &[&str], usage: bool) -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": "gpt-4.1-2025-04-14",
            "service_tier": "default",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]
        })
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "", "refusal": null }),
        Value::Null,
    )];
    for d in deltas {
        events.push(chunk(json!({ "content": d }), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if usage {
        events.push(json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": "gpt-4.1-2025-04-14",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [],
            "usage": {
                "prompt_tokens": INPUT_TOKENS,
                "completion_tokens": OUTPUT_TOKENS,
                "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
                "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
                "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0 }
            }
        }));
    }
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

/// The response id the Responses mock reports.
const RESPONSE_ID: &str = "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41";

/// A Responses stream as the API reference shows it: `response.created`,
/// `response.in_progress`, the message item and its text part, the text deltas and dones, and
/// `response.completed` with the whole response and its usage.
fn responses_stream() -> String {
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": RESPONSE_ID, "object": "response", "created_at": 1741476777,
            "status": status, "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": "gpt-4.1-2025-04-14", "output": output,
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": { "effort": null, "summary": null }, "store": true, "temperature": 1.0,
            "text": { "format": { "type": "text" } }, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
        })
    };
    let item_id = "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41";
    let done_item = json!({
        "id": item_id, "type": "message", "status": "completed", "role": "assistant",
        "content": [{ "type": "output_text", "text": ANSWER, "annotations": [] }]
    });
    let (a, b) = ANSWER.split_at(6);
    let events = vec![
        json!({ "type": "response.created", "response": response("in_progress", json!([]), Value::Null) }),
        json!({ "type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null) }),
        json!({ "type": "response.output_item.added", "output_index": 0, "item": {
            "id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": [] } }),
        json!({ "type": "response.content_part.added", "item_id": item_id, "output_index": 0,
            "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [] } }),
        json!({ "type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
            "content_index": 0, "delta": a }),
        json!({ "type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
            "content_index": 0, "delta": b }),
        json!({ "type": "response.output_text.done", "item_id": item_id, "output_index": 0,
            "content_index": 0, "text": ANSWER }),
        json!({ "type": "response.content_part.done", "item_id": item_id, "output_index": 0,
            "content_index": 0, "part": { "type": "output_text", "text": ANSWER, "annotations": [] } }),
        json!({ "type": "response.output_item.done", "output_index": 0, "item": done_item }),
        json!({ "type": "response.completed", "response": response("completed", json!([done_item]), json!({
            "input_tokens": INPUT_TOKENS, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": OUTPUT_TOKENS, "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS
        })) }),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(n, mut e)| {
            e["sequence_number"] = json!(n);
            format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// An agent on `upstream` speaking `api`, with its own upstream credential and `extra` keys.
fn openai_agent(id: &str, upstream: &str, api: Api, extra: &str) -> String {
    agent(
        id,
        upstream,
        api,
        &format!("upstream_agent_id = \"gpt-4.1\"\nupstream_token = \"{UPSTREAM_TOKEN}\"\n{extra}"),
    )
}

/// One chat on `front` (streamed or not), read as the client sees it.
async fn chat(
    gw: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
    stream: bool,
) -> Answer {
    let r = send_chat(&client(), gw, front, agent, message, conversation, stream).await;
    assert_eq!(r.status(), 200, "{front}");
    match stream || front == Api::AgUi {
        true => {
            let body = r.text().await.expect("stream body");
            let a = read_stream(front_format(front), &body);
            assert!(a.ended_properly, "{front}: {body}");
            a
        }
        false => read_sync(front, &r.json().await.expect("JSON body")),
    }
}

/// What agentgate sent: never the client's key, always the agent's, asking for a stream.
fn assert_headers(r: &Recorded) {
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}").as_str())
    );
    assert!(
        !r.headers
            .iter()
            .any(|(_, v)| v.contains(test_key().expose())),
        "the client's key reached the backend: {:?}",
        r.headers
    );
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

// ------------------------------------------------------------------------- Chat Completions --

/// A stateless Chat Completions server holds a real conversation: each turn carries the
/// recorded messages (at most `history_messages`, the newest, oldest first) before the new
/// one, with `model`, `stream` and `stream_options.include_usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_upstream_gets_the_conversation_and_never_the_client_key() {
    let mock = MockUpstream::sse(chat_completion_stream(&["Hello", " there ✓"], true))
        .spawn()
        .await;
    let id = agent_id(1);
    let gw = spawn_gateway(&config(
        "",
        &[openai_agent(
            &id,
            &mock.url(),
            Api::OpenAiChat,
            "history_messages = 2",
        )],
    ))
    .await;
    let first = chat(&gw, Api::Chatbase, &id, "first ✓", None, true).await;
    assert_eq!(first.text, ANSWER);
    let conversation = first.conversation.clone().expect("a conversation id");
    let second = chat(
        &gw,
        Api::Chatbase,
        &id,
        "second",
        Some(&conversation),
        false,
    )
    .await;
    assert_eq!(second.text, ANSWER);
    let third = chat(&gw, Api::Chatbase, &id, "third", Some(&conversation), true).await;
    assert_eq!(third.text, ANSWER);

    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_headers(r);
        let body = r.json();
        assert_eq!(body["model"], "gpt-4.1");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({ "include_usage": true }));
    }
    let messages = |n: usize| requests[n].json()["messages"].clone();
    assert_eq!(
        messages(0),
        json!([{ "role": "user", "content": "first ✓" }])
    );
    // The second turn: the first exchange, then the new message.
    assert_eq!(
        messages(1),
        json!([
            { "role": "user", "content": "first ✓" },
            { "role": "assistant", "content": ANSWER },
            { "role": "user", "content": "second" },
        ])
    );
    // `history_messages = 2`: only the newest exchange.
    assert_eq!(
        messages(2),
        json!([
            { "role": "user", "content": "second" },
            { "role": "assistant", "content": ANSWER },
            { "role": "user", "content": "third" },
        ])
    );
}

// -------------------------------------------------------------------------------- Responses --

/// A Responses turn continues the conversation from the last response: the second call names
/// the first answer's `response.created` id as `previous_response_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_upstream_continues_from_the_previous_response_id() {
    let mock = MockUpstream::sse(responses_stream()).spawn().await;
    let id = agent_id(2);
    let gw = spawn_gateway(&config(
        "",
        &[openai_agent(&id, &mock.url(), Api::OpenAiResponses, "")],
    ))
    .await;
    let first = chat(&gw, Api::Guayaba, &id, "first", None, false).await;
    assert_eq!(first.text, ANSWER);
    let session = first.conversation.clone().expect("a sessionKey");
    let second = chat(&gw, Api::Guayaba, &id, "second ✓", Some(&session), true).await;
    assert_eq!(second.text, ANSWER);
    assert_eq!(second.conversation.as_deref(), Some(session.as_str()));

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.path, "/v1/responses");
        assert_headers(r);
    }
    assert_eq!(
        requests[0].json(),
        json!({ "model": "gpt-4.1", "input": "first", "stream": true })
    );
    assert_eq!(
        requests[1].json(),
        json!({
            "model": "gpt-4.1", "input": "second ✓", "stream": true,
            "previous_response_id": RESPONSE_ID,
        })
    );
}

/// The demo backend speaks both APIs, and a conversation continues through each: the Chat
/// Completions demo counts the user messages it is sent (the history), the Responses demo
/// follows `previous_response_id`, a new response id every turn — so turn 3 is only reached
/// when the gateway sends the latest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_agents_speak_both_and_conversations_continue_turn_after_turn() {
    let apis = [Api::OpenAiChat, Api::OpenAiResponses];
    let mut agents = Vec::new();
    for (n, api) in apis.into_iter().enumerate() {
        let backend = demo_agent(api).await;
        agents.push(agent(
            &agent_id(10 + n as u32),
            &format!("http://{backend}"),
            api,
            "",
        ));
    }
    let gw = spawn_gateway(&config("", &agents)).await;
    for (n, api) in apis.into_iter().enumerate() {
        let id = agent_id(10 + n as u32);
        let mut conversation = None;
        for (turn, front) in [Api::Pharen, Api::Chatbase, Api::Agents]
            .into_iter()
            .enumerate()
        {
            let message = format!("hello ✓ {turn}");
            let stream = turn % 2 == 0;
            let a = chat(&gw, front, &id, &message, conversation.as_deref(), stream).await;
            assert_eq!(
                a.text,
                format!("Echo (turn {}): {message}", turn + 1),
                "{api} via {front}"
            );
            match &conversation {
                None => conversation = a.conversation.clone(),
                Some(_) => assert_eq!(a.conversation, conversation, "{api} via {front}"),
            }
        }
    }
}

// ------------------------------------------------------------------------------- fronts, credits --

/// Every front reaches both OpenAI upstreams, streamed and not; each answer is charged the
/// base price plus the reported tokens at the agent's token prices, and where the front
/// reports usage it shows exactly what the balance lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_reaches_both_upstreams_and_pays_for_the_reported_tokens() {
    let chat_mock = MockUpstream::sse(chat_completion_stream(&["Hello", " there ✓"], true))
        .spawn()
        .await;
    let responses_mock = MockUpstream::sse(responses_stream()).spawn().await;
    let (chat_id, responses_id) = (agent_id(3), agent_id(4));
    let gw = spawn_gateway(&config_with_ag_ui(
        "",
        &[
            openai_agent(&chat_id, &chat_mock.url(), Api::OpenAiChat, PRICING),
            openai_agent(
                &responses_id,
                &responses_mock.url(),
                Api::OpenAiResponses,
                PRICING,
            ),
        ],
    ))
    .await;
    let fronts = [
        Api::Pharen,
        Api::Chatbase,
        Api::Agents,
        Api::Guayaba,
        Api::AgUi,
    ];
    let mut calls = 0;
    for id in [&chat_id, &responses_id] {
        for front in fronts {
            for stream in [true, false] {
                if front == Api::AgUi && !stream {
                    continue; // ag-ui always streams
                }
                let before = balance(&gw.running, TEST_ACCOUNT).await;
                let a = chat(&gw, front, id, "price me", None, stream).await;
                let after = balance(&gw.running, TEST_ACCOUNT).await;
                calls += 1;
                assert_eq!(a.text, ANSWER, "{front} → {id}");
                assert!(a.errors.is_empty(), "{front}: {:?}", a.errors);
                let charged = before - after;
                assert!(
                    (charged - CHARGE).abs() < 1e-6,
                    "{front} → {id}: charged {charged}, not {CHARGE}"
                );
                if let Some(shown) = a.credits {
                    assert!(
                        (shown - charged).abs() < 1e-6,
                        "{front}: shown {shown}, charged {charged}"
                    );
                }
            }
        }
    }
    assert_eq!(
        chat_mock.requests().len() + responses_mock.requests().len(),
        calls
    );
    for r in chat_mock
        .requests()
        .iter()
        .chain(&responses_mock.requests())
    {
        assert_headers(r);
    }
}

/// A server that sends no usage is priced as before by output characters, and its output
/// tokens estimated from them (one per 4 characters): never only the base price when it
/// produced output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_usage_is_priced_by_its_output() {
    let mock = MockUpstream::sse(chat_completion_stream(&["Hello", " there ✓"], false))
        .spawn()
        .await;
    let id = agent_id(5);
    let gw = spawn_gateway(&config(
        "",
        &[openai_agent(
            &id,
            &mock.url(),
            Api::OpenAiChat,
            "credits_per_message = 1\nmax_usage_credits = 100\n\
             credits_per_1k_output_tokens = 1000\ncredits_per_1k_output_chars = 1000",
        )],
    ))
    .await;
    let before = balance(&gw.running, TEST_ACCOUNT).await;
    let a = chat(&gw, Api::Chatbase, &id, "no usage", None, true).await;
    let charged = before - balance(&gw.running, TEST_ACCOUNT).await;
    assert_eq!(a.text, ANSWER);
    // 13 characters: 13 credits by characters, plus ⌈13 / 4⌉ = 4 estimated tokens.
    let chars = ANSWER.chars().count() as f64;
    let want = 1.0 + chars + (chars / 4.0).ceil();
    assert!(
        (charged - want).abs() < 1e-6,
        "charged {charged}, not {want}"
    );
    assert_eq!(a.credits, Some(want));
}

/// The mid-stream hard limit holds for token prices: output priced per (estimated) token is
/// cut off when the reservation is spent, and charged exactly base + cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_priced_output_stops_at_the_credit_limit() {
    let deltas = vec!["abcdefghij"; 50];
    let mock = MockUpstream::sse(chat_completion_stream(&deltas, true))
        .spawn()
        .await;
    let id = agent_id(6);
    let gw = spawn_gateway(&config(
        "",
        &[openai_agent(
            &id,
            &mock.url(),
            Api::OpenAiChat,
            // 1 credit per token: the second delta (20 characters, 5 tokens) reaches the cap of 5.
            "credits_per_message = 1\nmax_usage_credits = 5\ncredits_per_1k_output_tokens = 1000",
        )],
    ))
    .await;
    let before = balance(&gw.running, TEST_ACCOUNT).await;
    let a = chat(&gw, Api::Chatbase, &id, "talk a lot", None, true).await;
    let charged = before - balance(&gw.running, TEST_ACCOUNT).await;
    assert!(a.text.len() < deltas.len() * 10, "cut off: {}", a.text);
    assert!(
        a.raw.contains("creditsExhausted"),
        "the finish says why: {}",
        a.raw
    );
    assert!((charged - 6.0).abs() < 1e-6, "base + cap, not {charged}");
    assert_eq!(a.credits, Some(6.0));
}

// ------------------------------------------------------------------------------------ config --

/// Bad configuration is refused with the key and the reason.
#[test]
fn config_refuses_openai_fronts_versioned_base_urls_and_huge_histories() {
    let refused = |toml: &str| match Config::parse(toml, "t.toml") {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e.to_string(),
    };
    let server = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let e = refused(&format!("{server}[[front]]\napi = \"openai-chat\"\n"));
    assert!(e.contains("is an upstream API only"), "{e}");
    let e = refused(&format!(
        "{server}[[front]]\napi = \"agents\"\n[[agent]]\nid = \"a\"\n\
         upstream = \"http://127.0.0.1:8000/v1\"\nupstream_api = \"openai-chat\"\n"
    ));
    assert!(e.contains("ends with `/v1`"), "{e}");
    let e = refused(&format!(
        "{server}[[front]]\napi = \"agents\"\n[[agent]]\nid = \"a\"\n\
         upstream = \"http://127.0.0.1:8000\"\nupstream_api = \"openai-chat\"\n\
         history_messages = 5000\n"
    ));
    assert!(e.contains("history_messages: must be at most 1000"), "{e}");
    let e = refused(&format!(
        "{server}[[front]]\napi = \"agents\"\n[[agent]]\nid = \"a\"\n\
         upstream = \"http://127.0.0.1:8000\"\nupstream_api = \"openai-responses\"\n\
         credits_per_1k_input_tokens = -1\n"
    ));
    assert!(
        e.contains("credits_per_1k_input_tokens: must be a finite number ≥ 0"),
        "{e}"
    );
    Config::parse(
        &format!(
            "{server}[[front]]\napi = \"agents\"\n[[agent]]\nid = \"a\"\n\
             upstream = \"http://127.0.0.1:11434\"\nupstream_api = \"openai-chat\"\n\
             upstream_agent_id = \"meta-llama/Llama-3.1-8B-Instruct\"\nhistory_messages = 0\n"
        ),
        "t.toml",
    )
    .expect("a base URL without /v1 is accepted");
}
