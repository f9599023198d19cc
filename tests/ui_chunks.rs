//! The whole AI SDK 7 UIMessage stream (SPEC §8), over real sockets and with the real SDK:
//! every chunk type of the `ai` package, written by its own `createUIMessageStream`
//! (`tests/js/ui-all-chunks.mjs`), passes a gateway chunk for chunk (same JSON values; only
//! `finish.messageMetadata` gains agentgate's keys); `readUIMessageStream` assembles the same
//! message on both sides; and history hands back those parts. Then what the other formats
//! make of the new chunks, `reset-step` in sync bodies, `abort` recorded, chunk types newer
//! than agentgate passed on, and the demo backends' sources.

mod harness;

use agentgate::cli::transcode::{run, Target};
use agentgate::formats::{EncodeOptions, Format};
use agentgate::fronts::Api;
use agentgate::fuzzing::{assert_well_formed, transcode_chunks};
use agentgate::sse::DEFAULT_MAX_EVENT_BYTES;
use harness::*;
use serde_json::{json, Value};

/// The chunks of a ui-message body, as JSON values, without `[DONE]`.
fn chunks(body: &str) -> Vec<Value> {
    read_sse(body)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| {
            e.json()
                .unwrap_or_else(|| panic!("not JSON: {:?}\n{body}", e.data))
        })
        .collect()
}

/// The body `tests/js/ui-all-chunks.mjs` writes with the AI SDK, or `None` (said why).
fn sdk_body() -> Option<String> {
    let dir = match node_harness() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return None;
        }
    };
    let out = std::process::Command::new("node")
        .arg(dir.join("ui-all-chunks.mjs"))
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "ui-all-chunks.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8"))
}

/// A gateway whose agent `agent_id(1)` is `upstream`, speaking chatbase (ui-message).
async fn gateway_before(upstream: &str) -> Gateway {
    spawn_gateway(&config(
        "",
        &[agent(&agent_id(1), upstream, Api::Chatbase, "")],
    ))
    .await
}

async fn history(gw: &Gateway, conversation: &str) -> Vec<Value> {
    let path = format!(
        "/agents/api/agents/{}/history?conversation_id={conversation}&limit=100",
        agent_id(1)
    );
    let r = client().get(gw.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn every_sdk_chunk_passes_unchanged_and_history_keeps_the_sdk_parts() {
    let Some(body) = sdk_body() else { return };
    let mock = MockUpstream::sse(body.clone()).spawn().await;
    let gw = gateway_before(&mock.url()).await;
    let r = send_chat(
        &client(),
        &gw,
        Api::Chatbase,
        &agent_id(1),
        "sources?",
        None,
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let out = r.text().await.unwrap();
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");

    // Chunk for chunk, the same JSON values.
    let (sent, got) = (chunks(&body), chunks(&out));
    assert_eq!(sent.len(), got.len(), "chunk count differs:\n{out}");
    for (s, g) in sent.iter().zip(&got) {
        match s["type"].as_str() {
            Some("finish") => {
                assert_eq!(g["finishReason"], s["finishReason"]);
                // The backend's keys kept, agentgate's merged in.
                assert_eq!(g["messageMetadata"]["model"], "sdk-7", "{g}");
                assert!(g["messageMetadata"]["conversationId"].is_string(), "{g}");
                assert!(g["messageMetadata"]["usage"]["credits"].is_number(), "{g}");
            }
            _ => assert_eq!(s, g),
        }
    }
    let conversation = got.last().unwrap()["messageMetadata"]["conversationId"]
        .as_str()
        .unwrap()
        .to_owned();

    // The AI SDK assembles the same message from both.
    let (Some(theirs), Some(ours)) = (check_ui_stream(&body).await, check_ui_stream(&out).await)
    else {
        return;
    };
    assert_eq!(theirs["ok"], true, "{theirs}");
    assert_eq!(ours["ok"], true, "{ours}");
    let sdk_parts = &theirs["message"]["parts"];
    assert_eq!(&ours["message"]["parts"], sdk_parts);
    assert_eq!(ours["message"]["id"], "msg_sdk_1");

    // History: the assistant message's parts are the SDK's, content its text.
    let messages = history(&gw, &conversation).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        messages[0]["parts"],
        json!([{ "type": "text", "text": "sources?" }])
    );
    let answer = &messages[1];
    assert_eq!(
        &answer["parts"], sdk_parts,
        "history parts differ from the SDK's"
    );
    assert_eq!(answer["content"], "Found \"two\" sources:\none and two.");
    // What that means, spelled out: tools, sources, file, the kept data parts, no transient
    // data part and nothing of the reset step.
    let parts = answer["parts"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().filter_map(|p| p["type"].as_str()).collect();
    for ty in [
        "tool-search",
        "dynamic-tool",
        "tool-mail",
        "tool-lookup",
        "source-url",
        "source-document",
        "file",
        "reasoning-file",
        "data-weather",
        "data-note",
        "custom",
        "steering-message",
    ] {
        assert!(types.contains(&ty), "no {ty} part in {types:?}");
    }
    assert!(!types.contains(&"data-progress"), "{types:?}");
    assert!(!answer.to_string().contains("RESET"), "{answer}");
}

#[tokio::test]
async fn an_abort_ends_every_front_properly_and_is_recorded() {
    let body = "data: {\"type\":\"start\"}\n\n\
        data: {\"type\":\"text-start\",\"id\":\"t\"}\n\n\
        data: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"Half an answer\"}\n\n\
        data: {\"type\":\"abort\",\"reason\":\"user stopped\"}\n\ndata: [DONE]\n\n";
    let mock = MockUpstream::sse(body).spawn().await;
    let gw = gateway_before(&mock.url()).await;
    let c = client();
    // text-done (agents front) ends with `done` and the AI SDK's word for it.
    let r = send_chat(&c, &gw, Api::Agents, &agent_id(1), "go", None, true).await;
    let out = r.text().await.unwrap();
    let done = chunks(&out).pop().unwrap();
    assert_eq!(done["type"], "done", "{out}");
    assert_eq!(done["finishReason"], "interrupted", "{out}");
    // The sync answer is what was said, not a failure.
    let r = send_chat(&c, &gw, Api::Agents, &agent_id(1), "again", None, false).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["response"], "Half an answer");
    // Both exchanges are in the default conversation's history.
    let messages = history(&gw, "default").await;
    let answers: Vec<&Value> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(answers.len(), 2, "{messages:?}");
    for a in answers {
        assert_eq!(a["content"], "Half an answer");
        assert_eq!(
            a["parts"],
            json!([{ "type": "text", "text": "Half an answer", "state": "done" }])
        );
    }
}

#[tokio::test]
async fn the_demo_backends_send_sources_and_data_when_asked() {
    let demo = demo_agent(Api::Chatbase).await;
    let gw = gateway_before(&format!("http://{demo}")).await;
    let r = send_chat(
        &client(),
        &gw,
        Api::Chatbase,
        &agent_id(1),
        "Any sources for that?",
        None,
        true,
    )
    .await;
    let out = r.text().await.unwrap();
    let got = chunks(&out);
    let source = got.iter().find(|c| c["type"] == "source-url");
    assert!(source.is_some_and(|s| s["url"].is_string()), "{out}");
    assert!(got.iter().any(|c| c["type"] == "data-demo"), "{out}");
    // Without the word: neither.
    let r = send_chat(
        &client(),
        &gw,
        Api::Chatbase,
        &agent_id(1),
        "Hi",
        None,
        true,
    )
    .await;
    let out = r.text().await.unwrap();
    assert!(
        !out.contains("source-url") && !out.contains("data-demo"),
        "{out}"
    );
}

/// A chunk type newer than agentgate: on to ui-message as it came, left out of the others,
/// never an error.
#[test]
fn an_unknown_chunk_type_passes_to_ui_message_and_is_left_out_elsewhere() {
    let future = r#"{"type":"hologram","frames":[{"z":1}],"providerMetadata":{"x":{"y":null}}}"#;
    let input = format!(
        "data: {{\"type\":\"start\",\"messageId\":\"m1\"}}\n\n\
         data: {{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"Hi\"}}\n\n\
         data: {future}\n\n\
         data: {{\"type\":\"finish\"}}\n\ndata: [DONE]\n\n"
    );
    for to in Format::ALL {
        let out = transcode_chunks(
            Format::UiMessage,
            to,
            EncodeOptions::default(),
            DEFAULT_MAX_EVENT_BYTES,
            [input.as_bytes()],
        );
        assert_well_formed(to, &out);
        let out = String::from_utf8(out).unwrap();
        let got = chunks(&out);
        let is_error = |c: &Value| {
            matches!(
                c["type"].as_str(),
                Some("error" | "RUN_ERROR" | "response.failed")
            ) || c
                .get("error")
                .is_some_and(|e| !e.is_null() && c["type"].is_null())
        };
        assert!(!got.iter().any(is_error), "{to}: {out}");
        assert!(!out.contains("event: error"), "{to}: {out}");
        let future: Value = serde_json::from_str(future).unwrap();
        match to {
            Format::UiMessage => assert!(got.contains(&future), "{out}"),
            // AG-UI carries it as a `CUSTOM` event named after its type.
            Format::AgUi => assert!(
                got.contains(
                    &serde_json::json!({"type": "CUSTOM", "name": "hologram", "value": future})
                ),
                "{out}"
            ),
            _ => assert!(!out.contains("hologram"), "{to}: {out}"),
        }
    }
}

/// `reset-step` takes the step's text and tool call out of every sync body and out of
/// session-delta's accumulated text (the `parts` fixture: SPEC §8).
#[test]
fn a_reset_step_is_gone_from_sync_bodies_and_session_delta_text() {
    let input = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/streams/parts.ui-message.sse"),
    )
    .unwrap();
    for api in Api::ALL {
        let mut body = Vec::new();
        let err = run(
            Format::UiMessage,
            Target::Json(api),
            EncodeOptions::default(),
            &input[..],
            &mut body,
        )
        .unwrap();
        assert!(err.is_none(), "{err:?}");
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.contains("Here is what I found. Two sources."),
            "{api}: {body}"
        );
        assert!(!body.contains("DISCARDED"), "{api}: {body}");
    }
    let out = transcode_chunks(
        Format::UiMessage,
        Format::SessionDelta,
        EncodeOptions::default(),
        DEFAULT_MAX_EVENT_BYTES,
        [&input[..]],
    );
    let out = String::from_utf8(out).unwrap();
    let texts: Vec<String> = chunks(&out)
        .iter()
        .filter(|e| e["type"] == "delta")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts.last().map(String::as_str),
        Some("Here is what I found. Two sources."),
        "{out}"
    );
    // The denial and the errors are `tool` results.
    let results: Vec<Value> = chunks(&out)
        .into_iter()
        .filter(|e| e["type"] == "tool" && e["phase"] == "result")
        .collect();
    assert!(results
        .iter()
        .any(|r| r["toolCallId"] == "call-delete" && r["denied"] == true));
    assert!(results
        .iter()
        .any(|r| r["toolCallId"] == "call-bad" && r["error"] == "id must be a number"));
    assert!(results
        .iter()
        .any(|r| r["toolCallId"] == "call-mail" && r["error"] == "SMTP is down"));
}
