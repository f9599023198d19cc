//! Kill -9 during conversations (issue 5, SPEC §7): the real `agentgate` binary serves eight
//! conversations on four fronts and four upstream APIs at once, plus slow streams, and is
//! killed with SIGKILL right after answers are acknowledged, while other answers are in
//! flight. Restarted on the same SQLite file, every exchange acknowledged to a client is in
//! the history, in order, and the conversations continue on their backends; the streams cut
//! by the kill recorded nothing.

mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentgate::auth::{KeyKind, KeyLimits, NewKeySpec, Scopes};
use agentgate::credits::{Ledger, LedgerConfig};
use agentgate::fronts::Api;
use agentgate::store::{SqliteOptions, Store};
use harness::process::{self, ServeProcess};
use harness::*;
use serde_json::Value;

const ACCOUNT: &str = "crash";

/// The kill switch the workers pull the moment the `at`-th answer is acknowledged, so that the
/// kill follows an acknowledgement by microseconds, not by a polling interval.
struct Trigger {
    at: AtomicUsize,
    child: Arc<Mutex<Option<std::process::Child>>>,
}

/// An exchange a client saw complete: (conversation, user message, answer).
type Acked = (String, String, String);

/// One conversation, turn after turn, until the gateway dies. Each exchange is noted the
/// moment the client has the whole answer (the stream's end, the sync body).
async fn converse(
    c: reqwest::Client,
    base: String,
    front: Api,
    agent: String,
    worker: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    trigger: Arc<Trigger>,
) {
    let mut conversation: Option<String> = None;
    for turn in 1.. {
        let stream = (turn + worker) % 2 == 0;
        let message = format!("w{worker} t{turn} héllo 👋🏽 日本語");
        let mut req = c
            .post(format!("{base}{}", chat_path(front, &agent, stream)))
            .json(&chat_body(front, &message, conversation.as_deref(), stream));
        if stream {
            req = req.header("accept", "text/event-stream");
        }
        let Ok(r) = req.send().await else { return };
        if r.status() != 200 {
            return;
        }
        let Ok(body) = r.text().await else { return };
        let answer = if stream {
            read_stream(front_format(front), &body)
        } else {
            match serde_json::from_str(&body) {
                Ok(v) => read_sync(front, &v),
                Err(_) => return,
            }
        };
        if !answer.ended_properly || !answer.errors.is_empty() {
            return; // cut by the kill: not acknowledged
        }
        let id = answer.conversation.clone().expect("conversation id");
        conversation = Some(id.clone());
        let n = {
            let mut acked = acked.lock().unwrap();
            acked.push((id, message, answer.text));
            acked.len()
        };
        if n >= trigger.at.load(Ordering::SeqCst) {
            process::kill(&trigger.child);
            return;
        }
    }
}

/// Four rounds, each its own store and gateway process: the kill lands on a different answer
/// (stream or sync, front, upstream API) each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    for _ in 0..4 {
        crash_round().await;
    }
}

async fn crash_round() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("agentgate.db");
    let config = dir.path().join("agentgate.toml");
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for (n, api) in Api::upstreams().enumerate() {
        let backend = demo_agent(api).await;
        let id = agent_id(n as u32 + 1);
        agents.push(agent(&id, &format!("http://{backend}"), api, ""));
        ids.push(id);
    }
    // A slow guayaba-speaking backend, for streams the kill cuts.
    let slow = demo_agent_with_delay(Api::Guayaba, Duration::from_millis(200)).await;
    let slow_id = agent_id(9);
    agents.push(agent(&slow_id, &format!("http://{slow}"), Api::Guayaba, ""));
    let toml = config_text(&db, &agents);
    std::fs::write(&config, toml).expect("config written");
    let store = Store::open_sqlite(&db, SqliteOptions::default())
        .await
        .expect("store");
    let key = agentgate::auth::create_key(
        &store,
        NewKeySpec {
            account: ACCOUNT.into(),
            kind: KeyKind::Master,
            scopes: Scopes::ALL,
            agents: None,
            expires_at: None,
            limits: KeyLimits::default(),
        },
    )
    .await
    .expect("key")
    .0;
    Ledger::new(store.clone(), LedgerConfig::default())
        .grant(ACCOUNT, 100_000.0, None)
        .await
        .expect("grant");
    drop(store);

    let gateway = ServeProcess::start(&config, false);
    let base = format!("http://{}", gateway.addr);
    let c = client_with(&key);
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let trigger = Arc::new(Trigger {
        at: AtomicUsize::new(usize::MAX),
        child: gateway.child.clone(),
    });
    let mut workers = Vec::new();
    // Eight conversations: each front against two upstream APIs.
    for w in 0..8 {
        let front = Api::ALL[w % 4];
        let agent = ids[(w + w / 4) % 4].clone();
        workers.push(tokio::spawn(converse(
            c.clone(),
            base.clone(),
            front,
            agent,
            w,
            acked.clone(),
            trigger.clone(),
        )));
    }
    let acked_count = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while acked.lock().unwrap().len() < n {
                assert!(tokio::time::Instant::now() < deadline, "answers too slow");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    acked_count(24).await;
    // Slow streams, under way (their session event received) when the kill comes.
    let mut cut = Vec::new();
    for s in 0..3 {
        let message = format!("slow {s} {}", "word ".repeat(40));
        let mut r = c
            .post(format!("{base}{}", chat_path(Api::Guayaba, &slow_id, true)))
            .json(&chat_body(Api::Guayaba, &message, None, true))
            .send()
            .await
            .expect("slow stream head");
        let first = r.chunk().await.expect("first bytes").expect("a chunk");
        let first = String::from_utf8_lossy(&first).into_owned();
        let session = read_sse(first.split_inclusive("\n\n").next().unwrap())[0]
            .json()
            .unwrap()["sessionKey"]
            .as_str()
            .unwrap()
            .to_owned();
        cut.push((session, r));
    }
    // Killed by the worker that sees the target-th acknowledgement, others mid-flight.
    let target = acked.lock().unwrap().len() + 16;
    trigger.at.store(target, Ordering::SeqCst);
    acked_count(target).await;
    for w in workers {
        w.await.expect("worker");
    }
    for (_, r) in cut.iter_mut() {
        while let Ok(Some(_)) = r.chunk().await {}
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= target);

    // Restart on the same file.
    let gateway = ServeProcess::start(&config, false);
    let base = format!("http://{}", gateway.addr);
    // (agent, conversation, what was said and answered in it, acknowledged).
    type Said = Vec<(String, String)>;
    let mut by_conversation: Vec<(String, String, Said)> = Vec::new();
    for (w, agent) in (0..8).map(|w| (w, ids[(w + w / 4) % 4].clone())) {
        let mine: Vec<&Acked> = acked
            .iter()
            .filter(|(_, m, _)| m.starts_with(&format!("w{w} ")))
            .collect();
        let Some(conversation) = mine.first().map(|a| a.0.clone()) else {
            continue;
        };
        let pairs = mine
            .iter()
            .flat_map(|(_, m, a)| {
                [
                    ("user".to_owned(), m.clone()),
                    ("assistant".to_owned(), a.clone()),
                ]
            })
            .collect();
        by_conversation.push((agent, conversation, pairs));
    }
    assert!(by_conversation.len() >= 6, "most conversations had answers");
    for (agent, conversation, said) in &by_conversation {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("conversation_id", conversation)
            .append_pair("limit", "100")
            .finish();
        let r = c
            .get(format!("{base}/agents/api/agents/{agent}/history?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h: Value = r.json().await.unwrap();
        let got: Vec<(String, String)> = h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        // Every acknowledged exchange, in order; at most one more (answered as the kill came,
        // before its client noted it).
        assert!(
            got.len() >= said.len() && got.len() <= said.len() + 2,
            "{conversation}: {} stored, {} acknowledged",
            got.len(),
            said.len()
        );
        assert_eq!(&got[..said.len()], &said[..], "{conversation}");
    }
    // The conversations continue on their backends after the restart.
    let (agent, conversation, said) = &by_conversation[0];
    let front = Api::ALL[0];
    let r = c
        .post(format!("{base}{}", chat_path(front, agent, false)))
        .json(&chat_body(front, "after", Some(conversation), false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a = read_sync(front, &r.json().await.unwrap());
    let turns_before = said.len() / 2;
    assert!(
        a.text == format!("Echo (turn {}): after", turns_before + 1)
            || a.text == format!("Echo (turn {}): after", turns_before + 2),
        "{}",
        a.text
    );
    // The streams cut by the kill recorded nothing.
    for (session, _) in &cut {
        let r = c
            .get(format!(
                "{base}/guayaba/api/v1/agents/{slow_id}/sessions?archived=false"
            ))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert!(
            v["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["sessionKey"] != session.as_str()),
            "{v}"
        );
    }
    gateway.kill();
}

fn config_text(db: &Path, agents: &[String]) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\n[store]\nurl = \"sqlite://{}\"\n{FRONTS}\n{}",
        db.display(),
        agents.join("\n")
    )
}
