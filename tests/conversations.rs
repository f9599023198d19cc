//! Conversations, history, inbox and sessions over real sockets (SPEC §1 "The rest of each
//! API", §7): a conversation continues across requests and fronts for every upstream API;
//! history returns exactly what was said, in order; rename, delete, archive, inbox and
//! mark-read do what they say; another account's ids are 404; `record = false` keeps no
//! transcript. The kill -9 proof is in `tests/conversations_crash.rs`.

mod harness;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

const UTF8: &str = "héllo 👋🏽 日本語 — ünïcode ✓";

fn echo(turn: u32, message: &str) -> String {
    format!("Echo (turn {turn}): {message}")
}

fn key_spec(account: &str, scopes: Scopes) -> NewKeySpec {
    NewKeySpec {
        account: account.into(),
        kind: if scopes == Scopes::ALL {
            KeyKind::Master
        } else {
            KeyKind::Agent
        },
        scopes,
        agents: None,
        expires_at: None,
        limits: KeyLimits::default(),
    }
}

/// One chat on `front`, read back whatever its form; panics unless it answered 200.
async fn chat(
    c: &reqwest::Client,
    gw: &Gateway,
    front: Api,
    agent: &str,
    message: &str,
    conversation: Option<&str>,
    stream: bool,
) -> Answer {
    let r = send_chat(c, gw, front, agent, message, conversation, stream).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{front} (stream {stream}): {body}");
    let a = if stream {
        read_stream(front_format(front), &body)
    } else {
        read_sync(front, &serde_json::from_str(&body).unwrap())
    };
    assert!(a.ended_properly && a.errors.is_empty(), "{front}: {body}");
    a
}

async fn get(c: &reqwest::Client, gw: &Gateway, path: &str) -> (u16, Value) {
    let r = c.get(gw.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn history_path(agent: &str, conversation: &str, limit: u32) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("conversation_id", conversation)
        .append_pair("limit", &limit.to_string())
        .finish();
    format!("/agents/api/agents/{agent}/history?{q}")
}

fn contents(history: &Value) -> Vec<(String, String)> {
    history["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {history}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A demo agent per upstream API (the OpenAI ones too), priced so that charges are visible.
async fn four_agents(extra: &str) -> (Gateway, Vec<String>) {
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for (n, upstream) in Api::upstreams().enumerate() {
        let backend = demo_agent(upstream).await;
        let id = agent_id(n as u32 + 1);
        agents.push(agent(
            &id,
            &format!("http://{backend}"),
            upstream,
            &format!("credits_per_message = 2\nmax_usage_credits = 5\n{extra}"),
        ));
        ids.push(id);
    }
    (spawn_gateway(&config("", &agents)).await, ids)
}

// ------------------------------------------------------------- continuation and history --

/// For each upstream API, a conversation is started on one front and continued on the next
/// request through each of the others (streamed and sync in turn); the backend sees one
/// conversation (its turn count goes up), the client always the same id, and the history
/// holds exactly what was said, in order, with multi-byte text intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_continues_across_requests_and_fronts_for_every_upstream_api() {
    let (gw, ids) = four_agents("").await;
    let c = client();
    let fronts = [Api::Guayaba, Api::Pharen, Api::Chatbase, Api::Agents];
    for (k, id) in ids.iter().enumerate() {
        // Start on a different front for each upstream; guayaba continues only `api:` ids.
        let mut order: Vec<Api> = fronts.iter().cycle().skip(k).take(4).copied().collect();
        let mut conversation: Option<String> = None;
        let mut said = Vec::new();
        let mut turn = 0;
        while let Some(front) = order.first().copied() {
            order.remove(0);
            if front == Api::Guayaba
                && conversation
                    .as_deref()
                    .is_some_and(|c| !c.starts_with("api:"))
            {
                continue;
            }
            turn += 1;
            let stream = turn % 2 == 1;
            let message = format!("{UTF8} #{turn} via {front}");
            let a = chat(
                &c,
                &gw,
                front,
                id,
                &message,
                conversation.as_deref(),
                stream,
            )
            .await;
            assert_eq!(a.text, echo(turn, &message), "{front} → upstream {k}");
            let got = a
                .conversation
                .clone()
                .expect("the answer names its conversation");
            match &conversation {
                None => {
                    // Each API's own id form.
                    match front {
                        Api::Pharen => assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}"),
                        Api::Guayaba => assert!(got.starts_with("api:"), "{got}"),
                        Api::Agents => assert_eq!(got, "default"),
                        Api::Chatbase | Api::AgUi => assert!(got.starts_with("conv_"), "{got}"),
                        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAi => {
                            unreachable!("not here")
                        }
                    }
                    conversation = Some(got);
                }
                Some(c) => assert_eq!(&got, c, "{front}: the same conversation"),
            }
            said.push(("user".to_owned(), message.clone()));
            said.push(("assistant".to_owned(), echo(turn, &message)));
        }
        assert!(turn >= 3, "at least three fronts took part");
        let conversation = conversation.unwrap();
        let (status, history) = get(&c, &gw, &history_path(id, &conversation, 100)).await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(contents(&history), said, "upstream {k}");
        let messages = history["messages"].as_array().unwrap();
        let times: Vec<&str> = messages
            .iter()
            .map(|m| m["created_at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        for m in messages.iter().filter(|m| m["role"] == "assistant") {
            assert_eq!(m["usage"]["credits"], 3.0, "2 base + 1 backend usage: {m}");
        }
        // `limit`: the newest N, oldest first, and a cursor to the older ones.
        let (_, page) = get(&c, &gw, &history_path(id, &conversation, 3)).await;
        assert_eq!(contents(&page), said[said.len() - 3..].to_vec());
        let cursor = page["next_cursor"].as_str().expect("more to read");
        let path = format!("{}&cursor={cursor}", history_path(id, &conversation, 100));
        let (_, older) = get(&c, &gw, &path).await;
        assert_eq!(contents(&older), said[..said.len() - 3].to_vec());
        assert!(older["next_cursor"].is_null());
    }
}

/// Tool calls and their results are part of the recorded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_tool_calls_and_results() {
    let (gw, ids) = four_agents("").await;
    let c = client();
    let a = chat(
        &c,
        &gw,
        Api::Guayaba,
        &ids[1],
        "What is the weather in Paris?",
        None,
        false,
    )
    .await;
    let session = a.conversation.unwrap();
    let (_, h) = get(&c, &gw, &history_path(&ids[1], &session, 20)).await;
    let answer = &h["messages"][1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"], a.text);
    let call = &answer["tool_calls"][0];
    assert_eq!(call["name"], "get_weather", "{h}");
    assert_eq!(call["input"], json!({ "city": "Paris" }));
    assert_eq!(call["output"]["forecast"], "sunny");
}

// ------------------------------------------------- conversations, inbox, sessions --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_can_be_created_listed_renamed_and_deleted() {
    let (gw, ids) = four_agents("").await;
    let c = client();
    let id = &ids[2];
    let base = format!("/agents/api/agents/{id}/conversations");
    let r = c
        .post(gw.url(&base))
        .json(&json!({ "title": "Planning ✓" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let conv = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["title"], "Planning ✓");
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());
    // A created conversation is continued like any other.
    let a = chat(&c, &gw, Api::Agents, id, "first", Some(&conv), false).await;
    assert_eq!(a.text, echo(1, "first"));
    let a = chat(&c, &gw, Api::Chatbase, id, "second", Some(&conv), true).await;
    assert_eq!(a.text, echo(2, "second"));
    // Two more conversations, opened by chatting.
    let other = chat(&c, &gw, Api::Chatbase, id, "other", None, false)
        .await
        .conversation
        .unwrap();
    chat(&c, &gw, Api::Agents, id, "default one", None, false).await;

    // Listed newest first, paginated.
    let (status, page1) = get(&c, &gw, &format!("{base}?limit=2")).await;
    assert_eq!(status, 200, "{page1}");
    let list1: Vec<&str> = page1["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(list1, vec!["default", other.as_str()]);
    let cursor = page1["next_cursor"].as_str().expect("a second page");
    let (_, page2) = get(&c, &gw, &format!("{base}?limit=2&cursor={cursor}")).await;
    assert_eq!(page2["conversations"][0]["id"], conv);
    assert_eq!(page2["conversations"][0]["title"], "Planning ✓");
    assert_eq!(page2["conversations"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    // A conversation opened by chatting is titled by its first message.
    assert_eq!(page1["conversations"][1]["title"], "other");

    // Rename.
    let r = c
        .put(gw.url(&format!("{base}/{conv}")))
        .json(&json!({ "title": "Renamed 日本" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let renamed: Value = r.json().await.unwrap();
    assert_eq!(renamed["title"], "Renamed 日本");
    let (_, page2) = get(&c, &gw, &format!("{base}?limit=2&cursor={cursor}")).await;
    assert_eq!(page2["conversations"][0]["title"], "Renamed 日本");
    // Bad bodies: 400 in the front's error shape.
    for body in [json!({}), json!({ "title": "" }), json!({ "title": 7 })] {
        let r = c
            .put(gw.url(&format!("{base}/{conv}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(r, 400).await;
    }
    let (status, _) = get(&c, &gw, &format!("{base}?limit=x")).await;
    assert_eq!(status, 400);
    let (status, _) = get(&c, &gw, &format!("{base}?cursor=nonsense")).await;
    assert_eq!(status, 400);

    // Delete removes the conversation and its messages.
    let r = c
        .delete(gw.url(&format!("{base}/{conv}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = get(&c, &gw, &history_path(id, &conv, 20)).await;
    assert_eq!(status, 404);
    let r = send_chat(&c, &gw, Api::Agents, id, "again", Some(&conv), false).await;
    assert_error(r, 404).await;
    let r = c
        .delete(gw.url(&format!("{base}/{conv}")))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    let (_, all) = get(&c, &gw, &base).await;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 2);
    let (_, inbox) = get(&c, &gw, &format!("/agents/api/agents/{id}/inbox")).await;
    assert!(
        inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["conversation_id"] != conv.as_str()),
        "the deleted conversation's messages are gone: {inbox}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_holds_unread_answers_until_marked_read() {
    let (gw, ids) = four_agents("").await;
    let c = client();
    let id = &ids[0];
    let inbox_path = format!("/agents/api/agents/{id}/inbox");
    let mark = format!("/agents/api/agents/{id}/mark-read");
    let (_, empty) = get(&c, &gw, &inbox_path).await;
    assert_eq!(empty["messages"], json!([]));
    let mut answers = Vec::new();
    for (i, front) in [Api::Pharen, Api::Chatbase, Api::Agents, Api::Guayaba]
        .into_iter()
        .enumerate()
    {
        let msg = format!("{UTF8} {i}");
        answers.push(chat(&c, &gw, front, id, &msg, None, i % 2 == 0).await.text);
    }
    let (status, inbox) = get(&c, &gw, &inbox_path).await;
    assert_eq!(status, 200);
    let unread = inbox["messages"].as_array().unwrap();
    assert_eq!(
        unread
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect::<Vec<_>>(),
        answers,
        "every answer, oldest first"
    );
    assert!(unread
        .iter()
        .all(|m| m["role"] == "assistant" && m["read"] == false));
    // Paginated.
    let (_, p1) = get(&c, &gw, &format!("{inbox_path}?limit=3")).await;
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = get(&c, &gw, &format!("{inbox_path}?limit=3&cursor={cursor}")).await;
    assert_eq!(p2["messages"][0]["content"], answers[3].as_str());
    assert!(p2["next_cursor"].is_null());

    // One read by id, then the rest.
    let first = unread[0]["id"].as_str().unwrap();
    let r = c
        .post(gw.url(&mark))
        .json(&json!({ "message_ids": [first, "msg_unknown"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "marked": 1 }));
    let (_, inbox) = get(&c, &gw, &inbox_path).await;
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 3);
    assert!(inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["id"] != first));
    let r = c.post(gw.url(&mark)).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "marked": 3 }));
    let (_, inbox) = get(&c, &gw, &inbox_path).await;
    assert_eq!(inbox["messages"], json!([]));
    // Read messages stay in the history, marked read.
    let conv = unread[0]["conversation_id"].as_str().unwrap();
    let (_, h) = get(&c, &gw, &history_path(id, conv, 20)).await;
    assert_eq!(h["messages"][1]["read"], true);
    // A new answer arrives unread.
    chat(&c, &gw, Api::Agents, id, "later", None, false).await;
    let (_, inbox) = get(&c, &gw, &inbox_path).await;
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guayaba_sessions_can_be_listed_renamed_archived_and_deleted() {
    let (gw, ids) = four_agents("").await;
    let c = client();
    let id = &ids[1];
    let base = format!("/guayaba/api/v1/agents/{id}/sessions");
    let s1 = chat(&c, &gw, Api::Guayaba, id, "first session", None, true)
        .await
        .conversation
        .unwrap();
    let s2 = chat(&c, &gw, Api::Guayaba, id, "second session", None, false)
        .await
        .conversation
        .unwrap();
    let (status, list) = get(&c, &gw, &base).await;
    assert_eq!(status, 200, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["sessionKey"], s2.as_str());
    assert_eq!(sessions[0]["title"], "second session");
    assert_eq!(sessions[0]["archived"], false);
    assert!(sessions[0]["createdAt"].is_string() && sessions[0]["updatedAt"].is_string());

    // Archive s1: gone from the default list, shown with archived=true, still continued.
    let r = c
        .patch(gw.url(&format!("{base}/{s1}")))
        .json(&json!({ "archived": true, "title": "Old ✓" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        (s["archived"].clone(), s["title"].clone()),
        (json!(true), json!("Old ✓"))
    );
    let (_, active) = get(&c, &gw, &format!("{base}?archived=false")).await;
    assert_eq!(active["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(active["sessions"][0]["sessionKey"], s2.as_str());
    let (_, archived) = get(&c, &gw, &format!("{base}?archived=true")).await;
    assert_eq!(archived["sessions"][0]["sessionKey"], s1.as_str());
    let a = chat(&c, &gw, Api::Guayaba, id, "still here", Some(&s1), false).await;
    assert_eq!(a.text, echo(2, "still here"));
    // Validation: 422 on guayaba.
    let r = c
        .patch(gw.url(&format!("{base}/{s1}")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(r, 422).await;
    let r = c
        .patch(gw.url(&format!("{base}/api:unknown")))
        .json(&json!({ "archived": false }))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;

    // Delete: the session and its messages are gone; its key then opens a new session.
    let r = c
        .delete(gw.url(&format!("{base}/{s1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = get(&c, &gw, &history_path(id, &s1, 20)).await;
    assert_eq!(status, 404);
    let (_, archived) = get(&c, &gw, &format!("{base}?archived=true")).await;
    assert_eq!(archived["sessions"], json!([]));
    let a = chat(&c, &gw, Api::Guayaba, id, "anew", Some(&s1), false).await;
    assert_eq!(
        a.text,
        echo(1, "anew"),
        "a fresh conversation on the backend too"
    );
    let (_, h) = get(&c, &gw, &history_path(id, &s1, 20)).await;
    assert_eq!(contents(&h).len(), 2);
}

// ---------------------------------------------------------- accounts, scopes, recording --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_ids_are_404_and_scopes_are_enforced() {
    let (gw, ids) = four_agents("").await;
    let c = client();
    let id = &ids[3];
    let mine = chat(&c, &gw, Api::Chatbase, id, "secret plans", None, false)
        .await
        .conversation
        .unwrap();
    let my_session = chat(&c, &gw, Api::Guayaba, id, "secret session", None, false)
        .await
        .conversation
        .unwrap();
    chat(&c, &gw, Api::Agents, id, "my default", None, false).await;

    // Ids are per agent too: mine with another agent is 404.
    let r = send_chat(
        &c,
        &gw,
        Api::Chatbase,
        &ids[0],
        "wrong agent",
        Some(&mine),
        false,
    )
    .await;
    assert_error(r, 404).await;
    let (status, _) = get(&c, &gw, &history_path(&ids[0], &mine, 20)).await;
    assert_eq!(status, 404);

    let other_key = create_key(&gw.running, key_spec("intruder", Scopes::ALL)).await;
    gw.running
        .policy
        .ledger
        .grant("intruder", 100.0, None)
        .await
        .unwrap();
    let o = client_with(&other_key);
    for front in [Api::Pharen, Api::Chatbase, Api::Agents] {
        let r = send_chat(&o, &gw, front, id, "let me in", Some(&mine), false).await;
        assert_error(r, 404).await;
    }
    let (status, _) = get(&o, &gw, &history_path(id, &mine, 20)).await;
    assert_eq!(status, 404);
    let conv_path = format!("/agents/api/agents/{id}/conversations/{mine}");
    let r = o
        .put(gw.url(&conv_path))
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    assert_error(o.delete(gw.url(&conv_path)).send().await.unwrap(), 404).await;
    let session_path = format!("/guayaba/api/v1/agents/{id}/sessions/{my_session}");
    let r = o
        .patch(gw.url(&session_path))
        .json(&json!({"archived": true}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    assert_error(o.delete(gw.url(&session_path)).send().await.unwrap(), 404).await;
    // Their own default conversation, sessions and inbox hold nothing of mine.
    let (_, h) = get(&o, &gw, &format!("/agents/api/agents/{id}/history")).await;
    assert_eq!(h["messages"], json!([]));
    let (_, s) = get(&o, &gw, &format!("/guayaba/api/v1/agents/{id}/sessions")).await;
    assert_eq!(s["sessions"], json!([]));
    let (_, inbox) = get(&o, &gw, &format!("/agents/api/agents/{id}/inbox")).await;
    assert_eq!(inbox["messages"], json!([]));
    let r = o
        .post(gw.url(&format!("/agents/api/agents/{id}/mark-read")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "marked": 0 }));
    // Reusing my sessionKey opens their own session under it (seed 004), never mine.
    let a = chat(
        &o,
        &gw,
        Api::Guayaba,
        id,
        "their turn",
        Some(&my_session),
        false,
    )
    .await;
    assert_eq!(a.text, echo(1, "their turn"));
    let (_, h) = get(&o, &gw, &history_path(id, &my_session, 20)).await;
    assert_eq!(contents(&h)[0].1, "their turn");
    // Mine are untouched.
    let (_, h) = get(&c, &gw, &history_path(id, &mine, 20)).await;
    assert_eq!(contents(&h)[0].1, "secret plans");
    let (_, h) = get(&c, &gw, &history_path(id, &my_session, 20)).await;
    assert_eq!(contents(&h).len(), 2, "{h}");
    assert_eq!(contents(&h)[0].1, "secret session");
    let (_, inbox) = get(&c, &gw, &format!("/agents/api/agents/{id}/inbox")).await;
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 3);

    // Scopes: conversations:read reads, conversations:write writes, agents:run neither.
    let reader = client_with(
        &create_key(
            &gw.running,
            key_spec(TEST_ACCOUNT, Scopes::CONVERSATIONS_READ),
        )
        .await,
    );
    let (status, h) = get(&reader, &gw, &history_path(id, &mine, 20)).await;
    assert_eq!(status, 200, "{h}");
    let r = reader
        .put(gw.url(&format!("/agents/api/agents/{id}/conversations/{mine}")))
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 403).await;
    let r = reader
        .post(gw.url(&format!("/agents/api/agents/{id}/mark-read")))
        .send()
        .await
        .unwrap();
    assert_error(r, 403).await;
    let runner =
        client_with(&create_key(&gw.running, key_spec(TEST_ACCOUNT, Scopes::AGENTS_RUN)).await);
    let r = runner
        .get(gw.url(&history_path(id, &mine, 20)))
        .send()
        .await
        .unwrap();
    assert_error(r, 403).await;
    // No key: 401; no such agent: 404 (guayaba too: "Agent not found").
    let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = anonymous
        .get(gw.url(&history_path(id, &mine, 20)))
        .send()
        .await
        .unwrap();
    assert_error(r, 401).await;
    let r = c
        .get(gw.url("/agents/api/agents/nobody/history"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    let r = c
        .get(gw.url("/guayaba/api/v1/agents/nobody/sessions"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    // A method a path does not serve: 405 with Allow.
    let r = c
        .delete(gw.url(&format!("/agents/api/agents/{id}/history")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET");
    assert_error(r, 405).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_false_continues_conversations_but_keeps_no_transcript() {
    let (gw, ids) = four_agents("record = false").await;
    let c = client();
    for (id, upstream) in ids.iter().zip(Api::upstreams()) {
        let a = chat(&c, &gw, Api::Chatbase, id, "one", None, true).await;
        let conv = a.conversation.unwrap();
        let b = chat(&c, &gw, Api::Agents, id, "two", Some(&conv), false).await;
        // A Chat Completions backend keeps no conversation: with nothing recorded there is
        // no history to send it, so every turn is its first.
        let turn = if upstream.upstream_takes_history() {
            1
        } else {
            2
        };
        assert_eq!(
            b.text,
            echo(turn, "two"),
            "the conversation still continues"
        );
        let (status, h) = get(&c, &gw, &history_path(id, &conv, 20)).await;
        assert_eq!(status, 200);
        assert_eq!(h["messages"], json!([]));
        let (_, inbox) = get(&c, &gw, &format!("/agents/api/agents/{id}/inbox")).await;
        assert_eq!(inbox["messages"], json!([]));
    }
}
