//! Team chat over real sockets (SPEC §1, §7): three members on three different upstream APIs,
//! one failing; every member asked concurrently through its own API, the failure reported in
//! its entry, a summary from the summariser agent, credits charged for exactly what ran; the
//! ui-message streaming variant; a member that times out; the request's own checks.

mod harness;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::fronts::Api;
use harness::*;
use serde_json::{json, Value};

const MESSAGE: &str = "Ideas for a café ☕ in 東京?";

fn echo(message: &str) -> String {
    format!("Echo (turn 1): {message}")
}

/// Agents 1–3: demo pharen, demo chatbase, a failing backend (agents API); 4: the summariser
/// (demo guayaba); 5: a backend that never answers. Each answer costs 2 + 1 credits.
async fn team_gateway() -> (Gateway, Mock, Mock) {
    let pharen = demo_agent(Api::Pharen).await;
    let chatbase = demo_agent(Api::Chatbase).await;
    let guayaba = demo_agent(Api::Guayaba).await;
    let failing = MockUpstream::status(500).spawn().await;
    let silent = MockUpstream::silent().spawn().await;
    let priced = "credits_per_message = 2\nmax_usage_credits = 5\n";
    let mut tables = vec![
        agent(
            &agent_id(1),
            &format!("http://{pharen}"),
            Api::Pharen,
            priced,
        ),
        agent(
            &agent_id(2),
            &format!("http://{chatbase}"),
            Api::Chatbase,
            priced,
        ),
        agent(&agent_id(3), &failing.url(), Api::Agents, priced),
        agent(
            &agent_id(4),
            &format!("http://{guayaba}"),
            Api::Guayaba,
            priced,
        ),
        agent(&agent_id(5), &silent.url(), Api::Chatbase, priced),
    ];
    tables.push(format!(
        r#"[[team]]
id = "research"
name = "Research team"
members = ["{a}", "{b}", "{c}"]
modes = ["brainstorm", "debate"]
summarizer = "{s}"

[[team]]
id = "slow"
members = ["{a}", "{z}"]
member_timeout_ms = 400
"#,
        a = agent_id(1),
        b = agent_id(2),
        c = agent_id(3),
        s = agent_id(4),
        z = agent_id(5),
    ));
    (spawn_gateway(&config("", &tables)).await, failing, silent)
}

/// Three members on three upstream APIs, one failing: two answers, one error entry, the
/// summariser's summary of both answers, and the account charged 3 + 3 + 3 (two members and
/// the summariser), nothing for the failed member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_chat_answers_with_every_member_and_a_summary_charging_what_ran() {
    let (gw, failing, _silent) = team_gateway().await;
    let c = client();
    let before = balance(&gw.running, TEST_ACCOUNT).await;
    let r = c
        .post(gw.url("/agents/api/teams/research/chat"))
        .json(&json!({ "message": MESSAGE }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mode"], "brainstorm", "the team's first mode: {v}");
    let responses = v["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    for (i, entry) in responses.iter().enumerate().take(2) {
        assert_eq!(entry["agent_id"], agent_id(i as u32 + 1));
        assert!(entry["agent_name"].is_string());
        assert_eq!(entry["content"], echo(MESSAGE), "{entry}");
        assert!(entry.get("error").is_none());
        assert_eq!(entry["usage"]["credits"], 3.0);
    }
    let failed = &responses[2];
    assert_eq!(failed["agent_id"], agent_id(3));
    assert!(failed.get("content").is_none(), "{failed}");
    assert_eq!(failed["error"]["code"], "bad_gateway");
    assert!(failed["error"]["message"].is_string());
    assert_eq!(failed["usage"]["credits"], 0.0);
    assert_eq!(failing.requests().len(), 1, "the failing member was asked");
    // The summariser (a guayaba echo) was asked with the question and both answers.
    let summary = v["summary"].as_str().expect("a summary");
    assert!(summary.starts_with("Echo (turn 1): Summarise"), "{summary}");
    assert!(summary.contains("mode: brainstorm") && summary.contains(MESSAGE));
    assert_eq!(summary.matches(&echo(MESSAGE)).count(), 2, "{summary}");
    assert_eq!(v["usage"]["credits"], 9.0);
    let after = balance(&gw.running, TEST_ACCOUNT).await;
    assert_eq!(before - after, 9.0, "charged exactly what ran");
}

/// The streaming variant: a ui-message stream with one text part per member, the summary as
/// the last part, and `finish` carrying `mode` and the entries (without content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_chat_streams_one_text_part_per_member_then_the_summary() {
    let (gw, _failing, _silent) = team_gateway().await;
    let c = client();
    let before = balance(&gw.running, TEST_ACCOUNT).await;
    for (path, body) in [
        (
            "/agents/api/teams/research/chat/stream",
            json!({ "message": MESSAGE, "mode": "debate" }),
        ),
        (
            "/agents/api/teams/research/chat",
            json!({ "message": MESSAGE, "mode": "debate", "stream": true }),
        ),
    ] {
        let r = c.post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        assert_eq!(r.headers()["x-vercel-ai-ui-message-stream"], "v1");
        let raw = r.text().await.unwrap();
        let events = read_sse(&raw);
        assert_eq!(events.last().unwrap().data, "[DONE]", "{raw}");
        assert_eq!(events[0].ty().as_deref(), Some("start"));
        let mut parts: Vec<String> = Vec::new();
        let mut text = std::collections::HashMap::<String, String>::new();
        let mut finish = None;
        for e in &events[..events.len() - 1] {
            let v = e.json().unwrap();
            match v["type"].as_str().unwrap() {
                "text-start" => parts.push(v["id"].as_str().unwrap().to_owned()),
                "text-delta" => {
                    let id = v["id"].as_str().unwrap();
                    assert!(parts.iter().any(|p| p == id), "delta before its start");
                    text.entry(id.to_owned())
                        .or_default()
                        .push_str(v["delta"].as_str().unwrap());
                }
                "finish" => finish = Some(v),
                "start" | "text-end" => {}
                other => panic!("unexpected chunk {other}: {raw}"),
            }
        }
        assert_eq!(parts.len(), 3, "two members and the summary: {parts:?}");
        assert_eq!(parts.last().unwrap(), "summary", "the summary comes last");
        for m in [agent_id(1), agent_id(2)] {
            assert_eq!(text[&m], echo(MESSAGE), "{raw}");
        }
        let summary = &text["summary"];
        assert!(summary.starts_with("Echo (turn 1): Summarise"), "{summary}");
        assert!(summary.contains("(mode: debate)"), "{summary}");
        let meta = &finish.expect("a finish chunk")["messageMetadata"];
        assert_eq!(meta["mode"], "debate");
        let entries = meta["responses"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| e.get("content").is_none()));
        assert!(entries[0].get("error").is_none() && entries[1].get("error").is_none());
        assert_eq!(entries[2]["error"]["code"], "bad_gateway");
        assert_eq!(meta["usage"]["credits"], 9.0);
        if let Some(verdict) = check_ui_stream(&raw).await {
            assert_eq!(verdict["ok"], true, "AI SDK refused the stream: {verdict}");
            assert_eq!(verdict["done"], true, "{verdict}");
        }
    }
    let after = balance(&gw.running, TEST_ACCOUNT).await;
    assert_eq!(before - after, 18.0, "9 per team chat");
}

/// A member that does not answer within the team's `member_timeout_ms` is reported as timed
/// out and charged nothing; the others answer. No summariser: `summary` is null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_times_out_is_an_error_entry() {
    let (gw, _failing, silent) = team_gateway().await;
    let c = client();
    let before = balance(&gw.running, TEST_ACCOUNT).await;
    let r = c
        .post(gw.url("/agents/api/teams/slow/chat"))
        .json(&json!({ "message": "quick?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["responses"][0]["content"], echo("quick?"));
    assert_eq!(v["responses"][1]["error"]["code"], "timeout", "{v}");
    assert!(v["summary"].is_null());
    assert_eq!(silent.requests().len(), 1);
    // The timed-out member's reservation was settled at 0 when its call was dropped, before
    // the reply was written.
    let after = balance(&gw.running, TEST_ACCOUNT).await;
    assert_eq!(before - after, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_chat_checks_scope_team_mode_and_body() {
    let (gw, failing, _silent) = team_gateway().await;
    let c = client();
    let post =
        |c: &reqwest::Client, path: &str, body: Value| c.post(gw.url(path)).json(&body).send();
    let path = "/agents/api/teams/research/chat";
    let r = post(&c, path, json!({ "message": "hi", "mode": "sing" }))
        .await
        .unwrap();
    let e = assert_error(r, 400).await;
    assert_eq!(
        e["error"]["details"]["modes"],
        json!(["brainstorm", "debate"])
    );
    assert_error(post(&c, path, json!({})).await.unwrap(), 400).await;
    assert_error(post(&c, path, json!({ "message": 5 })).await.unwrap(), 400).await;
    let r = post(
        &c,
        "/agents/api/teams/nope/chat",
        json!({ "message": "hi" }),
    )
    .await
    .unwrap();
    assert_error(r, 404).await;
    let spec = |scopes: Scopes, agents: Option<Vec<String>>| NewKeySpec {
        account: TEST_ACCOUNT.into(),
        kind: KeyKind::Agent,
        scopes,
        agents,
        expires_at: None,
        limits: KeyLimits::default(),
    };
    let no_teams = client_with(&create_key(&gw.running, spec(Scopes::AGENTS_RUN, None)).await);
    assert_error(
        post(&no_teams, path, json!({ "message": "hi" }))
            .await
            .unwrap(),
        403,
    )
    .await;
    let no_stream = client_with(&create_key(&gw.running, spec(Scopes::TEAMS_RUN, None)).await);
    let r = post(&no_stream, path, json!({ "message": "hi", "stream": true }))
        .await
        .unwrap();
    assert_error(r, 403).await;
    // A key that cannot reach every member does not see the team.
    let narrow = client_with(
        &create_key(
            &gw.running,
            spec(Scopes::TEAMS_RUN, Some(vec![agent_id(1)])),
        )
        .await,
    );
    assert_error(
        post(&narrow, path, json!({ "message": "hi" }))
            .await
            .unwrap(),
        404,
    )
    .await;
    assert!(
        failing.requests().is_empty(),
        "no refused request reached a backend"
    );
}
