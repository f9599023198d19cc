//! The gateway over real loopback sockets: every front against every upstream API, HTTP/2 and
//! TLS, misbehaving backends, a client that stops reading, validation and headers, graceful
//! shutdown, and the Vercel AI SDK's own client.

mod common;

use std::time::Duration;

use agentgate::fronts::Api;
use common::*;
use serde_json::{json, Value};

const UTF8_MESSAGE: &str = "Hello é 日本語 👋🏽";
const WEATHER_MESSAGE: &str = "What is the weather in Paris?";
const WEATHER_TEXT: &str = "The weather in Paris is sunny, 21 °C.";

/// What the demo echo answers on a turn.
fn echo(turn: u32, message: &str) -> String {
    format!("Echo (turn {turn}): {message}")
}

/// Concatenated text parts of an assembled AI SDK `UIMessage`.
fn ui_message_text(message: &Value) -> String {
    message["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// A streamed chat: checks the response head, reads the body in the front's format and, for
/// ui-message, has the AI SDK's parser accept it.
async fn stream_chat(
    client: &reqwest::Client,
    gateway: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
) -> Answer {
    let response = send_chat(client, gateway, front, agent, message, conversation, true).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("stream body");
    assert_eq!(status, 200, "{front} stream: {body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let format = front_format(front);
    if format == "ui-message" {
        assert_eq!(headers["x-vercel-ai-ui-message-stream"], "v1");
    }
    let answer = read_stream(format, &body);
    if format == "ui-message" {
        if let Some(verdict) = check_ui_stream(&body).await {
            assert_eq!(verdict["ok"], true, "AI SDK refused the stream: {verdict}");
            assert_eq!(verdict["done"], true, "{verdict}");
            if answer.errors.is_empty() {
                assert!(verdict.get("errorChunks").is_none(), "{verdict}");
                assert_eq!(ui_message_text(&verdict["message"]), answer.text);
            }
        }
    }
    answer
}

async fn sync_chat(
    client: &reqwest::Client,
    gateway: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
) -> Answer {
    let response = send_chat(client, gateway, front, agent, message, conversation, false).await;
    let status = response.status();
    let body = response.text().await.expect("sync body");
    assert_eq!(status, 200, "{front} sync: {body}");
    let v: Value = serde_json::from_str(&body).expect("sync body is JSON");
    read_sync(front, &v)
}

// ------------------------------------------------------------------ every front × every API --

/// One front against a demo backend speaking `upstream`: two streamed turns of one
/// conversation, then two sync turns of another, with multi-byte text, a tool call and usage.
async fn front_to_upstream(front: Api, upstream: Api) {
    let backend = demo_agent(upstream).await;
    let id = agent_id(7);
    let agents = [agent(&id, &format!("http://{backend}"), upstream, "")];
    // Tools survive where both the backend's format and the client's carry them.
    let tools_in_stream = upstream != Api::Agents && front != Api::Agents;
    let tools_in_sync = upstream != Api::Agents && front == Api::Guayaba;
    // Usage = charged = credits_per_message (1) + what the demo reports (1, or 2 with a tool).
    let usage_in_sync = matches!(front, Api::Chatbase | Api::Guayaba);
    let c = client();

    // Streaming. (Its own gateway: on `agents` a chat without an id joins the default
    // conversation, which must start fresh here.)
    let gw = spawn_gateway(&config("", &agents)).await;
    let first = stream_chat(&c, &gw, front, &id, UTF8_MESSAGE, None).await;
    assert_eq!(first.text, echo(1, UTF8_MESSAGE), "{}", first.raw);
    assert!(first.errors.is_empty() && first.ended_properly, "{}", first.raw);
    assert_eq!(first.credits, Some(2.0), "{}", first.raw);
    assert!(first.tool_inputs.is_empty());
    let conversation = first
        .conversation
        .clone()
        .unwrap_or_else(|| panic!("no conversation id in {}", first.raw));

    let second = stream_chat(&c, &gw, front, &id, WEATHER_MESSAGE, Some(&conversation)).await;
    assert_eq!(
        second.text,
        format!("{WEATHER_TEXT} {}", echo(2, WEATHER_MESSAGE)),
        "{}",
        second.raw
    );
    assert!(second.errors.is_empty() && second.ended_properly, "{}", second.raw);
    assert_eq!(second.credits, Some(3.0), "{}", second.raw);
    assert_eq!(second.conversation.as_deref(), Some(conversation.as_str()));
    if tools_in_stream {
        assert_eq!(second.tool_inputs, ["get_weather"], "{}", second.raw);
        assert_eq!(second.tool_outputs.len(), 1, "{}", second.raw);
    } else {
        assert!(second.tool_inputs.is_empty(), "{}", second.raw);
    }
    gw.running.shutdown().await;

    // Sync.
    let gw = spawn_gateway(&config("", &agents)).await;
    let first = sync_chat(&c, &gw, front, &id, WEATHER_MESSAGE, None).await;
    assert_eq!(
        first.text,
        format!("{WEATHER_TEXT} {}", echo(1, WEATHER_MESSAGE)),
        "{}",
        first.raw
    );
    if usage_in_sync {
        assert_eq!(first.credits, Some(3.0), "{}", first.raw);
    }
    if tools_in_sync {
        assert_eq!(first.tool_inputs, ["get_weather"], "{}", first.raw);
        assert_eq!(first.tool_outputs.len(), 1, "{}", first.raw);
    }
    let conversation = first
        .conversation
        .clone()
        .unwrap_or_else(|| panic!("no conversation id in {}", first.raw));
    let second = sync_chat(&c, &gw, front, &id, UTF8_MESSAGE, Some(&conversation)).await;
    assert_eq!(second.text, echo(2, UTF8_MESSAGE), "{}", second.raw);
    assert_eq!(second.conversation.as_deref(), Some(conversation.as_str()));
    if usage_in_sync {
        assert_eq!(second.credits, Some(2.0), "{}", second.raw);
    }
    gw.running.shutdown().await;
}

macro_rules! pairs {
    ($($name:ident: $front:ident from $upstream:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            front_to_upstream(Api::$front, Api::$upstream).await;
        }
    )*};
}

pairs! {
    pharen_front_pharen_backend: Pharen from Pharen;
    pharen_front_chatbase_backend: Pharen from Chatbase;
    pharen_front_agents_backend: Pharen from Agents;
    pharen_front_guayaba_backend: Pharen from Guayaba;
    chatbase_front_pharen_backend: Chatbase from Pharen;
    chatbase_front_chatbase_backend: Chatbase from Chatbase;
    chatbase_front_agents_backend: Chatbase from Agents;
    chatbase_front_guayaba_backend: Chatbase from Guayaba;
    agents_front_pharen_backend: Agents from Pharen;
    agents_front_chatbase_backend: Agents from Chatbase;
    agents_front_agents_backend: Agents from Agents;
    agents_front_guayaba_backend: Agents from Guayaba;
    guayaba_front_pharen_backend: Guayaba from Pharen;
    guayaba_front_chatbase_backend: Guayaba from Chatbase;
    guayaba_front_agents_backend: Guayaba from Agents;
    guayaba_front_guayaba_backend: Guayaba from Guayaba;
}
