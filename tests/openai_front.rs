//! The `openai` front (SPEC §10) judged by the official `openai` Node client, unchanged
//! (`tests/js/openai-front.mjs`): for an agent on every upstream API — the four seed APIs,
//! ag-ui, openai-chat and openai-responses — Chat Completions and Responses, streaming and
//! not, tool calls, a second turn on each endpoint, the models, the errors in OpenAI's body;
//! and the money: each answer's `usage.credits` is per message plus the priced tokens the
//! backend reported, and the balance moves by exactly the credits the answers report. The
//! official Python client (`tests/py/openai_front.py`, from a venv this test makes) too.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

/// Every agent costs 2 credits per message, 1 per input token and 0.5 per output token (per
/// 1k: 1000 and 500), within a cap the demo answers never reach.
const PRICING: &str = "credits_per_message = 2\nmax_usage_credits = 1000\n\
                       credits_per_1k_input_tokens = 1000\ncredits_per_1k_output_tokens = 500";

/// The front under `/openai`, beside the four seed fronts and ag-ui's.
fn openai_config(agents: &[String]) -> String {
    format!(
        "{}\n[[front]]\napi = \"openai\"\nprefix = \"/openai\"\n",
        ag_ui::config_with_ag_ui("", agents)
    )
}

/// One demo agent per upstream API, `…0001` onwards, priced by [`PRICING`].
async fn demo_agents() -> Vec<(String, Api, String)> {
    let mut agents = Vec::new();
    for (n, api) in Api::upstreams().enumerate() {
        let id = agent_id(n as u32 + 1);
        let addr = demo_agent(api).await;
        let table = agent(
            &id,
            &format!("http://{addr}"),
            api,
            &format!("name = \"Echo {api}\"\n{PRICING}"),
        );
        agents.push((id, api, table));
    }
    agents
}

/// `openai-front.mjs` in `dir` against `base_url` for `model`: its verdict.
fn official_client(dir: &Path, base_url: &str, model: &str) -> Result<Value, String> {
    let out = Command::new("node")
        .arg(dir.join("openai-front.mjs"))
        .args(["--base-url", base_url, "--key", test_key().expose()])
        .args(["--model", model])
        .output()
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout);
    let verdict: Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(e) => {
            return Err(format!(
                "no JSON ({e}): {line}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    match verdict["ok"] == true {
        true => Ok(verdict),
        false => Err(verdict["error"].as_str().unwrap_or("?").to_owned()),
    }
}

/// What every answer to the weather question says, and the tool call the demo makes first
/// (on every upstream whose stream carries tools: all but `agents`' text-done).
fn check_answer(api: Api, what: &str, answer: &Value) -> Result<(), String> {
    let text = answer["text"].as_str().unwrap_or_default();
    if !text.ends_with("Echo (turn 1): What is the weather in Paris?") {
        return Err(format!("{what}: text {text:?}"));
    }
    let calls = answer
        .get("toolCalls")
        .or_else(|| answer.get("functionCalls"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let expected = match api {
        Api::Agents => json!([]),
        _ => {
            json!([{ "id": "call-weather-1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" }])
        }
    };
    if Value::Array(calls.clone()) != expected {
        return Err(format!("{what}: tool calls {calls:?}"));
    }
    Ok(())
}

/// `usage.credits` = 2 per message + the 2 credits the demo backend reports for an answer with
/// a tool call + 1 per input token + 0.5 per output token, for a backend that reports its
/// tokens (the OpenAI upstreams; the others are priced by tokens estimated from their output,
/// and show 0 tokens).
fn check_priced(api: Api, what: &str, usage: &Value) -> Result<(), String> {
    let tokens = |a: &str, b: &str| usage[a].as_f64().or_else(|| usage[b].as_f64());
    let input = tokens("prompt_tokens", "input_tokens").unwrap_or(-1.0);
    let output = tokens("completion_tokens", "output_tokens").unwrap_or(-1.0);
    let credits = usage["credits"].as_f64().unwrap_or(-1.0);
    let reports_tokens = matches!(api, Api::OpenAiChat | Api::OpenAiResponses);
    match reports_tokens {
        true if input > 0.0 && output > 0.0 && credits == 4.0 + input + output * 0.5 => Ok(()),
        false if input == 0.0 && output == 0.0 && credits > 4.0 => Ok(()),
        _ => Err(format!("{what}: usage {usage}")),
    }
}

fn check_verdict(api: Api, id: &str, v: &Value, agents: &[String]) -> Result<(), String> {
    if v["models"] != json!(agents) {
        return Err(format!("models {}", v["models"]));
    }
    for what in [
        "chat",
        "chatStream",
        "chatHelper",
        "responses",
        "responsesStream",
    ] {
        check_answer(api, what, &v[what])?;
        check_priced(api, what, &v[what]["usage"])?;
    }
    // ag-ui's stream carries no finish reason: with tool calls, it is `tool_calls`.
    let finish = match api {
        Api::AgUi => "tool_calls",
        _ => "stop",
    };
    for what in ["chat", "chatStream", "chatHelper"] {
        if v[what]["finishReason"] != finish {
            return Err(format!("{what}: finish reason {}", v[what]["finishReason"]));
        }
    }
    if v["chat"]["model"] != json!(id)
        || !v["chat"]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("chatcmpl-"))
    {
        return Err(format!(
            "chat id/model {} {}",
            v["chat"]["id"], v["chat"]["model"]
        ));
    }
    // A new conversation per call, named in `x-conversation-id`; each continues.
    let (c1, c2) = (&v["chat"]["conversation"], &v["chatStream"]["conversation"]);
    if !c1.is_string() || c1 == c2 {
        return Err(format!("conversations {c1} {c2}"));
    }
    for second in ["chatSecond", "responsesSecond"] {
        let text = v[second]["text"].as_str().unwrap_or_default();
        if text != "Echo (turn 2): and again" {
            return Err(format!("{second}: {text:?}"));
        }
    }
    if v["responses"]["status"] != "completed" || v["responsesStream"]["status"] != "completed" {
        return Err("a response is not completed".into());
    }
    let errors = &v["errors"];
    let expect = [
        (
            "unknownModel",
            404,
            "invalid_request_error",
            "model_not_found",
            json!("model"),
        ),
        (
            "noUserMessage",
            400,
            "invalid_request_error",
            "bad_request",
            json!("messages"),
        ),
        (
            "badKey",
            401,
            "authentication_error",
            "unauthorized",
            Value::Null,
        ),
        (
            "badPrevious",
            400,
            "invalid_request_error",
            "bad_request",
            json!("previous_response_id"),
        ),
    ];
    for (name, status, ty, code, param) in expect {
        let e = &errors[name];
        let got = (&e["status"], &e["type"], &e["code"], &e["param"]);
        if got != (&json!(status), &json!(ty), &json!(code), &param) {
            return Err(format!("{name}: {e}"));
        }
    }
    Ok(())
}

/// The official client, unchanged, for an agent on every upstream API; the balance moves by
/// exactly what the answers report.
#[test]
fn the_official_client_works_unchanged_for_every_upstream() {
    let dir = match node_harness() {
        Ok(dir) => dir,
        Err(why) => return eprintln!("skip the official openai client: {why}"),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let agents = rt.block_on(demo_agents());
    let tables: Vec<String> = agents.iter().map(|(_, _, t)| t.clone()).collect();
    let ids: Vec<String> = agents.iter().map(|(id, _, _)| id.clone()).collect();
    let gw = rt.block_on(spawn_gateway(&openai_config(&tables)));
    let before = rt.block_on(balance(&gw.running, TEST_ACCOUNT));
    let base_url = gw.url("/openai/v1");
    let credits = std::sync::Mutex::new(0.0);
    check_all(
        "official openai client",
        &agents,
        |(id, api, _)| format!("{api} ({id})"),
        |_, (id, api, _)| {
            let v = official_client(&dir, &base_url, id)?;
            *credits.lock().unwrap() += v["credits"].as_f64().unwrap_or(f64::NAN);
            check_verdict(*api, id, &v, &ids)
        },
    );
    let after = rt.block_on(balance(&gw.running, TEST_ACCOUNT));
    let reported = *credits.lock().unwrap();
    assert!(reported > 0.0);
    assert!(
        ((before - after) - reported).abs() < 1e-6,
        "the balance moved by {} but the answers reported {reported}",
        before - after
    );
}

/// Asserts an error answer: `status`, OpenAI's `{"error":{"message","type","code","param"}}`.
async fn openai_error(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(got, status, "{body}");
    let e = body["error"].as_object().expect("an error object");
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{body}");
    body
}

/// The `openai` Python package the Python check pins.
const OPENAI_PY: &str = "openai==3.63.0";

/// A venv under the target directory with [`OPENAI_PY`], made on first use: its python, or
/// `None` (having said why) where python3 or PyPI is unavailable.
fn python_client() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-py");
    let python = venv.join("bin/python");
    let pinned = format!(
        "import openai; assert openai.__version__ == '{}'",
        OPENAI_PY.trim_start_matches("openai==")
    );
    let ready = || {
        Command::new(&python)
            .args(["-c", &pinned])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        eprintln!("skip the official Python client: `python3 -m venv` failed");
        return None;
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", OPENAI_PY])
        .output()
        .expect("pip runs");
    if !pip.status.success() || !ready() {
        eprintln!(
            "skip the official Python client: pip install {OPENAI_PY} failed: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
        return None;
    }
    Some(python)
}

/// The official Python client, unchanged, for an agent on every upstream API.
#[test]
fn the_official_python_client_works_unchanged_for_every_upstream() {
    let Some(python) = python_client() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let agents = rt.block_on(demo_agents());
    let tables: Vec<String> = agents.iter().map(|(_, _, t)| t.clone()).collect();
    let gw = rt.block_on(spawn_gateway(&openai_config(&tables)));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/openai_front.py");
    let out = Command::new(python)
        .arg(script)
        .args([&gw.url("/openai/v1"), test_key().expose()])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == format!("ok {}", agents.len()),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Raw HTTP where the client's own shape matters less than what agentgate does: a model by
/// name, a conversation named by the header, the scope and agent checks in OpenAI's body, and
/// the OpenAPI document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_headers_and_refusals_over_raw_http() {
    let addr = demo_agent(Api::OpenAiChat).await;
    let id = agent_id(1);
    let table = agent(
        &id,
        &format!("http://{addr}"),
        Api::OpenAiChat,
        "name = \"helper\"",
    );
    let gw = spawn_gateway(&openai_config(&[table])).await;
    let http = client();
    let post = |path: &str, body: Value| {
        http.post(gw.url(&format!("/openai/v1{path}")))
            .json(&body)
            .send()
    };
    // `model` by name; the conversation comes back in `x-conversation-id` and is continued by
    // the header (the body naming none).
    let first = post(
        "/chat/completions",
        json!({ "model": "helper", "messages": [{ "role": "user", "content": "one" }] }),
    )
    .await
    .expect("answer");
    assert_eq!(first.status(), 200);
    let conversation = first.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["model"], json!(id));
    let second = http
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-conversation-id", &conversation)
        .json(&json!({ "model": id, "messages": [{ "role": "user", "content": "two" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(second.headers()["x-conversation-id"], conversation.as_str());
    let body: Value = second.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo (turn 2): two"
    );
    // A conversation this account does not have: 404 in OpenAI's body.
    let r = post(
        "/responses",
        json!({ "model": "helper", "input": "x", "metadata": { "conversation_id": "conv_nope" } }),
    )
    .await
    .unwrap();
    let e = openai_error(r, 404).await;
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"].get("details").is_none(), "{e}");
    // A bad header value is a 400 naming it.
    let r = http
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-conversation-id", "a b")
        .json(&json!({ "model": id, "messages": [{ "role": "user", "content": "x" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        openai_error(r, 400).await["error"]["type"],
        "invalid_request_error"
    );
    // No `model`: 400 with `param`; GET on a chat path: 405; the models by name and id.
    let r = post("/responses", json!({ "input": "x" })).await.unwrap();
    assert_eq!(openai_error(r, 400).await["error"]["param"], "model");
    let get = |path: &str| http.get(gw.url(path)).send();
    assert_eq!(get("/openai/v1/responses").await.unwrap().status(), 405);
    let one: Value = get("/openai/v1/models/helper")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&one["id"], &one["owned_by"]),
        (&json!(id), &json!("agentgate"))
    );
    let r = get("/openai/v1/models/nope").await.unwrap();
    assert_eq!(
        openai_error(r, 404).await["error"]["code"],
        "model_not_found"
    );
    // The OpenAPI document of the front: three paths, OpenAI's error body.
    let doc: Value = get("/openai/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/openai/v1/models",
        "/openai/v1/chat/completions",
        "/openai/v1/responses",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
    assert_eq!(
        doc["components"]["schemas"]["Error"]["properties"]["error"]["required"],
        json!(["message", "type", "code", "param"])
    );
}
